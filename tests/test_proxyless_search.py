"""`nascli search --algo proxyless` (SPEC 3.3): the latency model, the hard constraint, the gradient
estimators, derivation under the budget, and a tiny search end to end with SIGKILLs and resume."""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from nascli.engine.supernet import (
    LatencyModel,
    budget_slack,
    calibration_codes,
    constrained_sample,
    latency_penalty,
    most_probable_under_budget,
    sample_path,
)
from nascli.errors import ConfigError, RunDirError
from nascli.faults import ENV as KILL_AT
from nascli.profile.lut import LatencyTable, entry_key, fingerprint, fixed_in_context, layout_id
from nascli.spaces.proxyless import ProxylessConfig, ProxylessSpace
from nascli.zoo.proxyless import build_supernet, lut_layout, supernet_kwargs

TINY_PROXYLESS = """\
data:
  input_size: [32, 32]
candidate:
  batch_size: 8
threads: 1
search:
  algo: proxyless
  objectives: [miou, latency]
  latency_threads: 1
proxyless:
  stem_channels: 8
  widths: [8, 16, 24, 32]
  depths: [2, 2, 3, 2]
  aspp_channels: 8
  decoder_channels: 8
  expansion: 2
  warmup_epochs: 1
  search_epochs: 2
  front_samples: 3
  checkpoint_steps: 2
  lut_runs: 3
"""
slow = pytest.mark.slow
CFG = ProxylessConfig(stem_channels=8, widths=[8, 16, 24, 32], depths=[2, 2, 3, 2], aspp_channels=8,
                      decoder_channels=8, expansion=2)


def toy_latency(seed: int = 0, layers: int = 6, choices: int = 4) -> LatencyModel:
    rng = random.Random(seed)
    return LatencyModel([[rng.uniform(0.5, 3.0) for _ in range(choices)] for _ in range(layers)], fixed=2.0)


def test_expected_latency_has_a_real_gradient_into_alpha():
    lat = toy_latency()
    alphas = [torch.randn(4, requires_grad=True) for _ in range(6)]
    e = lat.expected(alphas)
    e.backward()
    for a, row in zip(alphas, lat.per_layer):
        assert a.grad is not None and a.grad.abs().sum() > 0
        # d E / d alpha_i = p_i (lat_i - E_layer[lat]): checked against the closed form
        p = torch.softmax(a.detach(), 0)
        lat_t = torch.tensor(row)
        assert torch.allclose(a.grad, p * (lat_t - (p * lat_t).sum()), atol=1e-6)
    with torch.no_grad():  # and the value is the expectation: fixed + sum p * lat
        want = 2.0 + sum(float((torch.softmax(a, 0) * torch.tensor(r)).sum()) for a, r in zip(alphas, lat.per_layer))
    assert abs(float(e.detach()) - want) < 1e-4


def test_hard_constraint_never_returns_an_over_budget_path():
    lat = toy_latency()
    probs = [[0.25] * 4] * 6
    rng = random.Random(0)
    budget = sorted(lat.predict(sample_path(probs, random.Random(i))) for i in range(200))[40]  # ~20% feasible
    paths = [constrained_sample(lambda: sample_path(probs, rng), lat, budget, tries=200) for _ in range(300)]
    assert all(lat.predict(p) <= budget for p in paths)
    assert len({tuple(p) for p in paths}) > 50  # and it still samples, not one safe path


def test_infeasible_budget_fails_fast_naming_the_smallest_latency_seen():
    lat = toy_latency()
    rng = random.Random(0)
    draws = []

    def draw():
        draws.append(sample_path([[0.25] * 4] * 6, rng))
        return draws[-1]

    with pytest.raises(ConfigError, match=r"in 25 samples \(smallest latency seen ([\d.]+) ms\)") as e:
        constrained_sample(draw, lat, budget=lat.fastest() - 0.1, tries=25)
    assert len(draws) == 25
    seen = float(e.value.args[0].split("smallest latency seen ")[1].split(" ms")[0])
    assert seen == pytest.approx(min(lat.predict(p) for p in draws), rel=1e-3)  # printed to 4 digits


