"""Fast-NAS (issue 5): the controller, PPO, early termination, auxiliary cells, and the search end to end."""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from nascli.config import DEFAULT_OPS, Recipe
from nascli.engine.progressive import Polyak, RunningMean, stop_probability
from nascli.seeding import derive_seed
from nascli.spaces.adelaide import AdelaideSpace
from nascli.strategies import rl
from nascli.strategies.rl import FastNasController
from nascli.zoo.adelaide import build_adelaide
from nascli.zoo.auxiliary import AuxiliaryDecoder

TINY = """\
space: {agg_size: 8}
data: {input_size: [32, 32]}
candidate: {batch_size: 8, cache_views: 1, min_steps: 0}
fast_nas: {batch: 2, stage2_epochs: 1}
"""
ENCODING = "_3104242330135120344"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread is fastest, and the in-process searches below run with --threads 1 anyway."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def controller(samples: int = 50, seed: int = 0, **fast_nas) -> FastNasController:
    recipe = Recipe(seed=seed)
    recipe.search.samples = samples
    for key, value in fast_nas.items():
        setattr(recipe.fast_nas, key, value)
    return FastNasController(AdelaideSpace(recipe.space.op_names), recipe)


def ask(c: FastNasController, index: int, seed: int = 0):
    return c.ask(index, random.Random(derive_seed(seed, index)))


def record(proposal, reward: float, status: str = "ok") -> dict:
    return {"encoding": proposal.encoding, "status": status, "reward": reward, **proposal.info}


# --- controller ------------------------------------------------------------------------------------
def test_every_sample_is_a_valid_encoding_covering_each_range():
    c = controller(samples=150)
    space = c.space
    digits = [space.parse(ask(c, i).encoding) for i in range(150)]
    for pos, hi in enumerate(space.ranges):
        assert {d[pos] for d in digits} == set(range(hi)), f"position {pos} does not reach its whole range"
    assert ask(c, 150) is None  # budget spent


def test_same_rng_and_state_give_the_same_samples():
    a, b = controller(), controller()
    for i in range(5):
        pa, pb = ask(a, i), ask(b, i)
        assert pa.encoding == pb.encoding and pa.info == pb.info
    assert ask(a, 0, seed=1).encoding != ask(a, 0, seed=0).encoding
    assert ask(controller(seed=1), 0).info["logp"] != ask(a, 0).info["logp"]  # the init follows the seed


def test_sampled_log_prob_matches_the_teacher_forced_one():
    c = controller()
    p = ask(c, 0)
    assert c.log_prob(p.encoding) == pytest.approx(p.info["logp"], abs=1e-4)


def test_ppo_update_raises_the_probability_of_the_rewarded_encoding():
    c = controller(batch=4, lr=1e-3)
    proposals = [ask(c, i) for i in range(4)]
    target = proposals[2].encoding
    before = c.log_prob(target)
    for p in proposals:
        c.tell(record(p, 1.0 if p.encoding == target else 0.0))
    assert c.updates == 1 and not c.buffer
    assert c.log_prob(target) > before + 0.1


def test_failed_candidates_are_rewarded_zero():
    c = controller(batch=10)
    c.tell(record(ask(c, 0), 0.5))
    c.tell(record(ask(c, 1), 0.9, status="failed"))
    assert [adv for _, _, adv in c.buffer] == [0.0, pytest.approx(-0.5)]
    assert c.baseline == pytest.approx(0.95 * 0.5)


def test_known_encodings_are_rewarded_from_memory_and_resampled():
    c = controller(batch=10)
    first = ask(c, 0)
    c.tell(record(first, 0.3))
    again = c.ask(0, random.Random(derive_seed(0, 0)))  # the same draw comes up first
    assert again.encoding != first.encoding
    assert again.info["repeats"].split() == [f"{first.encoding}:{first.info['logp']:.6f}"]
    c.tell(record(again, 0.5))
    assert [a for a, _, _ in c.buffer][1] == list(c.space.parse(first.encoding))  # the repeat, with reward 0.3
    assert len(c.buffer) == 3


def test_a_policy_that_only_repeats_falls_back_to_a_mutation(monkeypatch):
    monkeypatch.setattr(rl, "MAX_DRAWS", 1)
    c = controller(batch=10)
    first = ask(c, 0)
    c.tell(record(first, 0.3))
    p = c.ask(0, random.Random(derive_seed(0, 0)))
    assert p.phase == "rl-fallback" and p.parent == first.encoding
    assert sum(a != b for a, b in zip(p.encoding, first.encoding)) == 1


