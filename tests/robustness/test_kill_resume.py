"""Issue 8.1 and 8.4: SIGKILL a search or a training at a named point (nascli.faults), then run it again.

The re-run must finish as if nothing happened: no candidate lost, none trained twice, every CSV parseable,
results identical to an uninterrupted run with the same seed; and a write cut short leaves the previous
version of its file intact. The kill is deterministic: the process SIGKILLs itself at the point that
NASCLI_KILL_AT names, so each test knows exactly what was on disk when it died.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from nascli.rundir import read_jsonl

from .helpers import (
    train_dir,
    CANDIDATES,
    env,
    nascli,
    read_table,
    search_argv,
    temp_files,
    train_argv,
)

slow = pytest.mark.slow

# On the demo fixture (24 training images) with the tiny recipe (batch 8, one epoch) a candidate trains in 3
# optimiser steps: candidate k (0-based) runs steps 3k+1..3k+3. Candidates 0-2 are random, 3-5 mutants.
# result.csv is written once before the first candidate and then after each record.
KILLS = [  # NASCLI_KILL_AT, records.jsonl lines when the process died
    pytest.param("cache_batch:2", 0, id="building-the-feature-cache", marks=slow),
    pytest.param("train_step:5", 1, id="training-candidate-1", marks=slow),
    pytest.param("search_trained:2", 1, id="after-training-before-record-json", marks=slow),
    # The representative in the default run: the recovery path (record.json written, records.jsonl not yet).
    pytest.param("search_recorded:2", 1, id="between-training-and-its-record"),
    pytest.param("search_appended:2", 2, id="between-records-jsonl-and-the-csvs", marks=slow),
    pytest.param("atomic_write:result.csv:3", 2, id="while-writing-result-csv", marks=slow),
    pytest.param("train_step:11", 3, id="mutate-phase-training-candidate-3", marks=slow),
]


def identity(path: Path) -> tuple[int, int]:
    """(inode, mtime): an atomic rewrite replaces the file, so both change when a candidate is trained again."""
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def finished_candidates(sdir: Path) -> dict[Path, tuple[bytes, tuple[int, int]]]:
    """Candidates whose record.json was written: their record and the identity of their weights file."""
    return {d: ((d / "record.json").read_bytes(), identity(d / "weights.pth"))
            for d in sorted((sdir / "candidates").glob("*")) if (d / "record.json").exists()}


@pytest.mark.parametrize("kill_at, recorded", KILLS)
def test_killed_search_reruns_to_the_uninterrupted_result(tmp_path, demo_data, tiny_recipe, search_reference,
                                                          kill_at, recorded):
    run = tmp_path / "run"
    sdir = run / "search"
    argv = search_argv(run, tiny_recipe, demo_data)
    killed = nascli(argv, kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]

    # It died where the point says: this many records, and what the point leaves behind.
    jsonl = sdir / "records.jsonl"
    before = jsonl.read_bytes() if jsonl.exists() else b""
    assert len(before.splitlines()) == recorded
    if kill_at.startswith("search_trained"):  # weights saved, no record.json yet: it will be trained again
        assert not (sdir / "candidates" / f"{recorded:04d}" / "record.json").exists()
        assert (sdir / "candidates" / f"{recorded:04d}" / "weights.pth").exists()
    if kill_at.startswith("search_recorded"):  # trained and saved, not yet in records.jsonl
        assert (sdir / "candidates" / f"{recorded:04d}" / "record.json").exists()
    if kill_at.startswith("atomic_write:result.csv"):  # the previous result.csv is whole, the new one a temp file
        assert len(read_table(sdir / "result.csv")) == recorded - 1
        assert [p.name.startswith(".result.csv.") for p in temp_files(sdir)] == [True]
    if kill_at.startswith("search_appended"):  # recorded, but the CSVs still show one candidate less
        assert len(read_table(sdir / "result.csv")) == recorded - 1
    saved = finished_candidates(sdir)

    done = nascli(argv)
    assert done.returncode == 0, done.stderr[-3000:]

    # No candidate lost, none recorded twice, what was recorded before the kill kept as it was.
    records = read_jsonl(jsonl)
    assert [r["index"] for r in records] == list(range(CANDIDATES))
    assert len({r["encoding"] for r in records}) == CANDIDATES
    assert jsonl.read_bytes().startswith(before)
    # None trained twice: a candidate whose record.json existed kept that record and its weights file (training
    # it again would have rewritten both), and its record is what reached records.jsonl.
    for cand, (record, weights) in saved.items():
        assert (cand / "record.json").read_bytes() == record, cand
        assert identity(cand / "weights.pth") == weights, cand
        assert records[int(cand.name)] == json.loads(record)
    # Parseable CSVs with the uninterrupted search's results, in its order.
    result, reference = read_table(sdir / "result.csv"), read_table(search_reference / "search" / "result.csv")
    assert list(result["encoding"]) == list(reference["encoding"])
    assert list(result["mIOU"]) == list(reference["mIOU"])
    assert list(result["phase"]) == ["random"] * 3 + ["mutate"] * 3
    front = read_table(sdir / "pareto_front.csv")
    assert list(front["encoding"]) == list(read_table(search_reference / "search" / "pareto_front.csv")["encoding"])
    assert json.loads((run / "status" / "search.json").read_text())["state"] == "done"
    assert temp_files(run) == []  # a killed writer's temporary file is cleaned up by the next run


@slow
@pytest.mark.parametrize("kill_at", [
    pytest.param("train_step:5", id="mid-epoch-2"),  # 3 steps an epoch: step 5 is inside epoch 2
    pytest.param("atomic_write:last.pth:2", id="while-saving-epoch-2-checkpoint"),
])
def test_killed_training_resumes_to_the_uninterrupted_result(tmp_path, demo_data, tiny_recipe, train_reference,
                                                             kill_at):
    from nascli.engine.checkpoint import load_checkpoint

    run = tmp_path / "run"
    tdir = train_dir(run)
    killed = nascli(train_argv(run, tiny_recipe, demo_data), kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    # Either way the previous checkpoint (epoch 1) is whole and loads; a save cut short left only a temp file.
    assert load_checkpoint(tdir / "last.pth")["epoch"] == 1
    assert list(pd.read_csv(tdir / "metrics.csv")["epoch"]) == [1]
    if kill_at.startswith("atomic_write"):
        assert [p.name.startswith(".last.pth.") for p in temp_files(tdir)] == [True]

    done = nascli(["train", "-r", run, "--resume"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 of 3 epochs done" in done.stderr
    history, reference = pd.read_csv(tdir / "metrics.csv"), pd.read_csv(train_dir(train_reference) / "metrics.csv")
    assert list(history["epoch"]) == [1, 2, 3]  # each epoch exactly once
    same = ["epoch", "train_loss", "lr", "val_miou", "val_fwiou", "val_pixel_acc", "val_mean_acc", "best"]
    pd.testing.assert_frame_equal(history[same], reference[same])
    assert load_checkpoint(tdir / "last.pth")["epoch"] == 3
    assert temp_files(run) == []


# --- atomic writes, cheaply: the writer itself in a small fresh process -------------------------------------
WRITE_TWICE = """
import sys
from pathlib import Path
from nascli.rundir import atomic_write_text
path = Path(sys.argv[1])
atomic_write_text(path, "index,encoding\\n0,_3104242330135120344\\n")
atomic_write_text(path, "index,encoding\\n0,_3104242330135120344\\n1,_6003412160636100213\\n")
"""

SAVE_TWICE = """
import sys
import torch
from nascli.engine.checkpoint import save_checkpoint
for epoch in (1, 2):
    save_checkpoint(sys.argv[1], {"model": {"name": "encoder", "kwargs": {}}, "meta": {}, "epoch": epoch,
                                  "state_dict": {"w": torch.full((256, 256), float(epoch))}})