def test_hinge_latency_penalty_moves_alpha_only_over_the_budget():
    lat = toy_latency()
    for budget, pulls in ((lat.slowest() + 1, False), (lat.fastest() + 0.1, True)):
        alphas = [torch.zeros(4, requires_grad=True) for _ in range(6)]
        latency_penalty(lat.expected(alphas), budget, "hinge").backward()
        assert any(a.grad.abs().sum() > 0 for a in alphas) == pulls, budget
    alphas = [torch.zeros(4, requires_grad=True) for _ in range(6)]  # linear pulls even under the budget
    latency_penalty(lat.expected(alphas), lat.slowest() + 1, "linear").backward()
    assert all(a.grad.abs().sum() > 0 for a in alphas)


def test_a_budget_every_subnet_meets_is_flagged_and_a_binding_one_is_not():
    lat = toy_latency()
    slowest = lat.fixed + sum(max(r) for r in lat.per_layer)
    assert lat.slowest() == pytest.approx(slowest)
    assert budget_slack(None, lat) is None
    assert budget_slack(slowest - 0.01, lat) is None  # one subnet is over it: the budget binds
    note = budget_slack(slowest * 3, lat)
    assert note is not None and f"slowest subnet of this space takes {slowest:.4g} ms" in note


def test_most_probable_under_budget_is_the_exact_constrained_optimum():
    for seed in range(5):
        lat = toy_latency(seed, layers=4, choices=3)
        rng = random.Random(seed)
        probs = []
        for _ in range(4):
            w = [rng.random() for _ in range(3)]
            probs.append([x / sum(w) for x in w])
        budget = lat.fastest() + 0.4 * (lat.fixed + sum(max(r) for r in lat.per_layer) - lat.fastest())
        best = max((p for p in itertools.product(range(3), repeat=4) if lat.predict(p) <= budget),
                   key=lambda p: sum(torch.log(torch.tensor(probs[l][i])).item() for l, i in enumerate(p)))
        got = most_probable_under_budget(probs, lat, budget)
        assert lat.predict(got) <= budget
        logp = lambda p: sum(torch.log(torch.tensor(probs[l][i])).item() for l, i in enumerate(p))  # noqa: E731
        assert logp(got) == pytest.approx(logp(best), abs=1e-6)
        # the unconstrained per-layer argmax is what seed 001 complains about: it may break the budget
        assert most_probable_under_budget(probs, lat, None) == [max(range(3), key=lambda i: p[i]) for p in probs]


def test_two_path_gates_run_the_active_op_and_send_gradient_to_the_pair_only():
    space = ProxylessSpace.from_config(CFG)
    torch.manual_seed(0)
    net = build_supernet(space, 3, **supernet_kwargs(CFG)).eval()
    x = torch.randn(2, 3, 32, 32)
    alphas = [torch.randn(len(l.choices), requires_grad=True) for l in space.layers]
    rng = random.Random(0)
    path, pairs = [], []
    for a in alphas:
        pair = sorted(rng.sample(range(len(a)), 2))
        active = rng.randrange(2)
        pairs.append(pair)
        path.append(pair[active])
        p2 = torch.softmax(a[pair], 0)
        hard = torch.zeros(2)
        hard[active] = 1.0
    for layer, a, pair, i in zip(net.backbone, alphas, pairs, path):
        p2 = torch.softmax(a[pair], 0)
        hard = torch.tensor([1.0 if j == i else 0.0 for j in pair])
        layer.gate = (pair, hard + p2 - p2.detach())
    out = net(x)
    out.square().mean().backward()
    for layer in net.backbone:
        layer.gate = None
    net.set_path(path)
    with torch.no_grad():
        assert torch.allclose(out, net(x), atol=1e-5)  # the forward value is the active path's alone
    for a, pair in zip(alphas, pairs):
        others = [j for j in range(len(a)) if j not in pair]
        assert a.grad[pair].abs().sum() > 0
        assert torch.all(a.grad[others] == 0)
        assert abs(float(a.grad[pair].sum())) < 1e-6  # a softmax over the pair: its gradient sums to zero


