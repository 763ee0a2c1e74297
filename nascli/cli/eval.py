"""`nascli eval`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nascli.cli import console, options
from nascli.errors import UsageError
from nascli.rundir import RunDir

FLAGS = {"data.data_root": "--data-root", "device": "--device", "threads": "--threads"}


def eval_cmd(
    run_dir: options.RunDir = Path("runs/default"),
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="A nascli checkpoint (.pth) or an ONNX model (.onnx); default best.pth of the latest training (RUN/train/<model>/).")] = None,
    onnx: Annotated[bool, typer.Option("--onnx", help="Evaluate the latest training exported (RUN/export/<model>/model.onnx) with onnxruntime.")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="With --onnx: the int8 model.int8.onnx that `export --int8` wrote beside it.")] = False,
    list_file: Annotated[Optional[Path], typer.Option("--list", "-l", help="List file of `IMAGE MASK` pairs (default: the run's validation list).")] = None,
    data_root: options.DataRoot = None,
    recipe: options.Recipe = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass (PyTorch).")] = 8,
    device: options.Device = None,
    threads: options.Threads = None,
    json_out: options.Json = False,
    quiet: options.Quiet = False,
) -> None:
    """Evaluate a trained model on a list file: mIoU, per-class IoU, pixel accuracy, mean class accuracy.

    Pixels labelled with the ignore value are skipped; classes absent from both labels and predictions are
    left out of the means and listed. Writes RUN/eval/<model>-<list>/metrics.json and per_class.csv (e.g. eval/train-best-val/).

    Example:

    \b
      nascli eval -r runs/demo
      nascli eval -r runs/demo --onnx
      nascli eval -r runs/demo --onnx --int8
      nascli eval -r runs/demo --checkpoint runs/demo/train/last.pth --list data/demo/val.txt --json
    """
    from nascli.steps import common
    from nascli.steps import eval as step

    console.set_quiet(quiet)
    if onnx and checkpoint is not None:
        raise UsageError("options --onnx and --checkpoint both choose the model",
                         hint="--onnx means RUN/export/<model>/model.onnx of the latest training; for another ONNX file use --checkpoint FILE.onnx")
    if int8 and not onnx:
        raise UsageError("option --int8 needs --onnx", hint="nascli eval -r RUN --onnx --int8")
    values = {"data.data_root": data_root, "device": device, "threads": threads}
    run = RunDir(run_dir)
    cfg = common.load_recipe(run, recipe, values, FLAGS)
    result = step.run(cfg, run, checkpoint=checkpoint, onnx=onnx, list_file=list_file, batch_size=batch_size,
                      int8=int8)
    m = result.metrics
    if json_out:
        console.print_json({"run_dir": str(result.run_dir), **result.doc, "out_dir": str(result.out_dir)})
    else:
        rows, summary = result.task.eval_tables(m, result.classes)
        console.print_table(rows, title=f"{result.model.path} ({result.model.kind}) on {result.list_file}")
        console.print_table(summary)
    if m.get("degenerate"):
        console.warn(f"the model is degenerate: it {m['degenerate']}. Hint: train longer (train.min_steps, a smaller "
                     "--batch-size) or with an imbalance-aware loss (--loss ce+dice, --class-weights median_frequency)")
    console.say(f"wrote {result.out_dir / 'metrics.json'} and per_class.csv ({result.seconds:.1f} s)")
    if result.model.kind == "pytorch":
        console.next_step(f"nascli profile -r {result.run_dir}   then   nascli export -r {result.run_dir} --onnx")
    else:
        console.next_step(f"compare with the PyTorch model: nascli eval -r {result.run_dir}")

