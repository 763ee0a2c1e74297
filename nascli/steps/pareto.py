"""`nascli pareto`: the non-dominated candidates of a search over chosen objectives, as a table and a plot.

Objectives default to the search's own (RUN/recipe.yaml); mIoU-like ones are maximised, costs minimised
(nascli.pareto.front.OBJECTIVES). Only candidates with status `ok` take part.

Files: RUN/pareto/pareto.csv (the front, sorted by the first objective, with a `pick` column: the row
number `nascli train --pick N` takes) and RUN/pareto/pareto.png (all candidates grey, the front highlighted).
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from nascli.config import Recipe
from nascli.errors import InputError, UsageError
from nascli.pareto.front import OBJECTIVES, pareto_front
from nascli.pareto.plot import plot_front
from nascli.rundir import RunDir, atomic_write, atomic_write_text
from nascli.steps.train import read_results

log = logging.getLogger(__name__)

NEEDS = {"latency": "search with --measure-latency (or --objectives miou,latency)",
         "reward": "the reward is recorded by --algo fast-nas"}


@dataclass
class ParetoResult:
    run_dir: Path
    objectives: list[str]
    table: pd.DataFrame
    front: pd.DataFrame
    csv_path: Path
    png_path: Path
    source: Path


def parse_objectives(text: str | None, default: list[str]) -> list[str]:
    """'miou,flops' -> ['miou', 'flops'] with did-you-mean for unknown names."""
    if text is None:
        return list(default)
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    for n in names:
        if n not in OBJECTIVES:
            close = difflib.get_close_matches(n, list(OBJECTIVES), n=1)
            mean = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"option --objectives: unknown objective {n!r}{mean}", hint=f"known: {', '.join(OBJECTIVES)}")
    if not names or len(set(names)) != len(names):
        raise UsageError("option --objectives: give one or more distinct objectives", hint="e.g. --objectives miou,flops")
    return names


def run(recipe: Recipe, run_dir: RunDir, *, objectives: list[str] | None = None,
        results: Path | None = None) -> ParetoResult:
    """Validate the results and objectives, then write RUN/pareto/pareto.csv and pareto.png."""
    objectives = list(objectives or recipe.search.objectives or ["miou", "macs"])
    source = Path(results) if results is not None else run_dir.require(
        run_dir.file("search", "result.csv"), "search", "--results FILE")
    if not source.is_file():
        raise UsageError(f"option --results: {source} not found", hint="give a search's result.csv")
    table = read_results(source)
    _check_columns(table, objectives, source)
    front = pareto_front(table, objectives).reset_index(drop=True)
    front.insert(0, "pick", range(len(front)))
    if len(objectives) > 2:
        log.warning("the plot shows %s vs %s only; the front (and pareto.csv) uses all %d objectives",
                    objectives[0], objectives[1], len(objectives))
    png = plot_front(table, front, objectives, input_size=only_value(table, "input_size"),
                     latency_at=latency_setting(table))
    pdir = run_dir.sub("pareto")
    csv_path, png_path = pdir / "pareto.csv", pdir / "pareto.png"
    with run_dir.step("pareto", interrupted="pareto interrupted") as done:
        atomic_write_text(csv_path, front.to_csv(index=False))
        atomic_write(png_path, lambda f: f.write(png))
        done.update(objectives=objectives, front=len(front), candidates=len(table))
    return ParetoResult(run_dir.path, objectives, table, front, csv_path, png_path, source)


def only_value(table: pd.DataFrame, column: str) -> str | None:
    """The column's value when all rows share one (an axis label may then name it), else None."""
    values = table[column].dropna().astype(str).unique() if column in table else []
    return values[0] if len(values) == 1 else None


def latency_setting(table: pd.DataFrame) -> str | None:
    """'360x480, onnxruntime' when the search measured latency at its own size or runtime (older results
    have neither column: their latency was eager PyTorch at input_size)."""
    size, runtime = only_value(table, "latency_size"), only_value(table, "latency_runtime")
    return ", ".join(v for v in (size, runtime) if v) or None


def _check_columns(table: pd.DataFrame, objectives: list[str], source: Path) -> None:
    ok = table[table["status"] == "ok"] if "status" in table.columns else table
    if ok.empty:
        raise InputError(f"{source} has no successfully evaluated candidate",
                         hint="search longer, or look at its status column")
    for name in objectives:
        column = OBJECTIVES[name][0]
        if column not in ok.columns or pd.to_numeric(ok[column], errors="coerce").isna().all():
            raise InputError(f"{source} has no {column!r} values for objective {name!r}",
                             hint=NEEDS.get(name, "choose objectives the search recorded, e.g. --objectives miou,flops"))