def test_latency_table_is_cached_by_fingerprint_and_predicts_the_sum(tmp_path):
    space = ProxylessSpace.from_config(CFG)
    layers, fixed = lut_layout(space, (32, 32), 3, **supernet_kwargs(CFG))
    entries = [e for row in layers for e in row if e is not None] + fixed
    fp = fingerprint("torch", 1)
    table = LatencyTable.open(fp, tmp_path / "lut.json")
    assert table.measure(entries, runs=2) == len({e.key for e in entries})
    assert all(v > 0 for v in table.entries.values())
    again = LatencyTable.open(fp, tmp_path / "lut.json")
    assert again.measure(entries, runs=2) == 0 and again.entries == table.entries  # measured once
    with pytest.raises(Exception, match="was measured on"):
        LatencyTable.open(fingerprint("torch", 2), tmp_path / "lut.json")
    # shapes the same op sees twice share one entry: the first layer of stage 1 and of stage 2 differ
    assert entry_key("mb3", (8, 16, 16), (8, 8, 8), 2) == "mb3 8x16x16 -> 8x8x8 s2"
    model = LatencyModel.from_table(table, (layers, fixed))
    path = [0] * len(layers)
    assert model.predict(path) == pytest.approx(sum(table[e.key] for e in fixed)
                                                 + sum(table[row[0].key] for row in layers))
    # calibrated in context: the fixed parts become the median gap between whole subnets and their layers
    cal = fixed_in_context([1.0, 2.0, 3.0], [4.0, 4.5, 7.0])
    assert cal == {"fixed_ms": 3.0, "subnets": 3, "gap_spread_ms": pytest.approx(0.6236, abs=1e-4)}
    assert fixed_in_context([5.0], [4.0])["fixed_ms"] == 0.0  # never negative
    table.calibrations[layout_id((layers, fixed))] = cal
    table.save()
    calibrated = LatencyModel.from_table(LatencyTable.open(fp, tmp_path / "lut.json"), (layers, fixed))
    assert calibrated.calibrated and calibrated.predict(path) == pytest.approx(3.0 + model.layer_sum(path))
    assert LatencyModel.from_table(table, (layers, fixed), raw=True).predict(path) == pytest.approx(model.predict(path))
    other_size = lut_layout(space, (64, 64), 3, **supernet_kwargs(CFG))
    assert layout_id(other_size) != layout_id((layers, fixed))  # a calibration holds for its own layout only
    broken = json.loads((tmp_path / "lut.json").read_text())
    broken["calibrations"] = {"x": {"fixed_ms": "fast"}}
    (tmp_path / "bad.json").write_text(json.dumps(broken))
    with pytest.raises(RunDirError, match="broken calibrations"):
        LatencyTable.load(tmp_path / "bad.json")


# --- end to end -----------------------------------------------------------------------------------
@pytest.fixture
def proxyless_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "proxyless.yml"
    path.write_text(TINY_PROXYLESS)
    return path


def _search(run: Path, recipe: Path, data_flags: list[str], cache: Path,
            kill_at: str | None = None) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if k != KILL_AT}
    env["XDG_CACHE_HOME"] = str(cache)
    if kill_at:
        env[KILL_AT] = kill_at
    argv = [sys.executable, "-m", "nascli", "search", "-r", str(run), "--recipe", str(recipe), *data_flags,
            "--quiet"]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, demo_data) -> Path:
    """An uninterrupted tiny proxyless search (its own process): the search directory."""
    tmp = tmp_path_factory.mktemp("proxyless-ref")
    recipe = tmp / "proxyless.yml"
    recipe.write_text(TINY_PROXYLESS)
    out = _search(tmp / "ref", recipe, _flags(demo_data), tmp / "cache")
    assert out.returncode == 0, out.stderr
    return tmp / "ref" / "search"


def _flags(data: Path) -> list[str]:
    return ["--data-root", str(data), "--train-list", str(data / "train.txt"), "--val-list", str(data / "val.txt")]


def _same_search(a: Path, b: Path) -> None:
    ra, rb = (pd.read_csv(d / "result.csv", dtype={"encoding": str}) for d in (a, b))
    assert list(ra["encoding"]) == list(rb["encoding"]) and list(ra["mIOU"]) == list(rb["mIOU"])
    alphas = [torch.load(d / "supernet.pt", weights_only=True)["alphas"] for d in (a, b)]
    assert all(torch.equal(x, y) for x, y in zip(*alphas))


