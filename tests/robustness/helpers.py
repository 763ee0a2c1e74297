"""Small helpers of the robustness suite: nascli in a fresh process, run-directory snapshots, error lines."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest

from nascli.faults import ENV as KILL_AT

NASCLI = [sys.executable, "-m", "nascli"]
BUDGET = ["--random-samples", "3", "--mutate-samples", "3"]  # candidates 0-2 random, 3-5 mutants
# One torch thread: on a machine whose cores are busy with other work, two spinning OpenMP threads make these
# tiny trainings 10-50x slower and the suite's time unpredictable.
THREADS = ["--threads", "1"]
CANDIDATES = 6
ENCODING = "_6003412160636100213"  # a small Adelaide architecture


def data_flags(data: Path) -> list[str]:
    return ["--data-root", str(data), "--train-list", str(data / "train.txt"), "--val-list", str(data / "val.txt")]


def search_argv(run: Path, recipe: Path, data: Path) -> list[str]:
    return ["search", "--algo", "adelaide-ea", "-r", str(run), "--recipe", str(recipe), *data_flags(data), *BUDGET,
            *THREADS]


def train_dir(run: Path) -> Path:
    """Where train_argv's model is trained: one folder per trained model under RUN/train."""
    return Path(run) / "train" / f"adelaide-{ENCODING.lstrip('_')}"


def train_argv(run: Path, recipe: Path, data: Path) -> list[str]:
    """A 3-epoch training of a small searched architecture: 3 optimiser steps an epoch on the demo fixture."""
    return ["train", "-r", str(run), "--recipe", str(recipe), *data_flags(data), "--encoding", ENCODING,
            "--epochs", "3", *THREADS]


def nascli(argv: list[str], *, kill_at: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m nascli ARGV` in a fresh process (stdout and stderr as text); with `kill_at`, the process
    SIGKILLs itself at that fault point (nascli.faults)."""
    return subprocess.run(NASCLI + [str(a) for a in argv], env=env(kill_at), capture_output=True, text=True,
                          timeout=timeout)


def env(kill_at: str | None = None) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != KILL_AT}
    if kill_at is not None:
        e[KILL_AT] = kill_at
    return e


def read_table(path: Path) -> pd.DataFrame:
    """A search CSV as users' tools read it: encodings stay text."""
    return pd.read_csv(path, dtype={"encoding": str, "parent": str})


def temp_files(folder: Path) -> list[Path]:
    """atomic_write's temporary files (`.NAME.XXXXXXXX.tmp`) anywhere under `folder`."""
    return sorted(p for p in Path(folder).rglob(".*.tmp") if p.is_file())


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones included) by relative path, with its bytes."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def error_lines(stderr: str) -> list[str]:
    """The one-line failure reports: `Error: ...`, or `Interrupted: ...` after Ctrl-C."""
    return [line for line in stderr.splitlines() if line.startswith(("Error:", "Interrupted:"))]


def assert_clean_error(code: int, stdout: str, stderr: str, expected_code: int, *words: str) -> str:
    """Exit `expected_code`, exactly one `Error:` line holding every word, a `Hint:` line, no traceback."""
    assert code == expected_code, f"exit {code}, expected {expected_code}: {stderr[-2000:]}"
    errors = error_lines(stderr)
    assert len(errors) == 1, stderr
    for w in words:
        assert w in errors[0], f"{w!r} not in {errors[0]!r}"
    assert any(line.startswith("Hint: ") for line in stderr.splitlines()), stderr
    assert "Traceback" not in stderr + stdout
    return errors[0]


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Make `folder` and everything in it unwritable for this process, and writable again afterwards.

    chmod does not stop root, so as root the files are made immutable (chattr +i) instead; the test is
    skipped where neither works.
    """
    folder = Path(folder)
    if os.geteuid() != 0:
        paths = [folder, *folder.rglob("*")]
        modes = {p: p.stat().st_mode for p in paths}
        for p in paths:
            p.chmod(modes[p] & ~0o222)
        try:
            yield
        finally:
            for p in paths:
                p.chmod(modes[p])
        return
    try:
        made = subprocess.run(["chattr", "-R", "+i", str(folder)], capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("cannot make a folder read-only for root here: no chattr")
    if made.returncode != 0:
        subprocess.run(["chattr", "-R", "-i", str(folder)], capture_output=True)
        pytest.skip(f"cannot make a folder read-only for root here: {made.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-R", "-i", str(folder)], check=True)
