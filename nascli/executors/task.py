"""One candidate as a unit of work, and the worker side that runs it on a copy of the driver's evaluator.

A worker gets the driver's evaluator once (pickled: a process pool's initializer, Ray's object store)
and the feature cache the driver built, and keeps both for every later task of the search. It trains
into a scratch folder laid out like the search folder (so a decoder-only checkpoint's relative path to
the shared encoder is the one the driver's copy would hold) and returns the weights' bytes.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass(frozen=True)
class CandidateTask:
    """What a worker needs for one candidate besides the evaluator: plain data, cheap to send."""

    index: int
    encoding: str
    seed: int
    observed: dict = field(default_factory=dict)  # the evaluator's observed state at submit (evaluator.observed_state)


@dataclass
class TaskResult:
    index: int
    result: dict  # train_and_eval's fields: status, metrics, train_seconds, ...
    seconds: float
    weights: bytes | None = None  # None: no weights, or already written in place (serial)
    attempts: int = 1


def weights_name(index: int) -> str:
    """Where candidate `index`'s weights go, relative to the search folder."""
    return f"candidates/{index:04d}/weights.pth"


def run_in_place(evaluator, task: CandidateTask, weights: Path) -> TaskResult:
    """The task on the driver's own evaluator, weights written straight to their place (serial executor)."""
    started = time.perf_counter()
    result = evaluator.train_and_eval(task.encoding, task.seed, weights)
    return TaskResult(task.index, result, round(time.perf_counter() - started, 2))


class WorkerHost:
    """A worker's copy of the evaluator, its thread count set, the shared feature cache attached."""

    def __init__(self, evaluator, threads: int, cache=None):
        torch.set_num_threads(threads)  # each worker sets its own: results depend on it (runtime.json)
        self.evaluator = evaluator
        if cache is not None:
            evaluator.use_cache(cache)
        self.scratch = Path(tempfile.mkdtemp(prefix="nascli-worker-"))
        if getattr(evaluator, "encoder_file", None) is not None:
            # checkpoints store the encoder's path relative to themselves: the same relative path here
            evaluator.encoder_file = self.scratch / Path(evaluator.encoder_file).name

    def run(self, task: CandidateTask) -> TaskResult:
        if task.observed:
            self.evaluator.load_observed_state(task.observed)
        path = self.scratch / weights_name(task.index)
        started = time.perf_counter()
        result = self.evaluator.train_and_eval(task.encoding, task.seed, path)
        data = path.read_bytes() if path.exists() else None
        shutil.rmtree(path.parent, ignore_errors=True)
        return TaskResult(task.index, result, round(time.perf_counter() - started, 2), data)

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)
