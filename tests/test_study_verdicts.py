"""The search-quality study's computed verdicts (issue 7): BENCHMARKS.md's "met"/"not met" lines come from them."""

from __future__ import annotations

import importlib.util
import json
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


def test_a_stopped_training_resumes_from_its_run_alone(study, monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(study.common, "nascli", lambda *args: calls.append(args))
    run = tmp_path / "run"
    model = run / "train" / "adelaide-1004033116544233325"  # nascli.steps.trained's layout
    model.mkdir(parents=True)
    (run / "train" / "latest.json").write_text(json.dumps({"label": model.name}))
    (model / "metrics.csv").write_text("epoch,val_miou\n1,0.2\n2,0.3\n")
    study.train(run, None, 65, encoding="_1004033116544233325")
    assert calls[-1][:2] == ("train", "-r") and "--encoding" in calls[-1]
    # `train --resume` refuses --encoding/--model: a stopped run carries its own settings.
    (model / "last.pth").write_bytes(b"")
    assert study.train(run, None, 65, encoding="_1004033116544233325") == {"trained mIoU": 0.3, "epochs": 2}
    assert calls[-1] == ("train", "-r", run, "--resume", "--quiet")


def test_profiles_are_taken_round_robin_and_summarised_by_their_median(study, monkeypatch):
    order, ort = [], {"a": iter([20.0, 30.0, 22.0]), "b": iter([19.0, 18.0, 40.0])}

    def fake_nascli(*args):
        name = args[2].name
        order.append(name)
        ms = next(ort[name])
        return Namespace(stdout=json.dumps({"params": 1, "macs": 2, "eager": {"median_ms": 2 * ms},
                                            "onnxruntime": {"median_ms": ms}}))

    monkeypatch.setattr(study.common, "nascli", fake_nascli)
    out = study.profile([Path("a"), Path("b")], 2)
    assert order == ["a", "b"] * study.PROFILE_REPEATS  # drift over minutes falls on both alike
    assert [o["ort_ms"] for o in out] == [22.0, 19.0] and out[1]["eager_ms"] == 38.0


def test_latency_search_retimes_every_candidate_and_keeps_its_pick(monkeypatch, tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        import study_q3_latency as q3l
    finally:
        sys.path.remove(str(BENCH))
    from nascli.config import DEFAULT_OPS

    space = {"op_names": [*DEFAULT_OPS, "conv1x1_gate"], "agg_size": 32}
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "result.csv").write_text(
        "encoding,status,mIOU,latency_ms\n_2003410200514113330,ok,0.41,29.8\n_1004033116544233325,ok,0.39,20.9\n"
        "_1004033116544133325,ok,0.40,32.0\n_1004033116544233323,failed,,\n")
    (tmp_path / "search" / "pareto_front.csv").write_text(  # the search's front, from its noisy figures
        "encoding,mIOU,latency_ms\n_2003410200514113330,0.41,29.8\n_1004033116544233325,0.39,20.9\n")
    ratios = {"_2003410200514113330": 1.12, "_1004033116544233325": 0.8, "_1004033116544133325": 0.78}
    timed = []
    monkeypatch.setattr(q3l, "retime", lambda codes, space, threads: timed.append(codes) or
                        {"lraspp_ort_ms": 30.0, "ratio": dict(ratios)})
    out = q3l.pick(tmp_path, space, 2)
    assert timed == [["_2003410200514113330", "_1004033116544233325", "_1004033116544133325"]]  # not the failed one
    # off the search's front, but faster and better than its stride-16 member once re-timed; the best
    # candidate is 1.12x LR-ASPP: over the 1.10 margin
    assert out["pick"] == "_1004033116544133325"
    assert [r["encoding"] for r in out["front"]] == ["_2003410200514113330", "_1004033116544133325"]
    assert out["front"][1]["re-timed ORT ms"] == pytest.approx(23.4)
    assert [r["taps read"] for r in out["front"]] == ["0,1,3", "1,2,3"]
    assert (out["candidates"], out["search_front"]) == (3, 2)
    ratios["_2003410200514113330"] = 1.05  # a rerun would measure differently, but keeps the first pick
    assert q3l.pick(tmp_path, space, 2)["pick"] == "_1004033116544133325"
    (tmp_path / "q3_retimed.json").unlink()
    assert q3l.pick(tmp_path, space, 2)["pick"] == "_2003410200514113330"