"""


def run_script(script: str, *args, kill_at: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], env=env(kill_at), capture_output=True,
                          text=True, timeout=120)


def test_a_csv_write_cut_short_leaves_the_previous_version(tmp_path):
    from nascli.rundir import RunDir

    path = tmp_path / "run" / "search" / "result.csv"
    died = run_script(WRITE_TWICE, path, kill_at="atomic_write:result.csv:2")
    assert died.returncode == -signal.SIGKILL, died.stderr
    assert list(read_table(path)["encoding"]) == ["_3104242330135120344"]  # the first version, whole
    [tmp] = temp_files(tmp_path)  # the second version got as far as its temporary file
    assert tmp.parent == path.parent and tmp.name.startswith(".result.csv.")
    with RunDir(tmp_path / "run").lock("search"):  # the next run on this directory clears it away
        assert temp_files(tmp_path) == []
        assert path.exists()


def test_a_checkpoint_save_cut_short_leaves_the_previous_checkpoint(tmp_path):
    from nascli.engine.checkpoint import load_checkpoint

    path = tmp_path / "last.pth"
    died = run_script(SAVE_TWICE, path, kill_at="atomic_write:last.pth:2")
    assert died.returncode == -signal.SIGKILL, died.stderr
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 1 and float(ckpt["state_dict"]["w"][0, 0]) == 1.0
    assert [p.name.startswith(".last.pth.") for p in temp_files(tmp_path)] == [True]


@pytest.mark.parametrize("value, point", [
    ("train_step", ("train_step", 1)),
    ("train_step:5", ("train_step", 5)),
    ("atomic_write:result.csv", ("atomic_write:result.csv", 1)),  # a point's name may hold ':'
    ("atomic_write:last.pth:2", ("atomic_write:last.pth", 2)),
    ("", None),
])
def test_kill_at_names_a_point_and_a_count(value, point):
    from nascli.faults import _parse

    assert _parse(value) == point
