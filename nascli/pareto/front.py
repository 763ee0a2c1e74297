"""Objectives and the non-dominated set (no torch here: a front is a table operation)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

# objective name -> (column in result.csv, +1 to maximise / -1 to minimise)
OBJECTIVES: dict[str, tuple[str, int]] = {
    "miou": ("mIOU", +1),
    "map": ("mAP", +1),  # detection: COCO mAP@[.5:.95]
    "macs": ("flops", -1),
    "flops": ("flops", -1),  # SPEC's column name for MACs; same objective
    "params": ("parameters", -1),
    "latency": ("latency_ms", -1),
    "reward": ("reward", +1),
}


def flagged(values: pd.Series) -> pd.Series:
    """The rows a boolean result.csv column (e.g. `degenerate`) marks True, whether read back from the CSV
    (text) or held as bools; missing values are False."""
    return values.astype(str).str.lower().eq("true")


def objective_matrix(table: pd.DataFrame, objectives: Sequence[str]) -> np.ndarray:
    """Rows x objectives, signed so that larger is better for every column."""
    cols = []
    for name in objectives:
        column, sign = OBJECTIVES[name]
        cols.append(sign * pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float))
    return np.stack(cols, axis=1) if cols else np.zeros((len(table), 0))


def non_dominated(points: np.ndarray) -> np.ndarray:
    """Boolean mask of rows no other row dominates (>= in every column, > in one; larger is better).

    Rows with a NaN objective are never on the front. Equal rows do not dominate each other.
    """
    n = len(points)
    valid = ~np.isnan(points).any(axis=1) if n else np.zeros(0, bool)
    keep = valid.copy()
    for i in np.flatnonzero(valid):
        others = points[valid]
        dominated = np.all(others >= points[i], axis=1) & np.any(others > points[i], axis=1)
        keep[i] = not dominated.any()
    return keep


def pareto_front(table: pd.DataFrame, objectives: Sequence[str], status_ok: bool = True) -> pd.DataFrame:
    """The non-dominated rows of `table` (only rows with status 'ok' when the column exists)."""
    if status_ok and "status" in table.columns:
        table = table[table["status"] == "ok"]
    if table.empty:
        return table
    mask = non_dominated(objective_matrix(table, objectives))
    first_col, first_sign = OBJECTIVES[objectives[0]]
    front = table[mask]
    return front.sort_values(first_col, ascending=first_sign < 0, kind="stable")


def hypervolume_2d(points: np.ndarray, reference: Sequence[float]) -> float:
    """Area dominated by `points` (n x 2, larger is better in both columns) and bounded by `reference`.

    Points not better than the reference in both columns add nothing. Exact: sweep the front in
    decreasing first column and add one rectangle per point.
    """
    ref = np.asarray(reference, dtype=float)
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    pts = pts[~np.isnan(pts).any(axis=1) & (pts > ref).all(axis=1)]
    if not len(pts):
        return 0.0
    pts = pts[non_dominated(pts)]
    pts = pts[np.argsort(-pts[:, 0])]
    area, best_y = 0.0, ref[1]
    for x, y in pts:
        if y > best_y:
            area += (x - ref[0]) * (y - best_y)
            best_y = y
    return float(area)
