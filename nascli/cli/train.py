"""`nascli train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nascli.cli import console, options
from nascli.config import parse_size
from nascli.rundir import RunDir

FLAGS = {
    "train.loss": "--loss", "train.class_weights": "--class-weights", "train.min_steps": "--min-steps",
    "train.epochs": "--epochs", "train.batch_size": "--batch-size", "train.lr": "--lr",
    "train.sep_repeats": "--sep-repeats", "data.input_size": "--input-size", "seed": "--seed", "device": "--device",
    "threads": "--threads", "data.num_classes": "--num-classes", "data.data_root": "--data-root",
    "task": "--task", "data.train_list": "--train-list", "data.val_list": "--val-list",
}


def train(
    run_dir: options.RunDir = Path("runs/default"),
    model: Annotated[Optional[str], typer.Option("--model", help="A zoo model instead of a searched one (see `nascli models`).")] = None,
    encoding: Annotated[Optional[str], typer.Option("--encoding", help="An Adelaide architecture, e.g. _6003412160636100213.")] = None,
    pick: Annotated[Optional[str], typer.Option("--pick", help="Row N (0-based) of the Pareto front that `nascli pareto` shows, or an encoding on it.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the training in RUN/train/last.pth.")] = False,
    encoder: Annotated[Optional[Path], typer.Option("--encoder", help="Encoder weights (default: RUN/pretrain/encoder.pth, else RUN/search/encoder.pth).")] = None,
    recipe: options.Recipe = None,
    data_root: options.DataRoot = None,
    task: options.Task = None,
    train_list: options.TrainList = None,
    val_list: options.ValList = None,
    num_classes: options.NumClasses = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Training epochs (recipe train.epochs, default 30).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Batch size.")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Learning rate (cosine schedule by default).")] = None,
    sep_repeats: Annotated[Optional[int], typer.Option("--sep-repeats", help="Repeat the separable units this often (a deeper final model than searched).")] = None,
    input_size: options.InputSize = None,
    loss: options.Loss = None,
    class_weights: options.ClassWeights = None,
    min_steps: options.MinSteps = None,
    seed: options.Seed = None,
    device: options.Device = None,
    threads: options.Threads = None,
    json_out: options.Json = False,
    quiet: options.Quiet = False,
) -> None:
    """Train one architecture fully: the search's best by mIoU unless --pick, --encoding or --model says otherwise.

    Writes RUN/train/last.pth (every epoch), best.pth (best validation mIoU), metrics.csv and config.yaml.
    Checkpoints rebuild their model on their own; a killed training continues with --resume.

    Example:

    \b
      nascli train -r runs/demo
      nascli train -r runs/demo --pick 1 --epochs 60 --sep-repeats 2
      nascli train -r runs/demo --model lraspp_mobilenet_v3_large
      nascli train -r runs/demo --resume
    """
    from nascli.steps import train as step

    console.set_quiet(quiet)
    values = {
        "train.loss": loss, "train.class_weights": options.class_weights(class_weights),
        "train.min_steps": min_steps,
        "train.epochs": epochs, "train.batch_size": batch_size, "train.lr": lr, "train.sep_repeats": sep_repeats,
        "data.input_size": parse_size(input_size) if input_size else None, "seed": seed, "device": device,
        "threads": threads, "data.num_classes": num_classes, "data.data_root": data_root,
        "task": task, "data.train_list": train_list, "data.val_list": val_list,
    }
    run = RunDir(run_dir)
    cfg = step.load_train_recipe(run, recipe, values, FLAGS, resume)
    with EpochProgress(enabled=not quiet) as progress:
        result = step.run(cfg, run, model=model, encoding=encoding, pick=pick, encoder=encoder, resume=resume,
                          progress=progress)
    _report(result, json_out)


def _report(result, json_out: bool) -> None:
    best = result.best
    if json_out:
        console.print_json({
            "run_dir": str(result.run_dir), "model": result.source.name, "encoding": result.source.encoding,
            "source": result.source.origin, "encoder": result.encoder_origin, "resumed_from_epoch": result.resumed_from,
            "epochs": len(result.history), "best": best, "last": result.history[-1] if result.history else None,
            "best_pth": str(result.best_path), "last_pth": str(result.last_path), "metrics_csv": str(result.metrics_csv),
        })
    else:
        shown = [c for c in result.task.epoch_columns if c not in ("val_fwiou", "degenerate", "val_pred_share")]
        cols = ["epoch", "train_loss", *shown, "best", "seconds"]
        rows = [{**r, "best": "*" if r.get("best") else ""} for r in result.history]
        console.print_table(rows, cols, title=f"{result.source.name} {result.source.encoding or ''} ({result.source.origin})")
    value = best.get(result.task.epoch_metric)
    if value is not None:
        console.say(f"wrote {result.best_path} (best val {result.task.label} {value:.4f}, epoch {best.get('epoch')}), "
                    f"{result.last_path.name} and {result.metrics_csv.name} ({result.seconds:.0f} s this session)")
    else:
        console.say(f"wrote {result.last_path} and {result.metrics_csv.name}")
    console.next_step(f"nascli eval -r {result.run_dir}")


class EpochProgress(console.LiveBar):
    """A live bar per epoch on a terminal; elsewhere the step's one log line per epoch is enough."""

    def __call__(self, event: dict) -> None:
        if event["event"] == "step":
            self.show(f"epoch {event['epoch']}/{event['epochs']}", event["step"], event["steps"],
                      f"loss {event['loss']:.4f}")
