"""The Pareto plot: every candidate in grey, the front highlighted, joined as a step line and labelled.

Readable on its own: axes named with units, the title states the objectives (and their directions) and
the counts, each front point carries its row number in pareto.csv (what `train --pick N` takes) and its
encoding.
"""

from __future__ import annotations

import io
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only, never a window; safe on machines without a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from nascli.pareto.front import OBJECTIVES, non_dominated, objective_matrix  # noqa: E402

# objective -> (axis label, scale divisor)
AXES: dict[str, tuple[str, float]] = {
    "miou": ("mIoU (validation, 0..1)", 1.0),
    "map": ("mAP@[.5:.95] (validation, 0..1)", 1.0),
    "macs": ("MACs per image (G)", 1e9),
    "flops": ("MACs per image (G)", 1e9),
    "params": ("parameters (M)", 1e6),
    "latency": ("latency (ms, median)", 1.0),
    "reward": ("reward (geometric mean of mIoU, fwIoU, mean acc.)", 1.0),
}


def axis_label(name: str, input_size: str | None = None, latency_at: str | None = None) -> str:
    label = AXES[name][0]
    at = (latency_at or input_size) if name == "latency" else input_size if name in ("macs", "flops") else None
    if at:
        label += f" at {at}"
    return label + (" - higher is better" if OBJECTIVES[name][1] > 0 else " - lower is better")


def values(table: pd.DataFrame, name: str) -> np.ndarray:
    column, _ = OBJECTIVES[name]
    return pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float) / AXES[name][1]


def plot_front(table: pd.DataFrame, front: pd.DataFrame, objectives: Sequence[str], *,
               title: str | None = None, input_size: str | None = None, latency_at: str | None = None) -> bytes:
    """A PNG of `front` over all rows of `table`; y is objectives[0], x is objectives[1] (or the candidate
    index with one objective). Further objectives are not drawn (the title says so)."""
    y_name = objectives[0]
    x_name = objectives[1] if len(objectives) > 1 else None
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    try:
        ok = table[table["status"] == "ok"] if "status" in table.columns else table
        all_x = values(ok, x_name) if x_name else ok["index"].to_numpy(dtype=float)
        ax.scatter(all_x, values(ok, y_name), s=22, c="0.65", label=f"candidates ({len(ok)})", zorder=2)
        fx = values(front, x_name) if x_name else front["index"].to_numpy(dtype=float)
        fy = values(front, y_name)
        if x_name is not None and len(front) > 1:
            # the staircase joins the points non-dominated in the two plotted objectives (with more
            # objectives, other front members lie off it: they win on an objective not drawn)
            on_2d = non_dominated(objective_matrix(front, [y_name, x_name]))
            order = np.argsort(fx[on_2d], kind="stable")
            where = "post" if OBJECTIVES[x_name][1] < 0 else "pre"
            ax.step(fx[on_2d][order], fy[on_2d][order], where=where, color="tab:red", lw=1.2, zorder=3)
        ax.scatter(fx, fy, s=46, c="tab:red", edgecolors="black", linewidths=0.6,
                   label=f"Pareto front ({len(front)})", zorder=4)
        for i, (x, y) in enumerate(zip(fx, fy)):
            ax.annotate(f"#{i} {front['encoding'].iloc[i]}", (x, y), xytext=(5, 4), textcoords="offset points",
                        fontsize=7, family="monospace", zorder=5)
        ax.set_xlabel(axis_label(x_name, input_size, latency_at) if x_name else "candidate index (search order)")
        ax.set_ylabel(axis_label(y_name, input_size, latency_at))
        ax.grid(True, color="0.9", zorder=1)
        ax.margins(x=0.08, y=0.08)
        ax.legend(loc="best", fontsize=8)
        ax.set_title(title or default_title(objectives, len(front), len(ok)), fontsize=10)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)


def default_title(objectives: Sequence[str], on_front: int, candidates: int) -> str:
    dirs = ", ".join(f"{o} ({'max' if OBJECTIVES[o][1] > 0 else 'min'})" for o in objectives)
    title = f"Pareto front over {dirs}: {on_front} of {candidates} candidates"
    if len(objectives) > 2:
        title += f"\n(plotted: {objectives[0]} vs {objectives[1]}; {', '.join(objectives[2:])} not drawn)"
    return title
