"""The one option vocabulary every subcommand shares (STYLE: same flag, same meaning, everywhere)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

RunDir = Annotated[Path, typer.Option("--run-dir", "-r", help="Run directory: where this step reads its inputs and writes its outputs.")]
Recipe = Annotated[Optional[Path], typer.Option("--recipe", help="YAML recipe; command-line options override its values.")]
DataRoot = Annotated[Optional[Path], typer.Option("--data-root", help="Folder the paths in the list files are relative to.")]
TrainList = Annotated[Optional[Path], typer.Option("--train-list", help="List file of training pairs: `IMAGE MASK` (or `IMAGE ANNOTATION.xml`) per line.")]
ValList = Annotated[Optional[Path], typer.Option("--val-list", help="List file of validation pairs: `IMAGE MASK` (or `IMAGE ANNOTATION.xml`) per line.")]
Task = Annotated[Optional[str], typer.Option("--task", help="segmentation or detection (default: what the list files hold).")]
NumClasses = Annotated[Optional[int], typer.Option("--num-classes", help="Number of classes (default: count the lines of classes.txt beside the lists).")]
Device = Annotated[Optional[str], typer.Option("--device", help="cpu, cuda or cuda:N (default: the recipe's, cpu).")]
Threads = Annotated[Optional[int], typer.Option("--threads", help="torch (and onnxruntime) intra-op threads.")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Random seed; on CPU the same seed gives the same result.")]
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout instead of a table.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or log output on stderr.")]
InputSize = Annotated[Optional[str], typer.Option("--input-size", help="HxW, e.g. 128x128 or 360x480.")]
Loss = Annotated[Optional[str], typer.Option("--loss", help="ce (cross-entropy), dice, or ce+dice (for imbalanced classes).")]
ClassWeights = Annotated[Optional[str], typer.Option("--class-weights", help="none, median_frequency (from the training masks), or one weight per class, e.g. 1,4.")]
MinSteps = Annotated[Optional[int], typer.Option("--min-steps", min=0, help="At least this many optimiser steps: epochs are raised on small data.")]


def class_weights(text: str | None, flag: str = "--class-weights") -> str | list[float] | None:
    """'none' | 'median_frequency' | '1,4' -> a recipe value (None when not given)."""
    from nascli.errors import UsageError

    if text is None:
        return None
    if text.strip().lower() in ("none", "median_frequency", "median-frequency"):
        return text.strip().lower().replace("-", "_")
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"option {flag}: {text!r} is not none, median_frequency or a list of numbers",
                         hint="e.g. --class-weights median_frequency or --class-weights 1,4") from None
