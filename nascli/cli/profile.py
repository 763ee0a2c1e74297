"""`nascli profile`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nascli.cli import console, options
from nascli.config import parse_size
from nascli.rundir import RunDir

FLAGS = {"device": "--device", "threads": "--threads"}


def profile(
    run_dir: options.RunDir = Path("runs/default"),
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="A nascli checkpoint (default: best.pth of the latest training, RUN/train/<model>/), or an exported .onnx file (an int8 one is timed beside its fp32 source).")] = None,
    encoding: Annotated[Optional[str], typer.Option("--encoding", help="An Adelaide architecture (no weights needed).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="A zoo model (see `nascli models`), random weights.")] = None,
    num_classes: options.NumClasses = None,
    input_size: options.InputSize = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Images per timed call.")] = 1,
    device: options.Device = None,
    threads: options.Threads = None,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed runs first.")] = 10,
    runs: Annotated[int, typer.Option("--runs", min=1, help="At least this many timed runs...")] = 50,
    min_seconds: Annotated[float, typer.Option("--min-seconds", min=0, help="...and for at least this long.")] = 2.0,
    onnx: Annotated[bool, typer.Option("--onnx/--no-onnx", help="Also time onnxruntime.")] = True,
    int8: Annotated[bool, typer.Option("--int8", help="Time onnxruntime fp32 and int8 (QDQ) side by side, alternating.")] = False,
    recipe: options.Recipe = None,
    json_out: options.Json = False,
    quiet: options.Quiet = False,
) -> None:
    """Parameters, MACs at the input size, and latency (median, p90) in eager PyTorch and ONNX Runtime.

    Writes RUN/profile/<model>-<HxW>-<device>.json with the threads, device, CPU and library versions.
    The input size defaults to the checkpoint's training size (else the recipe's).

    Example:

    \b
      nascli profile -r runs/demo --device cpu --threads 2 --input-size 96x96
      nascli profile -r runs/demo --encoding _6003412160636100213 --num-classes 6 --json
      nascli profile -r runs/demo --model lraspp_mobilenet_v3_large --num-classes 21 --input-size 512x512
      nascli profile -r runs/demo --int8 --threads 1 --input-size 360x480
      nascli profile -r runs/demo --checkpoint runs/demo/export/MODEL/model.int8.onnx --threads 1
    """
    from nascli.steps import common
    from nascli.steps import profile as step

    console.set_quiet(quiet)
    run = RunDir(run_dir)
    cfg = common.load_recipe(run, recipe, {"device": device, "threads": threads}, FLAGS)
    size = parse_size(input_size) if input_size else None
    result = step.run(cfg, run, checkpoint=checkpoint, encoding=encoding, model=model, num_classes=num_classes,
                      input_size=size, batch=batch, warmup=warmup, runs=runs, min_seconds=min_seconds, onnx=onnx,
                      int8=int8)
    r = result.report
    if json_out:
        console.print_json(r)
    elif "onnx_file" in r:  # --checkpoint FILE.onnx
        rows = [{"runtime": f"ONNX Runtime {k}" + (f" ({r['int8_speedup']:.2f}x)" if k == "int8" and "int8_speedup" in r
                                                   else ""), **_lat(r[key])}
                for k, key in (("fp32", "onnxruntime"), ("int8", "onnxruntime_int8")) if key in r]
        console.print_table(rows, title=f"{r['onnx_file']} at {r['input_size'][0]}x{r['input_size'][1]}, batch "
                                        f"{r['batch']} ({r['cpu']}; 3 alternating rounds)")
    else:
        rows = [{"runtime": "PyTorch eager", **_lat(r["eager"])}]
        if r.get("onnxruntime"):
            rows.append({"runtime": "ONNX Runtime" + (" fp32" if r.get("onnxruntime_int8") else ""),
                         **_lat(r["onnxruntime"])})
        if r.get("onnxruntime_int8"):
            rows.append({"runtime": f"ONNX Runtime int8 ({r['int8_speedup']:.2f}x)", **_lat(r["onnxruntime_int8"])})
        title = (f"{result.path.stem}: {r['params'] / 1e6:.3f} M params, {r['macs'] / 1e9:.4f} GMACs at "
                 f"{r['input_size'][0]}x{r['input_size'][1]}, batch {r['batch']}, {r['device']} ({r['cpu']})")
        console.print_table(rows, title=title)
    console.say(f"wrote {result.path}")
    console.next_step(f"nascli export -r {result.run_dir} --onnx")


def _lat(r: dict) -> dict:
    if "skipped" in r:
        return {"median ms": "skipped", "p90 ms": r["skipped"]}
    return {"median ms": r["median_ms"], "p90 ms": r["p90_ms"], "min ms": r["min_ms"], "runs": r["runs"],
            "threads": r["threads"]}
