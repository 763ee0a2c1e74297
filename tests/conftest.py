"""Shared fixtures: a tiny generated demo dataset, and the CLI run in-process with its output captured."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo dataset at 48x48: 24 train + 8 val images, seed 0 (train.txt, val.txt, classes.txt inside)."""
    from nascli.data.demo import make_demo

    return make_demo(tmp_path_factory.mktemp("demo") / "demo", seed=0, size=48, n_train=24, n_val=8)


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture) -> Callable[..., CliResult]:
    """run_cli(["data", "check", ...]) or run_cli("data", "check", ...) -> CliResult(code, stdout, stderr).

    Runs `nascli.cli.app.main` in this process (arguments str()-ed), so it is fast and a bug shows up as
    exit code 1 with `Error: internal error` on stderr rather than as a traceback.
    """
    from nascli.cli.app import main

    def run(*args) -> CliResult:
        argv = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args
        capsys.readouterr()  # drop anything printed before this call
        try:
            main([str(a) for a in argv])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


TINY_RECIPE = """\
# Small enough that a candidate trains in about a second on a laptop CPU. min_steps 0: these trainings are
# deliberately a few steps long (the defaults would raise them to 60-300 steps).
space:
  agg_size: 8
data:
  input_size: [32, 32]
candidate:
  batch_size: 8
  epochs: 1
  min_steps: 0
  cache_views: 1
threads: 1                # tiny models: one thread is faster than two fighting over busy cores
train:
  batch_size: 8
  epochs: 1
  min_steps: 0
pretrain:
  batch_size: 8
  epochs: 1
  min_steps: 0
"""


@pytest.fixture(scope="session")
def tiny_recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recipe YAML sized for tests (agg_size 8, 32x32 crops, one epoch)."""
    path = tmp_path_factory.mktemp("recipes") / "tiny.yml"
    path.write_text(TINY_RECIPE)
    return path


@pytest.fixture
def data_flags(demo_data: Path) -> list[str]:
    """The flags that point a command at the tiny demo dataset."""
    return ["--data-root", str(demo_data), "--train-list", str(demo_data / "train.txt"),
            "--val-list", str(demo_data / "val.txt")]


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Commands run in-process set torch's thread count; results depend on it, so no test may leak it."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def serial_k2(tmp_path_factory: pytest.TempPathFactory, demo_data: Path, tiny_recipe: Path) -> Path:
    """Issue 21's reference: the robustness suite's 3 + 3 search with K = 2 on the serial executor, run in a
    fresh process (tests/test_executors.py, tests/test_ray_executor.py compare other executors with it)."""
    from tests.test_executors import argv, fresh

    run = tmp_path_factory.mktemp("serial_k2") / "run"
    done = fresh(argv(run, tiny_recipe, demo_data))
    assert done.returncode == 0, done.stderr[-3000:]
    return run
