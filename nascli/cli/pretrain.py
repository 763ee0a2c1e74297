"""`nascli pretrain-backbone`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nascli.cli import console, options
from nascli.config import parse_size
from nascli.rundir import RunDir

FLAGS = {
    "pretrain.epochs": "--epochs", "pretrain.batch_size": "--batch-size", "pretrain.lr": "--lr",
    "data.input_size": "--input-size", "seed": "--seed", "device": "--device", "threads": "--threads",
    "data.num_classes": "--num-classes", "data.data_root": "--data-root", "task": "--task", "data.train_list": "--train-list",
    "data.val_list": "--val-list",
}


def pretrain_backbone(
    run_dir: options.RunDir = Path("runs/default"),
    weights: Annotated[Optional[Path], typer.Option("--weights", help="Import a torchvision MobileNetV2 state dict (.pth); its sha256 is recorded.")] = None,
    imagefolder: Annotated[Optional[Path], typer.Option("--imagefolder", help="Pretrain as a classifier on an ImageFolder (one sub-folder of images per class).")] = None,
    recipe: options.Recipe = None,
    data_root: options.DataRoot = None,
    task: options.Task = None,
    train_list: options.TrainList = None,
    val_list: options.ValList = None,
    num_classes: options.NumClasses = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Pretraining epochs (recipe pretrain.epochs).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Batch size.")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Learning rate.")] = None,
    input_size: options.InputSize = None,
    seed: options.Seed = None,
    device: options.Device = None,
    threads: options.Threads = None,
    json_out: options.Json = False,
    quiet: options.Quiet = False,
) -> None:
    """Pretrain the MobileNetV2 encoder: densely on the segmentation data (default), on an ImageFolder, or import weights.

    Writes RUN/pretrain/encoder.pth (+ metrics.csv); `search` and `train` on the same run start from it.
    The data options given here are kept in RUN/recipe.yaml, so later steps need only -r RUN.

    Example:

    \b
      nascli pretrain-backbone -r runs/demo --data-root data/demo \\
          --train-list data/demo/train.txt --val-list data/demo/val.txt --epochs 10
      nascli pretrain-backbone -r runs/demo --weights mobilenet_v2-b0353104.pth
      nascli pretrain-backbone -r runs/demo --imagefolder data/tiny-imagenet/train
    """
    from nascli.cli.train import EpochProgress
    from nascli.steps import common
    from nascli.steps import pretrain as step

    console.set_quiet(quiet)
    values = {
        "pretrain.epochs": epochs, "pretrain.batch_size": batch_size, "pretrain.lr": lr,
        "data.input_size": parse_size(input_size) if input_size else None, "seed": seed, "device": device,
        "threads": threads, "data.num_classes": num_classes, "data.data_root": data_root,
        "task": task, "data.train_list": train_list, "data.val_list": val_list,
    }
    run = RunDir(run_dir)
    cfg = common.load_recipe(run, recipe, values, FLAGS)
    with EpochProgress(enabled=not quiet) as progress:
        result = step.run(cfg, run, weights=weights, imagefolder=imagefolder, progress=progress)
    if json_out:
        console.print_json({"run_dir": str(result.run_dir), "mode": result.mode, "encoder": str(result.encoder_path),
                            "meta": result.meta, "history": result.history,
                            "metrics_csv": str(result.metrics_csv) if result.metrics_csv else None})
    else:
        fields = {"mode": result.mode, "source": result.meta["source"], "sha256": result.meta.get("sha256"),
                  "encoder file": str(result.encoder_path)}
        console.print_table([{"": k, "value": v} for k, v in fields.items() if v], title="Encoder weights")
    console.say(f"wrote {result.encoder_path}" + (f" and {result.metrics_csv}" if result.metrics_csv else "")
                + f" ({result.seconds:.0f} s)")
    console.next_step(f"nascli search -r {result.run_dir}")
