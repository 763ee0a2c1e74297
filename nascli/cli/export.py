"""`nascli export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nascli.cli import console, options
from nascli.config import parse_size
from nascli.rundir import RunDir

FLAGS = {"threads": "--threads"}


def export(
    run_dir: options.RunDir = Path("runs/default"),
    onnx: Annotated[bool, typer.Option("--onnx", help="Export to ONNX (the default, and the only format so far).")] = True,
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="A nascli checkpoint (default: best.pth of the latest training, RUN/train/<model>/).")] = None,
    input_size: options.InputSize = None,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (11..20).")] = 17,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Dynamic batch, height and width (default: fixed at --input-size).")] = False,
    tolerance: Annotated[float, typer.Option("--tolerance", help="Largest allowed |onnxruntime - PyTorch| logit difference.")] = 1e-3,
    recipe: options.Recipe = None,
    threads: options.Threads = None,
    json_out: options.Json = False,
    quiet: options.Quiet = False,
) -> None:
    """Export the trained model to ONNX, check it, and compare onnxruntime with PyTorch on a seeded input.

    Writes RUN/export/<model>/model.onnx (metadata inside: encoding, classes, mean/std, input size) and export.json.
    Exits 4 if the outputs differ by more than --tolerance. The input size defaults to the training crop size.

    Example:

    \b
      nascli export -r runs/demo --onnx
      nascli export -r runs/demo --onnx --input-size 360x480 --dynamic --opset 17
    """
    from nascli.steps import common
    from nascli.steps import export as step

    console.set_quiet(quiet)
    size = parse_size(input_size) if input_size else None
    run = RunDir(run_dir)
    cfg = common.load_recipe(run, recipe, {"threads": threads}, FLAGS)
    result = step.run(cfg, run, checkpoint=checkpoint, input_size=size, opset=opset, dynamic=dynamic, tolerance=tolerance)
    r = result.report
    if json_out:
        console.print_json({"run_dir": str(result.run_dir), "json": str(result.json_path),
                            **{k: v for k, v in r.items() if k != "metadata"}})
    else:
        console.print_table([{"onnx": r["onnx"], "opset": r["opset"], "input": "x".join(map(str, r["input_size"]))
                              + (" (dynamic)" if r["dynamic"] else ""), "max |diff|": r["max_abs_diff"],
                              "tolerance": r["tolerance"], "argmax agree": r["argmax_agreement"],
                              "MB": round(r["bytes"] / 2**20, 2)}], title="ONNX export (onnx.checker ok)")
    console.say(f"wrote {result.onnx_path} and {result.json_path}")
    console.next_step(f"nascli eval -r {result.run_dir} --onnx")
