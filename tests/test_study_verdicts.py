"""The search-quality study's computed verdicts (issue 7): BENCHMARKS.md's "met"/"not met" lines come from them."""

from __future__ import annotations

import importlib.util
import sys
from argparse import Namespace
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def study():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("study_quality", BENCH / "study_quality.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))


def row(model: str, miou: float, ort_ms: float) -> dict:
    return {"model": model, "trained mIoU": miou, "epochs": 5, "ORT ms": ort_ms}


REF = row("lraspp_mobilenet_v3_large", 0.50, 20.0)
MBV2 = row("mobilenetv2_lraspp", 0.49, 17.0)


def test_q3_goal_needs_higher_miou_at_equal_or_lower_latency(study):
    faster_worse = row("searched _a", 0.45, 15.0)
    slower_better = row("searched _b", 0.60, 25.0)
    assert "**not met**" in study.q3_verdict([REF, MBV2, faster_worse, slower_better])
    assert "**met**" in study.q3_verdict([REF, MBV2, faster_worse, slower_better, row("searched _c", 0.51, 20.0)])


def test_q3_scratch_retrains_the_best_searched_model_within_the_latency_from_random_weights(study, monkeypatch):
    calls = []

    def fake_train(run, encoder, epochs, *, encoding=None, model=None):
        calls.append((run.name, encoder, epochs, encoding, model))
        return {"trained mIoU": 0.3, "epochs": epochs}

    monkeypatch.setattr(study, "train", fake_train)
    rows = [REF, MBV2, row("searched _slow", 0.60, 25.0), row("searched _fast", 0.41, 18.0),
            row("searched _fastest", 0.40, 16.0)]
    args = Namespace(out=Path("/nonexistent"), scratch_models=1, pretrain_epochs=60, train_epochs=5)
    out = study.q3_scratch(args, rows)
    assert calls == [("mobilenetv2_lraspp", None, 65, None, "mobilenetv2_lraspp"),
                     ("_fast", None, 65, "_fast", None)]
    assert [r["model"] for r in out] == ["lraspp_mobilenet_v3_large", "mobilenetv2_lraspp", "searched _fast"]
    assert out[0]["trained mIoU"] == 0.50 and out[2]["trained mIoU"] == 0.3 and out[2]["ORT ms"] == 18.0


def test_q1_verdict_counts_seeds_won_and_gain_after_the_random_phase(study):
    rows = [{"seed": s, "algo": a, "HV after 10": 0.20, "HV after 20": hv}
            for s, a, hv in [(0, "adelaide-ea", 0.23), (0, "random", 0.21), (1, "adelaide-ea", 0.20),
                             (1, "random", 0.24)]]
    line = study.q1_verdict(rows)
    assert "1 of 2 seeds" in line and "added 0.0150" in line and "random search's 0.0250" in line
