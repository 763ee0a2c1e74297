"""Issue 8.1: Ctrl-C (SIGINT) stops a search or a training cleanly, says so, and leaves a resumable state."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest

from nascli.rundir import read_jsonl

from .helpers import (
    train_dir,
    CANDIDATES,
    NASCLI,
    assert_clean_error,
    env,
    nascli,
    read_table,
    search_argv,
    temp_files,
    train_argv,
)


def interrupt_when(argv: list[str], ready: Callable[[], bool], tmp_path: Path) -> tuple[int, str, str]:
    """Start `nascli ARGV`, press Ctrl-C (SIGINT) as soon as `ready()`, return (exit code, stdout, stderr)."""
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(out, "w") as o, open(err, "w") as e:
        # SIGINT back to its default in the child: a test run started in the background (`cmd &` in a script)
        # inherits SIGINT ignored, and Python then leaves it ignored
        proc = subprocess.Popen(NASCLI + [str(a) for a in argv], env=env(), stdout=o, stderr=e, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + 240
        while proc.poll() is None and not ready() and time.time() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, f"it finished before it could be interrupted: {err.read_text()[-2000:]}"
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        proc.wait(timeout=120)
        interrupt_when.seconds = time.monotonic() - sent  # how long the process took to stop
    return proc.returncode, out.read_text(), err.read_text()


def lines(path: Path) -> int:
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def test_ctrl_c_in_process_names_what_was_saved(tmp_path, run_cli, tiny_recipe, demo_data, monkeypatch):
    # The message contract, cheaply: Ctrl-C arriving just after the first record was appended.
    from nascli.rundir import append_jsonl
    from nascli.steps import search as step

    def append_then_interrupt(path, record):
        append_jsonl(path, record)
        if path.name == "records.jsonl":  # not the proposal log, which is appended before each submit
            raise KeyboardInterrupt

    monkeypatch.setattr(step, "append_jsonl", append_then_interrupt)
    run = tmp_path / "run"
    r = run_cli(search_argv(run, tiny_recipe, demo_data))
    assert_clean_error(r.code, r.stdout, r.stderr, 130, "search interrupted after 1 candidates")
    assert "Hint: run the same command again to resume" in r.stderr
    assert json.loads((run / "status" / "search.json").read_text())["state"] == "interrupted"
    assert len(read_jsonl(run / "search" / "records.jsonl")) == 1


@pytest.mark.slow
def test_sigint_stops_a_search_that_the_same_command_resumes(tmp_path, tiny_recipe, demo_data, search_reference):
    run = tmp_path / "run"
    argv = search_argv(run, tiny_recipe, demo_data)
    records = run / "search" / "records.jsonl"
    code, out, err = interrupt_when(argv, lambda: lines(records) >= 1, tmp_path)

    done = len(read_jsonl(records))
    assert 1 <= done < CANDIDATES
    assert interrupt_when.seconds < 10, f"took {interrupt_when.seconds:.1f} s to stop"
    assert "Stopping (Ctrl-C)" in err  # says at once that it is stopping
    line = assert_clean_error(code, out, err, 130, f"search interrupted after {done} candidates", "saved")
    assert line.startswith("Interrupted: ") and "Error:" not in err  # an interruption, not an error
    assert "Hint: run the same command again to resume" in err
    assert json.loads((run / "status" / "search.json").read_text())["state"] == "interrupted"
    assert temp_files(run) == []  # Ctrl-C inside a write removes its temporary file

    again = nascli(argv)
    assert again.returncode == 0, again.stderr[-3000:]
    result = read_table(run / "search" / "result.csv")
    reference = read_table(search_reference / "search" / "result.csv")
    assert list(result["encoding"]) == list(reference["encoding"])
    assert list(result["mIOU"]) == list(reference["mIOU"])
    assert [r["index"] for r in read_jsonl(records)] == list(range(CANDIDATES))


@pytest.mark.slow
def test_sigint_stops_a_training_that_resume_finishes(tmp_path, tiny_recipe, demo_data, train_reference):
    run = tmp_path / "run"
    metrics = train_dir(run) / "metrics.csv"
    code, out, err = interrupt_when(train_argv(run, tiny_recipe, demo_data), lambda: lines(metrics) >= 2, tmp_path)

    from nascli.engine.checkpoint import load_checkpoint

    done = load_checkpoint(train_dir(run) / "last.pth")["epoch"]  # whole epochs saved when Ctrl-C arrived
    assert 1 <= done < 3
    assert_clean_error(code, out, err, 130, f"training interrupted after {done} finished epochs", "last.pth")
    assert f"Hint: continue with `nascli train -r {run} --resume`" in err
    assert json.loads((run / "status" / "train.json").read_text())["state"] == "interrupted"

    again = nascli(["train", "-r", run, "--resume"])
    assert again.returncode == 0, again.stderr[-3000:]
    history, reference = pd.read_csv(metrics), pd.read_csv(train_dir(train_reference) / "metrics.csv")
    assert list(history["epoch"]) == [1, 2, 3]
    assert list(history["val_miou"]) == list(reference["val_miou"])
