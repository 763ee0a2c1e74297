"""`nascli search --algo adelaide-ea` end to end on the tiny demo data (issue 3's acceptance list)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from nascli.spaces.adelaide import AdelaideSpace
from nascli.zoo.adelaide import build_adelaide

BUDGET = ["--random-samples", "4", "--mutate-samples", "4", "--epochs", "1"]


def read_results(run: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    result = pd.read_csv(run / "search" / "result.csv", dtype={"encoding": str, "parent": str})
    front = pd.read_csv(run / "search" / "pareto_front.csv", dtype={"encoding": str, "parent": str})
    return result, front


def search_args(run: Path, tiny_recipe: Path, data_flags: list[str], *extra: str) -> list[str]:
    return ["search", "--algo", "adelaide-ea", "-r", str(run), "--recipe", str(tiny_recipe), *data_flags, *BUDGET, *extra]


@pytest.fixture(scope="module")
def searched(tmp_path_factory, demo_data, tiny_recipe):
    """One finished 4 + 4 search, shared by the tests that only read its outputs."""
    from nascli.cli.app import main

    run = tmp_path_factory.mktemp("search") / "run"
    flags = ["--data-root", str(demo_data), "--train-list", str(demo_data / "train.txt"),
             "--val-list", str(demo_data / "val.txt")]
    with pytest.raises(SystemExit) as exit_info:
        main(search_args(run, tiny_recipe, flags) + ["--quiet"])
        raise SystemExit(0)
    assert exit_info.value.code in (0, None)
    return run


def test_writes_eight_distinct_valid_candidates(searched):
    result, _ = read_results(searched)
    assert len(result) == 8
    assert result["encoding"].is_unique
    space = AdelaideSpace(yaml.safe_load((searched / "search" / "config.yaml").read_text())["space"]["op_names"])
    for code in result["encoding"]:
        assert code.startswith("_") and space.canonical(code) == code
    assert list(result["phase"]) == ["random"] * 4 + ["mutate"] * 4
    assert (result["status"] == "ok").all()
    for col in ["encoding", "flops", "parameters", "mIOU", "phase", "parent", "input_size", "latency_ms", "seconds",
                "status"]:
        assert col in result.columns
    assert (result["input_size"] == "32x32").all()


def test_mutants_differ_from_a_front_parent_in_one_position(searched):
    result, _ = read_results(searched)
    evaluated = list(result["encoding"])
    for i, row in result[result["phase"] == "mutate"].iterrows():
        parent = row["parent"]
        assert parent in evaluated[:i]
        assert sum(a != b for a, b in zip(parent, row["encoding"])) == 1


def test_pareto_front_is_exactly_the_non_dominated_subset(searched):
    result, front = read_results(searched)
    ok = result[result["status"] == "ok"]

    def dominated(r):
        return any((o.mIOU >= r.mIOU and o.flops <= r.flops) and (o.mIOU > r.mIOU or o.flops < r.flops)
                   for o in ok.itertuples())

    expected = {r.encoding for r in ok.itertuples() if not dominated(r)}
    assert set(front["encoding"]) == expected
    assert len(front) == len(expected)


def test_flops_and_parameters_match_flop_counter(searched):
    result, _ = read_results(searched)
    recipe = yaml.safe_load((searched / "search" / "config.yaml").read_text())
    space, h_w = recipe["space"], [int(v) for v in result["input_size"][0].split("x")]
    for row in result.itertuples():
        model = build_adelaide(encoding=row.encoding, num_classes=recipe["data"]["num_classes"],
                               op_names=space["op_names"], agg_size=space["agg_size"],
                               agg_concat=space["agg_concat"], sep_repeats=space["sep_repeats"]).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(1, 3, *h_w))
        assert row.flops == counter.get_total_flops() // 2
        assert row.parameters == sum(p.numel() for p in model.parameters())


def test_candidate_weights_rebuild_their_model(searched):
    from nascli.engine.checkpoint import load_checkpoint, model_from_checkpoint

    result, _ = read_results(searched)
    path = searched / "search" / result["weights"][0]
    model = model_from_checkpoint(load_checkpoint(path), path).eval()
    assert model(torch.zeros(1, 3, 32, 32)).shape[1] == 6


def test_same_seed_same_encodings_in_same_order(searched, tmp_path, run_cli, tiny_recipe, data_flags):
    again = tmp_path / "again"
    assert run_cli(search_args(again, tiny_recipe, data_flags, "--quiet")).code == 0
    first, _ = read_results(searched)
    second, _ = read_results(again)
    assert list(first["encoding"]) == list(second["encoding"])
    assert list(first["mIOU"]) == list(second["mIOU"])


def test_a_feature_cache_spilled_to_disk_changes_no_result(searched, tmp_path, run_cli, tiny_recipe, data_flags):
    recipe = tmp_path / "spill.yml"
    recipe.write_text(tiny_recipe.read_text().replace("  cache_views: 1\n", "  cache_views: 1\n  cache_memory_gb: 1.0e-6\n"))
    run = tmp_path / "spill"
    args = ["search", "-r", run, "--recipe", recipe, *data_flags, "--random-samples", "2", "--mutate-samples", "0",
            "--epochs", "1"]
    r = run_cli(args)
    assert r.code == 0 and "spilling to" in r.stderr
    first, _ = read_results(searched)
    spilled, _ = read_results(run)
    assert list(spilled["mIOU"]) == list(first["mIOU"][:2])
    assert not list((run / "search").glob("feature-cache-*"))  # removed with the cache


def test_rerun_of_a_finished_search_trains_nothing(searched, run_cli, tiny_recipe, data_flags):
    before = (searched / "search" / "records.jsonl").read_bytes()
    r = run_cli(search_args(searched, tiny_recipe, data_flags, "--quiet"))
    assert r.code == 0
    assert (searched / "search" / "records.jsonl").read_bytes() == before


def test_resume_refuses_changed_settings(searched, run_cli, tiny_recipe, data_flags):
    before = sorted(p.name for p in (searched / "search").iterdir())
    r = run_cli(search_args(searched, tiny_recipe, data_flags, "--input-size", "40x40"))
    assert r.code == 2
    assert "data.input_size" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in (searched / "search").iterdir()) == before


def test_larger_budget_extends_a_finished_search(searched, tmp_path, run_cli, tiny_recipe, data_flags):
    import shutil

    run = tmp_path / "extended"
    shutil.copytree(searched, run)
    args = search_args(run, tiny_recipe, data_flags, "--quiet")
    args[args.index("--mutate-samples") + 1] = "6"
    assert run_cli(args).code == 0
    result, _ = read_results(run)
    assert len(result) == 10 and result["encoding"].is_unique


def test_kill_after_third_candidate_then_resume(tmp_path, tiny_recipe, data_flags):
    # The reference runs in a fresh process too: numbers must match those of an uninterrupted command,
    # and a long-lived test process carries native library state (thread pools) a fresh one does not.
    cmd = [sys.executable, "-m", "nascli"] + search_args(tmp_path / "reference", tiny_recipe, data_flags, "--quiet")
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "nascli"] + search_args(run, tiny_recipe, data_flags, "--quiet")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = run / "search" / "records.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if records.exists() and len(records.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the search finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = len(records.read_text().splitlines())
    assert 3 <= killed_at < 8

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result, _ = read_results(run)
    assert len(result) == 8 and result["encoding"].is_unique
    reference, _ = read_results(tmp_path / "reference")
    assert list(result["encoding"]) == list(reference["encoding"])  # as if never interrupted
    assert list(result["mIOU"]) == list(reference["mIOU"])


def test_infeasible_constraint_is_a_one_line_error(tmp_path, run_cli, tiny_recipe, data_flags):
    recipe = tmp_path / "few_retries.yml"
    recipe.write_text(tiny_recipe.read_text() + "search:\n  max_retries: 5\n")
    r = run_cli(search_args(tmp_path / "run", recipe, data_flags, "--max-macs", "1000"))
    assert r.code == 3
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "no new candidate satisfying the constraints after 5 tries" in errors[0]
    assert "smallest flops seen" in errors[0]
    assert r.stderr.splitlines()[-1].startswith("Hint: relax --max-macs")
    assert "Traceback" not in r.stderr


def test_constraint_rejects_before_training(searched, tmp_path, run_cli, tiny_recipe, data_flags):
    limit = int(read_results(searched)[0]["flops"].median())  # about half the space is feasible
    r = run_cli(search_args(tmp_path / "run", tiny_recipe, data_flags, "--max-macs", str(limit), "--quiet"))
    assert r.code == 0, r.stderr
    result, _ = read_results(tmp_path / "run")
    assert len(result) == 8 and (result["flops"] <= limit).all()


def test_other_steps_settings_do_not_block_resume(searched, tmp_path, run_cli, tiny_recipe, data_flags):
    import shutil

    run = tmp_path / "after_train"
    shutil.copytree(searched, run)
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["train"]["sep_repeats"] = 2  # as `nascli train --sep-repeats 2` leaves it
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert run_cli(search_args(run, tiny_recipe, data_flags, "--quiet")).code == 0


class _Lazy:
    """Runs its evaluation only when the loop asks for the result, so several are truly pending at once."""

    def __init__(self, executor, task):
        self.executor, self.task = executor, task

    def result(self):
        from nascli.executors.task import run_in_place, weights_name

        self.executor.in_flight -= 1
        return run_in_place(self.executor.evaluator, self.task, self.executor.sdir / weights_name(self.task.index))


class _CountingExecutor:
    name = "counting"

    def __init__(self):
        self.in_flight = self.peak = 0

    def start(self, evaluator, sdir):
        self.evaluator, self.sdir = evaluator, sdir

    def submit(self, task):
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        return _Lazy(self, task)

    def close(self):
        pass


def test_loop_keeps_k_evaluations_in_flight(tmp_path, demo_data, tiny_recipe):
    from nascli.rundir import RunDir, read_jsonl
    from nascli.steps import search as step
    from nascli.steps.common import load_recipe

    recipe = load_recipe(None, tiny_recipe, {"data.data_root": demo_data, "data.train_list": demo_data / "train.txt",
                                             "data.val_list": demo_data / "val.txt", "search.random_samples": 4,
                                             "search.mutate_samples": 4, "search.parallel": 3})
    executor = _CountingExecutor()
    result = step.run(recipe, RunDir(tmp_path / "run"), executor=executor)
    assert executor.peak == 3
    codes = [r["encoding"] for r in result.records]
    assert len(codes) == 8 and len(set(codes)) == 8
    assert [r["index"] for r in result.records] == list(range(8))  # told in index order
    # Each proposal was logged before it was submitted, in index order.
    assert [p["encoding"] for p in read_jsonl(tmp_path / "run" / "search" / "proposals.jsonl")] == codes


def test_latency_objective_measured_by_onnxruntime_at_its_own_size(tmp_path, run_cli, tiny_recipe, data_flags):
    run = tmp_path / "run"
    args = ["search", "--algo", "random", "-r", str(run), "--recipe", str(tiny_recipe), *data_flags,
            "--random-samples", "2", "--mutate-samples", "0", "--epochs", "1", "--objectives", "miou,latency",
            "--latency-size", "48x64", "--quiet"]
    r = run_cli(args + ["--latency-runtime", "onnxruntime"])
    assert r.code == 0, r.stderr
    result, _ = read_results(run)
    assert len(result) == 2 and (result["latency_ms"] > 0).all()
    # Each row says what its latency means (input_size stays the size its MACs were counted at).
    assert set(result["latency_runtime"]) == {"onnxruntime"} and set(result["latency_size"]) == {"48x64"}
    assert set(result["input_size"]) != {"48x64"}
    saved = yaml.safe_load((run / "search" / "config.yaml").read_text())["search"]
    assert saved["latency_runtime"] == "onnxruntime" and saved["latency_size"] == [48, 64]
    # Latencies from another runtime are not comparable: resuming with it is refused.
    r = run_cli(args + ["--latency-runtime", "torch"])
    assert r.code == 2 and "search.latency_runtime='onnxruntime'" in r.stderr, r.stderr


def test_resuming_with_another_encoder_is_refused(tmp_path, run_cli, tiny_recipe, data_flags):
    from nascli.engine.checkpoint import save_checkpoint
    from nascli.zoo.backbones import MobileNetV2Encoder

    encoders = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        path = tmp_path / f"encoder{seed}.pth"
        save_checkpoint(path, {"model": {"name": "encoder", "kwargs": {"backbone": "mobilenet_v2"}},
                               "state_dict": MobileNetV2Encoder().state_dict(), "meta": {"source": f"seed {seed}"}})
        encoders.append(path)
    run = tmp_path / "run"
    args = ["search", "--algo", "random", "-r", str(run), "--recipe", str(tiny_recipe), *data_flags,
            "--random-samples", "1", "--mutate-samples", "0", "--epochs", "1", "--quiet"]
    assert run_cli(args + ["--encoder", str(encoders[0])]).code == 0
    r = run_cli(args + ["--random-samples", "2", "--encoder", str(encoders[1])])
    assert r.code == 2 and "option --encoder" in r.stderr and "another encoder" in r.stderr, r.stderr
    assert len(read_results(run)[0]) == 1  # nothing was evaluated with the other encoder
    r = run_cli(args + ["--random-samples", "2", "--encoder", str(encoders[0])])
    assert r.code == 0 and len(read_results(run)[0]) == 2, r.stderr


def test_resume_on_other_threads_is_refused_unless_allowed(tmp_path, run_cli, tiny_recipe, data_flags):
    """Threads change floating-point reductions, so a resume on others is not the uninterrupted search (issue 23)."""
    run = tmp_path / "run"
    args = ["search", "--algo", "random", "-r", str(run), "--recipe", str(tiny_recipe), *data_flags,
            "--mutate-samples", "0", "--epochs", "1", "--quiet"]
    assert run_cli(args + ["--random-samples", "1", "--threads", "1"]).code == 0
    runtime = json.loads((run / "search" / "runtime.json").read_text())
    assert runtime["threads"] == 1 and runtime["device"] == "cpu"
    r = run_cli(args + ["--random-samples", "2", "--threads", "2"])
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert r.code == 2 and len(errors) == 1 and "--threads 1 --device cpu" in errors[0], r.stderr
    assert "--threads 1" in r.stderr.splitlines()[-1] and "--allow-runtime-change" in r.stderr.splitlines()[-1]
    assert len(read_results(run)[0]) == 1  # nothing was evaluated on the other thread count
    r = run_cli(args + ["--random-samples", "2", "--threads", "2", "--allow-runtime-change"])
    assert r.code == 0 and len(read_results(run)[0]) == 2, r.stderr
    runtime = json.loads((run / "search" / "runtime.json").read_text())
    assert runtime["threads"] == 2 and runtime["since_candidate"] == 1
    assert [(e["threads"], e["device"]) for e in runtime["earlier"]] == [(1, "cpu")]
    assert run_cli(args + ["--random-samples", "2", "--threads", "1"]).code == 2  # now checked against 2
