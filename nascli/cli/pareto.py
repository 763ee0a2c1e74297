"""`nascli pareto`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nascli.cli import console, options
from nascli.rundir import RunDir
from nascli.tasks import get_task


def pareto(
    run_dir: options.RunDir = Path("runs/default"),
    objectives: Annotated[Optional[str], typer.Option("--objectives", help="Comma-separated, e.g. miou,flops or miou,params,latency (default: the search's).")] = None,
    results: Annotated[Optional[Path], typer.Option("--results", help="A search's result.csv (default: RUN/search/result.csv).")] = None,
    recipe: options.Recipe = None,
    json_out: options.Json = False,
    quiet: options.Quiet = False,
) -> None:
    """The non-dominated candidates of the search over the chosen objectives, as a table, CSV and PNG plot.

    mIoU is maximised, costs (flops = MACs, params, latency) minimised. Writes RUN/pareto/pareto.csv and
    pareto.png; the `pick` column is what `nascli train --pick N` takes.

    Example:

    \b
      nascli pareto -r runs/demo
      nascli pareto -r runs/demo --objectives miou,params
    """
    from nascli.steps import common
    from nascli.steps import pareto as step

    console.set_quiet(quiet)
    run = RunDir(run_dir)
    cfg = common.load_recipe(run, recipe, {})
    names = step.parse_objectives(objectives, list(cfg.search.objectives or ["miou", "macs"]))
    result = step.run(cfg, run, objectives=names, results=results)
    front = result.front
    if json_out:
        cols = [c for c in front.columns if front[c].notna().any()]
        console.print_json({"run_dir": str(result.run_dir), "objectives": result.objectives,
                            "candidates": len(result.table), "csv": str(result.csv_path), "png": str(result.png_path),
                            "front": front[cols].astype(object).where(front[cols].notna(), None).to_dict(orient="records")})
    else:
        task = get_task(cfg.task)
        console.print_table(_rows(front, task), title=f"Pareto front over {', '.join(result.objectives)}: {len(front)} of "
                                                f"{len(result.table)} candidates ({result.source})")
        from nascli.pareto.front import flagged

        if "degenerate" in front.columns and flagged(front["degenerate"]).any():
            console.warn("members marked degenerate predict one class only or miss a frequent class: their mIoU "
                         "ranks noise (`nascli train` without --pick skips them)")
    console.say(f"wrote {result.csv_path} and {result.png_path}")
    console.next_step(f"nascli train -r {result.run_dir}  (best {get_task(cfg.task).label})   or   nascli train -r {result.run_dir} --pick 0")


def _rows(front, task) -> list[dict]:
    """Readable units for the terminal (pareto.csv keeps the raw integers)."""
    from nascli.pareto.front import flagged

    rows = []
    if "degenerate" in front.columns:
        front = front.assign(degenerate=flagged(front["degenerate"]).map({True: "yes", False: ""}))
    for r in front.to_dict(orient="records"):
        row = {"pick": r["pick"], "encoding": r["encoding"], task.label: r.get(task.column),
               "GMACs": r["flops"] / 1e9 if r.get("flops") == r.get("flops") else None,
               "M params": r["parameters"] / 1e6 if r.get("parameters") == r.get("parameters") else None}
        if r.get("latency_ms") == r.get("latency_ms") and r.get("latency_ms") is not None:
            row["latency ms"] = r["latency_ms"]
        if "degenerate" in r:
            row["degenerate"] = r["degenerate"]
        rows.append(row)
    return rows
