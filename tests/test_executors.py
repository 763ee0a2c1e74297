"""Issue 21: the same search on the serial and process executors with K = 2 in flight gives the same records;
a driver killed with two in flight, then re-run, ends with an uninterrupted run's records; a worker killed
mid-candidate loses nothing; a resume with another K is refused. (Ray: tests/test_ray_executor.py.)"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from nascli.faults import ONCE_ENV
from nascli.rundir import read_jsonl
from tests.robustness.helpers import CANDIDATES, env, read_table, search_argv

# Timing columns differ between any two runs; every other column of result.csv must match.
TIMING = ["seconds", "train_seconds"]


def same_results(run: Path, reference: Path) -> None:
    got, want = read_table(run / "search" / "result.csv"), read_table(reference / "search" / "result.csv")
    assert len(got) == CANDIDATES
    pd.testing.assert_frame_equal(got.drop(columns=TIMING), want.drop(columns=TIMING))
    assert [r["index"] for r in read_jsonl(run / "search" / "records.jsonl")] == list(range(CANDIDATES))


def argv(run: Path, tiny_recipe: Path, demo_data: Path, *extra: str) -> list[str]:
    return search_argv(run, tiny_recipe, demo_data) + ["--parallel", "2", "--quiet", *extra]


def fresh(args: list[str], **extra_env: str) -> subprocess.CompletedProcess:
    """nascli in a fresh process (as a user runs it), with extra environment variables."""
    return subprocess.run([sys.executable, "-m", "nascli", *map(str, args)], env={**env(), **extra_env},
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # the default run checks the same records in test_a_worker_killed_mid_candidate_loses_nothing
def test_process_pool_gives_the_serial_records(tmp_path, serial_k2, demo_data, tiny_recipe):
    run = tmp_path / "run"
    # One worker for two in flight: the records depend on K, not on how many workers run them.
    done = fresh(argv(run, tiny_recipe, demo_data, "--executor", "process", "--workers", "1"))
    assert done.returncode == 0, done.stderr[-3000:]
    same_results(run, serial_k2)
    # Workers returned the weights; the driver wrote them, byte for byte what the serial search wrote.
    for i in range(CANDIDATES):
        name = f"candidates/{i:04d}/weights.pth"
        assert (run / "search" / name).read_bytes() == (serial_k2 / "search" / name).read_bytes()
    assert not list((run / "search").glob("feature-cache-*"))  # the shared cache's files went with the pool


def test_driver_killed_with_two_in_flight_reruns_to_the_uninterrupted_records(tmp_path, serial_k2, demo_data,
                                                                            tiny_recipe):
    run = tmp_path / "run"
    args = argv(run, tiny_recipe, demo_data, "--executor", "process", "--workers", "1")
    # The 4th submit: records 0 and 1 told, proposals 2 and 3 logged and in flight, neither recorded.
    killed = fresh(args, NASCLI_KILL_AT="search_submitted:4")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    sdir = run / "search"
    assert [r["index"] for r in read_jsonl(sdir / "records.jsonl")] == [0, 1]
    logged = read_jsonl(sdir / "proposals.jsonl")
    assert [p["index"] for p in logged] == [0, 1, 2, 3]
    done = fresh(args)
    assert done.returncode == 0, done.stderr[-3000:]
    same_results(run, serial_k2)
    # The two in flight ran as logged (not asked again from a later strategy state), and nothing twice.
    assert [p["index"] for p in read_jsonl(sdir / "proposals.jsonl")] == list(range(CANDIDATES))
    assert [r["encoding"] for r in read_jsonl(sdir / "records.jsonl")][2:4] == [p["encoding"] for p in logged[2:]]


def test_a_worker_killed_mid_candidate_loses_nothing(tmp_path, serial_k2, demo_data, tiny_recipe):
    run = tmp_path / "run"
    marker = tmp_path / "killed-once"
    # The first worker to reach its 2nd optimiser step dies (SIGKILL); its pool breaks; the candidates in
    # flight start again on a new pool (the driver never trains, so never reaches the point).
    done = fresh(argv(run, tiny_recipe, demo_data, "--executor", "process", "--workers", "2"),
                 NASCLI_KILL_AT="train_step:2", **{ONCE_ENV: str(marker)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert marker.exists()  # a worker did die
    assert "worker process died; starting it again" in done.stderr
    same_results(run, serial_k2)
    assert (read_table(run / "search" / "result.csv")["status"] == "ok").all()
    for i in range(CANDIDATES):  # the driver wrote the workers' weights: the serial search's, byte for byte
        name = f"candidates/{i:04d}/weights.pth"
        assert (run / "search" / name).read_bytes() == (serial_k2 / "search" / name).read_bytes()


def test_resume_with_another_k_is_refused(tmp_path, serial_k2, demo_data, tiny_recipe, run_cli):
    run = tmp_path / "run"
    shutil.copytree(serial_k2, run)
    args = search_argv(run, tiny_recipe, demo_data) + ["--parallel", "3", "--quiet"]
    r = run_cli(args)
    assert r.code == 2, r.stderr
    assert "run with --parallel 2; this command asks for --parallel 3" in r.stderr
    assert "Hint: re-run with --parallel 2" in r.stderr
    # The same K on another executor resumes (here: nothing left to do) and changes nothing.
    before = (run / "search" / "records.jsonl").read_bytes()
    r = run_cli(search_argv(run, tiny_recipe, demo_data) + ["--parallel", "2", "--executor", "process", "--quiet"])
    assert r.code == 0, r.stderr
    assert (run / "search" / "records.jsonl").read_bytes() == before


@pytest.mark.parametrize("flags, words", [
    (["--executor", "dask"], "unknown executor 'dask'"),
    (["--address", "127.0.0.1:1"], "only --executor ray connects"),
    (["--workers", "2"], "serial executor has one worker"),
    (["--gpus-per-task", "1"], "only --executor ray schedules GPUs"),
])
def test_executor_options_fail_in_one_line(tmp_path, demo_data, tiny_recipe, run_cli, flags, words):
    r = run_cli(search_argv(tmp_path / "run", tiny_recipe, demo_data) + flags)
    assert r.code == 2 and words in r.stderr and "Hint:" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_proxyless_refuses_parallel_with_its_reason(tmp_path, demo_data, tiny_recipe, run_cli):
    r = run_cli(["search", "--algo", "proxyless", "-r", tmp_path / "run", "--recipe", tiny_recipe,
                 "--data-root", demo_data, "--train-list", demo_data / "train.txt", "--val-list",
                 demo_data / "val.txt", "--parallel", "2"])
    assert r.code == 2, r.stderr
    assert "--algo proxyless runs serially: it is one-shot" in r.stderr and "Hint: drop --parallel" in r.stderr
