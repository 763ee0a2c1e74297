"""`nascli export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nascli.cli import console, options
from nascli.config import parse_size
from nascli.rundir import RunDir

FLAGS = {"threads": "--threads", "seed": "--seed", "data.data_root": "--data-root", "data.train_list": "--train-list"}


def export(
    run_dir: options.RunDir = Path("runs/default"),
    onnx: Annotated[bool, typer.Option("--onnx", help="Export to ONNX (the default, and the only format so far).")] = True,
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="A nascli checkpoint (default: best.pth of the latest training, RUN/train/<model>/).")] = None,
    input_size: options.InputSize = None,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (11..20).")] = 17,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Dynamic batch, height and width (default: fixed at --input-size).")] = False,
    tolerance: Annotated[float, typer.Option("--tolerance", help="Largest allowed |onnxruntime - PyTorch| logit difference.")] = 1e-3,
    int8: Annotated[bool, typer.Option("--int8", help="Also write model.int8.onnx: ONNX Runtime static quantization (QDQ, per-channel int8 weights).")] = False,
    calibration_images: Annotated[int, typer.Option("--calibration-images", help="--int8: training images to calibrate on (a --seed'ed sample of the run's training list, or --calibration-list; preprocessed as eval does).")] = 64,
    calibration_method: Annotated[str, typer.Option("--calibration-method", help="--int8: minmax, entropy or percentile.")] = "minmax",
    calibration_list: Annotated[Optional[Path], typer.Option("--calibration-list", help="--int8: a list file to calibrate on (default: the training list).")] = None,
    keep_fp32: Annotated[Optional[list[str]], typer.Option("--int8-keep-fp32", help="--int8: an ONNX node to leave in fp32 (repeatable).")] = None,
    data_root: options.DataRoot = None,
    train_list: options.TrainList = None,
    seed: options.Seed = None,
    recipe: options.Recipe = None,
    threads: options.Threads = None,
    json_out: options.Json = False,
    quiet: options.Quiet = False,
) -> None:
    """Export the trained model to ONNX, check it, and compare onnxruntime with PyTorch on a seeded input.

    Writes RUN/export/<model>/model.onnx (metadata inside: encoding, classes, mean/std, input size) and export.json.
    Exits 4 if the outputs differ by more than --tolerance. The input size defaults to the size every
    validation image shares (times data.eval_scale), else the training crop size.
    --int8 also writes RUN/export/<model>/model.int8.onnx, calibrated on training images (recorded in its metadata).

    Example:

    \b
      nascli export -r runs/demo --onnx
      nascli export -r runs/demo --onnx --input-size 360x480 --dynamic --opset 17
      nascli export -r runs/demo --int8 --calibration-images 64
    """
    from nascli.steps import common
    from nascli.steps import export as step

    console.set_quiet(quiet)
    size = parse_size(input_size) if input_size else None
    run = RunDir(run_dir)
    cfg = common.load_recipe(run, recipe, {"threads": threads, "seed": seed, "data.data_root": data_root, "data.train_list": train_list}, FLAGS)
    result = step.run(cfg, run, checkpoint=checkpoint, input_size=size, opset=opset, dynamic=dynamic, tolerance=tolerance,
                      int8=int8, calibration_images=calibration_images, calibration_method=calibration_method,
                      calibration_list=calibration_list, keep_fp32=tuple(keep_fp32 or ()))
    r = result.report
    if json_out:
        console.print_json({"run_dir": str(result.run_dir), "json": str(result.json_path),
                            **{k: v for k, v in r.items() if k != "metadata"}})
    else:
        console.print_table([{"onnx": r["onnx"], "opset": r["opset"], "input": "x".join(map(str, r["input_size"]))
                              + (" (dynamic)" if r["dynamic"] else ""), "max |diff|": r["max_abs_diff"],
                              "tolerance": r["tolerance"],
                              **({"argmax agree": r["argmax_agreement"]} if "argmax_agreement" in r else {}),
                              **({"detections match": r["detections_match"]} if "detections_match" in r else {}),
                              "MB": round(r["bytes"] / 2**20, 2)}], title="ONNX export (onnx.checker ok)")
        if "int8" in r:
            i = r["int8"]
            console.print_table([{"onnx": i["onnx"], "calibration": f"{i['calibration']['images']} images, "
                                  f"{i['calibration_method']}", "int8 ops": i["quantized_ops"],
                                  "fp32 ops": len(i["fp32_ops"]), "agreement (calib.)": i["agreement_calibration"],
                                  "MB": round(i["bytes"] / 2**20, 2)}], title="int8 export (QDQ, per-channel)")
    console.say(f"wrote {result.onnx_path}{' and ' + r['int8']['onnx'] if 'int8' in r else ''} and {result.json_path}")
    if "int8" in r:
        console.next_step(f"nascli eval -r {result.run_dir} --onnx --int8")
    else:
        console.next_step(f"nascli eval -r {result.run_dir} --onnx")