def test_state_round_trip_continues_exactly():
    a = controller(batch=3)
    for i in range(4):  # one update, one sample left in the buffer
        a.tell(record(ask(a, i), 0.1 * i))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = controller(batch=3)
    b.load_state_dict(torch.load(buf, weights_only=True))
    for i in range(4, 8):
        pa, pb = ask(a, i), ask(b, i)
        assert pa.encoding == pb.encoding and pa.info == pb.info
        a.tell(record(pa, 0.2))
        b.tell(record(pb, 0.2))
    assert a.updates == b.updates == 2
    for pa, pb in zip(a.policy.parameters(), b.policy.parameters()):
        assert torch.equal(pa, pb)


def test_replaying_a_record_without_its_ask_gives_the_same_state():
    """The crash window: record i appended, state saved after record i - 1. Resume tells record i again
    without asking for it first, so `ask` must leave no trace in the state (repeats travel in the record)."""
    a = controller(batch=3)
    first = ask(a, 0)
    a.tell(record(first, 0.3))
    saved = io.BytesIO()
    torch.save(a.state_dict(), saved)
    p = a.ask(1, random.Random(derive_seed(0, 0)))  # draws the known first encoding again: a repeat
    assert p.info["repeats"]
    a.tell(record(p, 0.6))  # buffer reaches 3: an update
    saved.seek(0)
    b = controller(batch=3)
    b.load_state_dict(torch.load(saved, weights_only=True))
    b.tell(record(p, 0.6))
    assert a.updates == b.updates == 1 and a.baseline == b.baseline
    for pa, pb in zip(a.policy.parameters(), b.policy.parameters()):
        assert torch.equal(pa, pb)
    assert ask(a, 2).encoding == ask(b, 2).encoding


# --- progressive training --------------------------------------------------------------------------
@pytest.mark.parametrize("r, m, delta, expected", [
    (0.6, 0.5, 0.9, 0.0),  # above the running average: never stops
    (0.5, 0.5, 0.9, 0.0),
    (0.25, 0.5, 0.9, 0.5 / 0.9),
    (0.05, 0.5, 0.9, 1.0),  # (1 - 0.1) / 0.9 = 1
    (0.0, 0.5, 0.9, 1.0),
    (0.4, 0.5, 0.5, 0.4),
    (0.3, None, 0.9, 0.0),  # no earlier candidate
])
def test_stop_probability_formula(r, m, delta, expected):
    assert stop_probability(r, m, delta) == pytest.approx(expected)


def test_running_mean_is_bias_corrected():
    m = RunningMean(0.99)
    assert m.value is None
    m.update(0.4)
    assert m.value == pytest.approx(0.4)
    m.update(0.2)
    assert m.value == pytest.approx((0.99 * 0.01 * 0.4 + 0.01 * 0.2) / (1 - 0.99**2))


def test_polyak_average_uses_the_decay_from_the_first_step():
    lin = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(lin.weight)
    avg = Polyak(lin, 0.9)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    for _ in range(3):
        avg.update()  # the start (0) keeps 0.9**3 of the average, no warm-up ramp
    avg.copy_to()
    assert lin.weight.item() == pytest.approx(1 - 0.9**3)


def test_auxiliary_cells_are_absent_from_the_inference_model():
    space = AdelaideSpace(DEFAULT_OPS)
    model = build_adelaide(encoding=ENCODING, num_classes=5, op_names=DEFAULT_OPS, agg_size=8).eval()
    inference_keys = set(model.state_dict())
    inference_params = sum(p.numel() for p in model.parameters())
    net = AuxiliaryDecoder(model.decoder, space.decode(ENCODING), DEFAULT_OPS, 8, 5).eval()
    assert len(net.aux) == 3
    trained = {id(p) for p in model.encoder.parameters()} | {id(p) for p in net.parameters()}
    assert sum(p.numel() for p in net.auxiliary_parameters()) > 0
    assert len(trained) > len(list(model.parameters()))
    assert set(model.state_dict()) == inference_keys  # wrapping added nothing to the model
    assert sum(p.numel() for p in model.parameters()) == inference_params
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, aux = net(model.encoder(x), x.shape[-2:])
        assert torch.equal(logits, model(x))
    assert [a.shape[1] for a in aux] == [5, 5, 5]
    assert not model.decoder.merges[0]._forward_hooks  # no hook left behind


