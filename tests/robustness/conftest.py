"""Fixtures of the robustness suite (tests/conftest.py has the demo data and the tiny recipe)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import nascli, read_table, search_argv


@pytest.fixture(scope="session")
def search_reference(tmp_path_factory: pytest.TempPathFactory, demo_data: Path, tiny_recipe: Path) -> Path:
    """One uninterrupted 3 + 3 search, run as a fresh process like the interrupted ones it is compared with
    (a long-lived test process differs from a fresh one in native thread-pool state)."""
    run = tmp_path_factory.mktemp("reference") / "run"
    done = nascli(search_argv(run, tiny_recipe, demo_data))
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(read_table(run / "search" / "result.csv")) == 6
    return run


@pytest.fixture(scope="session")
def train_reference(tmp_path_factory: pytest.TempPathFactory, demo_data: Path, tiny_recipe: Path) -> Path:
    """One uninterrupted 3-epoch `train --encoding` in a fresh process."""
    from .helpers import train_argv

    run = tmp_path_factory.mktemp("train_reference") / "run"
    done = nascli(train_argv(run, tiny_recipe, demo_data))
    assert done.returncode == 0, done.stderr[-3000:]
    return run