def test_search_writes_result_and_front_with_space_and_latency_columns(reference):
    result = pd.read_csv(reference / "result.csv", dtype={"encoding": str})
    front = pd.read_csv(reference / "pareto_front.csv", dtype={"encoding": str})
    assert list(result["phase"]) == ["derived", "sampled", "sampled", "sampled"]
    assert set(result["space"]) == {"proxyless"} and result["encoding"].is_unique
    assert result["latency_pred_ms"].notna().all() and (result["status"] == "ok").all()
    assert (result["latency_ms"] == result["latency_pred_ms"]).all()  # the objective is the table's prediction
    assert result["latency_measured_ms"].notna().all()  # objectives include latency: subnets are timed whole too
    assert set(front["encoding"]) <= set(result["encoding"]) and len(front) >= 1
    lut = json.loads((reference / "lut.json").read_text())
    assert lut["fingerprint"]["runtime"] == "torch" and lut["fingerprint"]["threads"] == 1
    alphas = torch.load(reference / "supernet.pt", weights_only=True)["alphas"]
    assert any(a.abs().sum() > 0 for a in alphas)  # the architecture steps did move alpha
    # A checkpoint rebuilds its subnet from (space, encoding) alone.
    from nascli.engine.checkpoint import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(reference / result.loc[0, "weights"])
    assert ckpt["model"]["name"] == "proxyless" and ckpt["meta"]["encoding"] == result.loc[0, "encoding"]
    net = model_from_checkpoint(ckpt).eval()
    assert net(torch.randn(1, 3, 40, 40)).shape == (1, 6, 40, 40)


def test_sigkills_in_warm_up_and_in_the_search_phase_resume_to_the_same_architecture(tmp_path, reference,
                                                                                      proxyless_recipe, data_flags):
    # 19 weight images at batch 8: 3 weight steps an epoch; epoch 0 is warm-up, epochs 1-2 alternate with
    # architecture steps. A checkpoint is written every 2 steps, so the first kill resumes from step 2.
    run, cache = tmp_path / "killed", reference.parents[1] / "cache"
    killed = _search(run, proxyless_recipe, data_flags, cache, kill_at="supernet_step:3")
    assert killed.returncode == -9
    state = torch.load(run / "search" / "supernet.pt", weights_only=True)
    assert state["position"]["epoch"] == 0 and state["position"]["step"] == 2  # died in warm-up
    killed = _search(run, proxyless_recipe, data_flags, cache, kill_at="supernet_arch_step:4")
    assert killed.returncode == -9
    state = torch.load(run / "search" / "supernet.pt", weights_only=True)
    assert state["position"]["arch_steps"] >= 2 and not state["position"]["done"]  # died in the search phase
    done = _search(run, proxyless_recipe, data_flags, cache)
    assert done.returncode == 0, done.stderr
    _same_search(reference, run / "search")


@slow
def test_kill_between_an_epochs_last_step_and_its_end_resumes_the_same(tmp_path, reference, proxyless_recipe,
                                                                        data_flags):
    # supernet.pt writes: step 2, end of epoch 1, step 4, step 6 (epoch 2's last: position (1, 3)), end of
    # epoch 2. Dying in the 5th leaves position (1, 3): the resumed epoch has no step left to run.
    run, cache = tmp_path / "killed", reference.parents[1] / "cache"
    killed = _search(run, proxyless_recipe, data_flags, cache, kill_at="atomic_write:supernet.pt:5")
    assert killed.returncode == -9
    assert torch.load(run / "search" / "supernet.pt", weights_only=True)["position"] == {
        "epoch": 1, "step": 3, "arch_steps": 3, "done": False}
    done = _search(run, proxyless_recipe, data_flags, cache)
    assert done.returncode == 0, done.stderr
    _same_search(reference, run / "search")


@slow
def test_kill_while_scoring_the_front_recovers_without_training_again(tmp_path, reference, proxyless_recipe,
                                                                       data_flags):
    run, cache = tmp_path / "killed", reference.parents[1] / "cache"
    killed = _search(run, proxyless_recipe, data_flags, cache, kill_at="search_recorded:2")
    assert killed.returncode == -9
    before = (run / "search" / "supernet.pt").stat().st_mtime_ns
    done = _search(run, proxyless_recipe, data_flags, cache)
    assert done.returncode == 0, done.stderr
    assert (run / "search" / "supernet.pt").stat().st_mtime_ns == before  # the finished supernet is not retrained
    _same_search(reference, run / "search")


def test_infeasible_budget_is_a_one_line_error_before_training(tmp_path, proxyless_recipe, data_flags, run_cli,
                                                               monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = run_cli("search", "-r", tmp_path / "r", "--recipe", proxyless_recipe, *data_flags, "--max-latency-ms", "0.001")
    assert out.code == 3
    lines = [l for l in out.stderr.splitlines() if l.startswith(("Error", "Hint"))]
    assert lines[0].startswith("Error: latency budget 0.001 ms is infeasible: the fastest subnet of this space takes")
    assert lines[1].startswith("Hint: raise --max-latency-ms")
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "r" / "search" / "supernet.pt").exists()