# --- the search end to end -------------------------------------------------------------------------
def search_args(run: Path, recipe: Path, demo: Path, samples: int) -> list[str]:
    return ["search", "--algo", "fast-nas", "-r", str(run), "--recipe", str(recipe), "--data-root", str(demo),
            "--train-list", str(demo / "train.txt"), "--val-list", str(demo / "val.txt"), "--samples", str(samples),
            "--epochs", "1", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fastnas") / "tiny.yml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def searched(tmp_path_factory, demo_data, recipe_file) -> Path:
    """One uninterrupted fast-nas search of 4 candidates."""
    from nascli.cli.app import main

    run = tmp_path_factory.mktemp("fastnas") / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(search_args(run, recipe_file, demo_data, 4))
        raise SystemExit(0)
    assert exit_info.value.code in (0, None)
    return run


def results(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "search" / "result.csv", dtype={"encoding": str, "parent": str, "repeats": str})


def test_search_writes_the_adelaide_files_plus_reward_and_stage(searched):
    from nascli.engine.checkpoint import load_checkpoint, model_from_checkpoint

    sdir = searched / "search"
    for name in ("result.csv", "pareto_front.csv", "records.jsonl", "strategy.pt", "config.yaml", "encoder.pth"):
        assert (sdir / name).is_file(), name
    df = results(searched)
    assert len(df) == 4 and df["encoding"].is_unique and (df["status"] == "ok").all()
    assert set(df["phase"]) == {"rl"}
    for col in ("encoding", "mIOU", "fwIOU", "mean_acc", "flops", "parameters", "reward", "reward_stage1", "stage",
                "stop_prob", "logp"):
        assert df[col].notna().all(), col
    assert set(df["stage"]) <= {1, 2} and df["stage"].iloc[0] == 2  # the first has no running average to lose to
    assert list(pd.read_csv(sdir / "pareto_front.csv").columns) == list(df.columns)
    for _, row in df.iterrows():
        parts = [row["mIOU"], row["fwIOU"], row["mean_acc"]]
        geo = float(np.prod(parts)) ** (1 / 3)
        # each part is rounded to 6 decimals in result.csv: a small part carries a large relative error
        slack = geo * sum(5e-7 / v for v in parts) / 3
        assert row["reward"] == pytest.approx(geo, abs=1e-6 + slack)
        path = sdir / row["weights"]
        ckpt = load_checkpoint(path)
        assert not any("aux" in k for k in ckpt["state_dict"])
        assert bool(ckpt.get("encoder_file")) == (row["stage"] == 1)  # stage 2 owns its fine-tuned encoder
        model = model_from_checkpoint(ckpt, path)  # strict: an auxiliary weight would not fit
        assert sum(p.numel() for p in model.parameters()) == row["parameters"]


def test_larger_budget_resumes_as_if_never_stopped(searched, tmp_path, run_cli, demo_data, recipe_file):
    run = tmp_path / "grown"
    assert run_cli(search_args(run, recipe_file, demo_data, 2)).code == 0
    assert len(results(run)) == 2
    assert run_cli(search_args(run, recipe_file, demo_data, 4)).code == 0
    grown, reference = results(run), results(searched)
    assert len(grown) == 4 and grown["encoding"].is_unique
    for col in ("encoding", "reward", "reward_stage1", "stage", "logp"):
        assert list(grown[col]) == list(reference[col]), col


@pytest.mark.slow
def test_kill_9_then_rerun_loses_and_repeats_nothing(searched, tmp_path, demo_data, recipe_file):
    """Two fresh processes (about 30 s on a busy 2-core machine): run with `-m slow`."""
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "nascli"] + search_args(run, recipe_file, demo_data, 4)
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    records = run / "search" / "records.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if records.exists() and len(records.read_text().splitlines()) >= 1:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the search ended before it could be killed: " + (tmp_path / "first.log").read_text()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 1 <= len(records.read_text().splitlines()) < 4
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    resumed, reference = results(run), results(searched)
    assert len(resumed) == 4 and resumed["encoding"].is_unique
    for col in ("encoding", "reward", "stage", "logp"):
        assert list(resumed[col]) == list(reference[col]), col


def test_teacher_needs_fast_nas(tmp_path, run_cli, demo_data, recipe_file):
    args = search_args(tmp_path / "t", recipe_file, demo_data, 1)
    args[args.index("fast-nas")] = "adelaide-ea"
    r = run_cli(args + ["--teacher", str(tmp_path / "missing.pth")])
    assert r.code == 2 and "--teacher" in r.stderr


def test_teacher_distillation_changes_stage_2(searched, tmp_path, run_cli, demo_data, recipe_file):
    reference = results(searched)
    stage2 = reference[reference["stage"] == 2].iloc[0]
    teacher = searched / "search" / stage2["weights"]  # any nascli checkpoint of the same classes will do
    run = tmp_path / "distilled"
    r = run_cli(search_args(run, recipe_file, demo_data, 1) + ["--teacher", str(teacher)])
    assert r.code == 0, r.stderr
    first = results(run).iloc[0]
    assert first["encoding"] == reference["encoding"].iloc[0] and first["stage"] == 2
    assert first["reward_stage1"] == reference["reward_stage1"].iloc[0]  # stage 1 does not distil
    assert first["reward"] != reference["reward"].iloc[0]
