"""`nascli models`."""

from __future__ import annotations

from typing import Annotated

import typer

from nascli.cli import console, options
from nascli.config import parse_size

DESCRIPTIONS = {
    "adelaide": "searched decoder on MobileNetV2 (cost depends on --encoding)",
    "lraspp_mobilenet_v3_large": "torchvision LR-ASPP MobileNetV3-L",
    "deeplabv3_mobilenet_v3_large": "torchvision DeepLabV3 MobileNetV3-L",
    "mobilenetv2_lraspp": "LR-ASPP head on our MobileNetV2",
    "proxyless": "searched chain backbone + ASPP + additive decoder (cost depends on --encoding)",
    "mobilenetv2_fpn": "detection: our MobileNetV2 + FPN + RetinaNet head",
    "mobilenetv2_bifpn": "detection: our MobileNetV2 + BiFPN (D0 sizes) + RetinaNet head",
    "efficientdet": "detection: compound-scaled BiFPN detector (phi0 sizes by default)",
    "ssdlite320_mobilenet_v3_large": "detection: torchvision SSDlite320 MobileNetV3-L",
}


def models(
    num_classes: Annotated[int, typer.Option("--num-classes", min=1, help="Classes of the head the cost is counted with.")] = 21,
    input_size: options.InputSize = "256x256",
    json_out: options.Json = False,
) -> None:
    """List the model zoo with parameters and MACs at an input size (random weights; nothing is downloaded).

    Example:

    \b
      nascli models
      nascli models --num-classes 11 --input-size 360x480 --json
    """
    from nascli.profile.cost import count_macs, count_params
    from nascli.zoo.registry import MODELS, NEEDS_ENCODING, OWN_ENCODER, create_model

    size = parse_size(input_size or "256x256")
    rows = []
    for name in MODELS:
        row = {"name": name, "own encoder": name in OWN_ENCODER, "params": None, "gmacs": None,
               "description": DESCRIPTIONS.get(name, "")}
        if name not in NEEDS_ENCODING:
            net = create_model(name, num_classes=num_classes)
            row["params"], row["gmacs"] = count_params(net), round(count_macs(net, size) / 1e9, 4)
        rows.append(row)
    if json_out:
        console.print_json({"num_classes": num_classes, "input_size": list(size), "models": rows})
    else:
        console.print_table([{**r, "own encoder": "yes" if r["own encoder"] else "",
                              "params": f"{r['params'] / 1e6:.2f} M" if r["params"] else "-",
                              "gmacs": r["gmacs"] if r["gmacs"] is not None else "-"} for r in rows],
                            ["name", "params", "gmacs", "own encoder", "description"],
                            title=f"Model zoo: cost at {size[0]}x{size[1]}, {num_classes} classes")
    console.next_step("nascli train -r RUN --model NAME   or   nascli profile -r RUN --model NAME --num-classes N")