def test_hinge_latency_loss_without_a_budget_is_a_one_line_error(tmp_path, proxyless_recipe, data_flags, run_cli,
                                                                 monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    recipe = tmp_path / "hinge.yml"
    recipe.write_text(proxyless_recipe.read_text().replace("proxyless:\n", "proxyless:\n  latency_loss: hinge\n"))
    out = run_cli("search", "-r", tmp_path / "r", "--recipe", recipe, *data_flags)
    assert out.code == 3 and "Traceback" not in out.stderr
    assert "latency_loss hinge penalises latency over the budget" in out.stderr and "--max-latency-ms" in out.stderr
    assert not (tmp_path / "r" / "search" / "supernet.pt").exists()


def test_a_searched_subnet_trains_profiles_and_exports_from_the_run(tmp_path, proxyless_recipe, data_flags, run_cli,
                                                                  monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert run_cli("search", "-r", run, "--recipe", proxyless_recipe, *data_flags, "--quiet").code == 0
    best = pd.read_csv(run / "search" / "result.csv", dtype={"encoding": str}).sort_values("mIOU").iloc[-1]
    out = run_cli("train", "-r", run, "--epochs", "1", "--quiet", "--json")
    assert out.code == 0, out.stderr
    assert json.loads(out.stdout)["encoding"] == best["encoding"]  # the search's best by mIoU
    out = run_cli("export", "-r", run, "--onnx", "--quiet", "--json")
    assert out.code == 0, out.stderr
    other = "mb3-skip.mb5-shuf.dil3-skip-sep3.sep5-skip"
    out = run_cli("profile", "-r", run, "--encoding", other, "--runs", "3", "--quiet", "--json")
    assert out.code == 0, out.stderr
    assert json.loads(out.stdout)["model"]["name"] == "proxyless"
    out = run_cli("profile", "-r", run, "--encoding", other.replace("sep5-skip", "skip-skip"), "--quiet")
    assert out.code == 3 and "stage 4 layer 1 cannot be skip" in out.stderr


def test_lut_command_measures_once_and_checks_whole_subnets(tmp_path, proxyless_recipe, run_cli, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    argv = ["lut", "-r", tmp_path / "run", "--recipe", proxyless_recipe, "--num-classes", "3", "--runs", "2",
            "--quiet", "--json"]
    first = run_cli(*argv, "--check", "3")
    assert first.code == 0, first.stderr
    out = json.loads(first.stdout)
    assert out["measured_now"] == out["entries"] > 0 and len(out["check"]) == 3
    assert set(out["summary"]) == {"subnets", "median_abs_error_pct", "spearman", "uncalibrated_median_abs_error_pct",
                                   "calibrated", "rounds", "runs"}
    cal = out["calibration"]  # the fixed parts costed in context, from subnets the check does not reuse
    assert out["summary"]["calibrated"] and cal["subnets"] == 10 and cal["fixed_ms"] >= 0 and cal["fixed_alone_ms"] > 0
    space = ProxylessSpace.from_config(ProxylessConfig(**yaml.safe_load(proxyless_recipe.read_text())["proxyless"]))
    assert not {r["encoding"] for r in out["check"]} & set(calibration_codes(space, 10))
    stored = json.loads(Path(out["table_file"]).read_text())["calibrations"]
    assert list(stored.values()) == [cal]
    for row in out["check"]:
        assert row["predicted_ms"] > 0 and row["measured_ms"] > 0
        assert row["error_pct"] == pytest.approx(100 * (row["predicted_ms"] - row["measured_ms"]) / row["measured_ms"],
                                                 abs=0.05)
    assert Path(out["table_file"]).is_file() and Path(out["file"]).is_file()
    again = json.loads(run_cli(*argv).stdout)
    assert again["measured_now"] == 0 and again["table_file"] == out["table_file"]  # cached per fingerprint
    other = json.loads(run_cli(*argv, "--threads", "2").stdout)
    assert other["measured_now"] == other["entries"] and other["table_file"] != out["table_file"]
    bad = run_cli(*argv, "--encoding", "mb3")
    assert bad.code == 3 and "option --encoding" in bad.stderr
