"""The model registry: one explicit table from name to keyword-only builder (no import side effects).

`create_model(name, **kw)` drops None kwargs so that a CLI default never overrides a model's own.
A checkpoint stores (name, kwargs) and rebuilds its model through here.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable

from torch import nn

from nascli.errors import UsageError
from nascli.zoo import baselines, detectors
from nascli.zoo.adelaide import build_adelaide
from nascli.zoo.proxyless import build_proxyless

MODELS: dict[str, Callable[..., nn.Module]] = {
    "adelaide": build_adelaide,
    "lraspp_mobilenet_v3_large": baselines.lraspp_mobilenet_v3_large,
    "deeplabv3_mobilenet_v3_large": baselines.deeplabv3_mobilenet_v3_large,
    "mobilenetv2_lraspp": baselines.mobilenetv2_lraspp,
    "proxyless": build_proxyless,
    # detection: forward -> raw head outputs; model.loss / model.decode (nascli.zoo.detectors)
    "mobilenetv2_fpn": detectors.mobilenetv2_fpn,
    "mobilenetv2_bifpn": detectors.mobilenetv2_bifpn,
    "efficientdet": detectors.efficientdet,
    "ssdlite320_mobilenet_v3_large": detectors.ssdlite320_mobilenet_v3_large,
}
# Detection models: `forward(images)` returns raw head outputs, not segmentation logits.
DETECTION_MODELS = {"mobilenetv2_fpn", "mobilenetv2_bifpn", "efficientdet", "ssdlite320_mobilenet_v3_large"}
# Models that need an encoding (a searched architecture) to be built.
NEEDS_ENCODING = {"adelaide", "proxyless", "efficientdet"}
# Models built on nascli's MobileNetV2 encoder: pretrained encoder weights and the feature cache apply.
OWN_ENCODER = {"adelaide", "mobilenetv2_lraspp", "mobilenetv2_fpn", "mobilenetv2_bifpn", "efficientdet"}


def model_task(name: str) -> str:
    """The task a registered model predicts for (nascli.tasks)."""
    return "detection" if name in DETECTION_MODELS else "segmentation"


def check_name(name: str) -> str:
    if name not in MODELS:
        close = difflib.get_close_matches(name, list(MODELS), n=1)
        raise UsageError(f"unknown model {name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""),
                         hint=f"known models: {', '.join(MODELS)} (see `nascli models`)")
    return name


def create_model(name: str, **kwargs: Any) -> nn.Module:
    check_name(name)
    return MODELS[name](**{k: v for k, v in kwargs.items() if v is not None})
