"""Run directory: lock, atomic writes, append-only records, status files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nascli.errors import RunDirError
from nascli.rundir import RunDir, append_jsonl, atomic_write_text, read_jsonl

HOLD_LOCK = """
import sys, time
from nascli.rundir import RunDir
with RunDir(sys.argv[1]).lock("search"):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_second_process_gets_a_one_line_error(tmp_path, run_cli, tiny_recipe, data_flags):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match=r"in use by nascli search \(pid \d+\)"):
            with RunDir(run).lock("train"):
                pass
        r = run_cli(["search", "-r", run, "--recipe", tiny_recipe, *data_flags, "--random-samples", "1",
                     "--mutate-samples", "0"])
        assert r.code == 5
        errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
        assert errors == [f"Error: run directory {run} is in use by nascli search (pid {holder.pid})"]
        assert "Traceback" not in r.stderr
        assert not (run / "search").exists()  # nothing was written
    finally:
        holder.kill()
        holder.wait()
    with RunDir(run).lock("train"):  # a killed holder releases the lock
        pass


def test_lock_is_reentrant_across_sequential_uses(tmp_path):
    run = RunDir(tmp_path / "run")
    for step in ("search", "train"):
        with run.lock(step):
            run.write_status(step, "running")
            run.write_status(step, "done", candidates=3)
    status = run.read_status("train")
    assert status["state"] == "done" and status["candidates"] == 3 and "started" in status


def test_atomic_write_keeps_old_version_when_writer_fails(tmp_path):
    from nascli.rundir import atomic_write

    path = tmp_path / "result.csv"
    atomic_write_text(path, "old\n")

    def broken(f):
        f.write(b"new, half writ")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, broken)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["result.csv"]  # no temporary file left behind


def test_jsonl_ignores_and_repairs_a_torn_last_line(tmp_path):
    path = tmp_path / "records.jsonl"
    append_jsonl(path, {"index": 0})
    append_jsonl(path, {"index": 1})
    with open(path, "ab") as f:
        f.write(b'{"index": 2, "enc')  # a writer killed mid-line
    assert read_jsonl(path) == [{"index": 0}, {"index": 1}]
    append_jsonl(path, {"index": 2})
    assert read_jsonl(path) == [{"index": 0}, {"index": 1}, {"index": 2}]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_corrupt_middle_line_is_an_error(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"index": 0}\nnot json\n{"index": 2}\n')
    with pytest.raises(RunDirError, match="records.jsonl:2"):
        read_jsonl(path)


def test_read_only_run_directory_is_a_clear_error(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(RunDirError, match="not writable"):
        with RunDir(ro / "run").lock("search"):
            pass
