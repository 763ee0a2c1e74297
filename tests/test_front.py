"""Pareto fronts, hypervolume and the plot's axis labels (no training)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nascli.pareto.front import hypervolume_2d, non_dominated, pareto_front
from nascli.pareto.plot import axis_label
from nascli.steps.pareto import latency_setting


def test_non_dominated_handles_ties_and_nan():
    pts = np.array([[0.5, -10], [0.5, -10], [0.4, -5], [0.3, -20], [np.nan, -1], [0.6, -30]])
    assert non_dominated(pts).tolist() == [True, True, True, False, False, True]


def test_front_keeps_ok_rows_sorted_by_first_objective():
    df = pd.DataFrame({"mIOU": [0.5, 0.6, 0.4, 0.7], "flops": [10, 30, 5, 1], "status": ["ok", "ok", "ok", "failed"]})
    front = pareto_front(df, ["miou", "macs"])
    assert front["mIOU"].tolist() == [0.6, 0.5, 0.4]


def test_hypervolume_2d_by_hand():
    # maximise both; reference (0, 0): staircase of (3,1), (2,2), (1,3) covers 3 + 2 + 1 = 6
    assert hypervolume_2d(np.array([[3, 1], [2, 2], [1, 3]]), (0, 0)) == 6.0
    # a dominated point and a point outside the reference add nothing
    assert hypervolume_2d(np.array([[3, 1], [2, 2], [1, 3], [1, 1], [-1, 5]]), (0, 0)) == 6.0
    assert hypervolume_2d(np.zeros((0, 2)), (0, 0)) == 0.0
    # miou up, macs down: sign-flip the cost and its reference
    pts = np.array([[0.5, -100.0], [0.6, -200.0]])
    assert np.isclose(hypervolume_2d(pts, (0.0, -300.0)), 0.6 * 100 + 0.5 * 100)


def test_latency_axis_names_the_size_and_runtime_latency_was_measured_at():
    table = pd.DataFrame({"input_size": ["96x96"] * 2, "latency_size": ["360x480"] * 2,
                          "latency_runtime": ["onnxruntime"] * 2})
    at = latency_setting(table)
    assert at == "360x480, onnxruntime"
    assert axis_label("latency", "96x96", at).startswith("latency (ms, median) at 360x480, onnxruntime")
    assert axis_label("macs", "96x96", at).startswith("MACs per image (G) at 96x96")
    # Results from before these columns: latency was measured at input_size.
    assert latency_setting(table[["input_size"]]) is None
    assert axis_label("latency", "96x96", None).startswith("latency (ms, median) at 96x96")
