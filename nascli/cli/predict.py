"""`nascli predict`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nascli.cli import console, options
from nascli.errors import UsageError
from nascli.rundir import RunDir

FLAGS = {"data.data_root": "--data-root", "device": "--device", "threads": "--threads"}


def predict(
    source: Annotated[Path, typer.Argument(help="An image, a folder of images, or a list file (.txt: one image per line, or `IMAGE MASK` lines).", show_default=False)],
    run_dir: options.RunDir = Path("runs/default"),
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="A nascli checkpoint (.pth) or an ONNX model (.onnx); default: the model `nascli eval` takes.")] = None,
    onnx: Annotated[bool, typer.Option("--onnx", help="Run the exported model (the one `nascli eval --onnx` takes) with onnxruntime.")] = False,
    data_root: Annotated[Optional[Path], typer.Option("--data-root", help="Folder the paths in a list-file SOURCE are relative to (default: the run's, else the list's folder).")] = None,
    recipe: options.Recipe = None,
    device: options.Device = None,
    threads: options.Threads = None,
    json_out: options.Json = False,
    quiet: options.Quiet = False,
) -> None:
    """Run a trained or exported model on images: class-id masks and colour overlays you can look at.

    Writes RUN/predict/<model>-<source>/: NAME_mask.png (a palette PNG whose values are class ids),
    NAME_overlay.png (the image blended with the class colours), both at the image's own size, plus
    legend.png and predictions.csv. Pre- and post-processing are eval's, so a mask is the argmax eval scores.

    Example:

    \b
      nascli predict -r runs/demo data/demo/JPEGImages/val_0000.png
      nascli predict -r runs/demo --onnx data/demo/JPEGImages
      nascli predict -r runs/demo --checkpoint runs/demo/train/last.pth data/demo/val.txt --json
    """
    from nascli.steps import common
    from nascli.steps import predict as step

    console.set_quiet(quiet)
    if onnx and checkpoint is not None:
        raise UsageError("options --onnx and --checkpoint both choose the model",
                         hint="--onnx means the run's exported model; for another ONNX file use --checkpoint FILE.onnx")
    values = {"data.data_root": data_root, "device": device, "threads": threads}
    run = RunDir(run_dir)
    cfg = common.load_recipe(run, recipe, values, FLAGS)
    with PredictProgress(enabled=not quiet) as progress:
        result = step.run(cfg, run, source, checkpoint=checkpoint, onnx=onnx, progress=progress)
    if json_out:
        console.print_json({
            "run_dir": str(result.run_dir), "model": str(result.model.path), "kind": result.model.kind,
            "task": result.task, "source": str(result.source), "out_dir": str(result.out_dir),
            **{kind: str(p) for kind, p in result.files.items()}, "seconds": round(result.seconds, 2),
            "images": [{"source": str(p.source), **{k: str(f) for k, f in p.files.items()},
                        "height": p.size[0], "width": p.size[1]} for p in result.predictions],
            "skipped": [{"file": str(f), "why": why} for f, why in result.skipped],
        })
    else:
        rows = [{"image": p.source.name, "size": f"{p.size[0]}x{p.size[1]}", **{k: f.name for k, f in p.files.items()},
                 **({"boxes shown": sum(p.counts)} if result.task == "detection" else {})}
                for p in result.predictions[:20]]
        more = len(result.predictions) - len(rows)
        console.print_table(rows, title=f"{result.model.path} ({result.model.kind})"
                                        + (f", first 20 of {len(result.predictions)} images" if more > 0 else ""))
    skipped = f"; {len(result.skipped)} files skipped (see the warnings)" if result.skipped else ""
    what = ("images with their boxes drawn" if result.task == "detection" else "masks and overlays")
    extra = ", ".join(p.name for p in result.files.values())
    console.say(f"wrote {len(result.predictions)} {what}, {extra} to {result.out_dir}{skipped} ({result.seconds:.1f} s)")
    pattern = "*_boxes.png" if result.task == "detection" else "*_overlay.png"
    console.next_step(f"open {result.out_dir}/{pattern}   or score the model: nascli eval -r {result.run_dir}")


class PredictProgress(console.LiveBar):
    """A live bar on a terminal (nothing otherwise: a log gets the final line only)."""

    def __call__(self, event: dict) -> None:
        if self.enabled and event["event"] == "images":
            self.show("predict", event["done"], event["total"], "")
