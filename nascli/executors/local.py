"""The executors on this machine: `serial` (this process) and `process` (a local pool of spawned workers).

The process pool gets the frozen-encoder feature cache as memory-mapped files: the driver writes the
taps once into a folder under the search folder and every worker maps the same files, so the OS keeps
one copy in its page cache however many workers read it (no per-worker copy, nothing sent per task).
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import signal
import tempfile
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import torch

from nascli.executors.task import CandidateTask, TaskResult, WorkerHost, run_in_place, weights_name
from nascli.engine.feature_cache import SPILL_PREFIX, FeatureCache

log = logging.getLogger(__name__)

# How often a candidate is started again after its worker died, before it is recorded as failed.
MAX_RETRIES = 2


class SerialExecutor:
    """Evaluates each task when it is submitted, in this process, on the driver's own evaluator."""

    name = "serial"

    def __init__(self):
        self.evaluator, self.sdir = None, None

    def start(self, evaluator, sdir: Path) -> None:
        self.evaluator, self.sdir = evaluator, Path(sdir)
        evaluator.shared_cache()  # built where the other executors build it: before the first candidate

    def submit(self, task: CandidateTask) -> Future:
        future: Future = Future()
        try:
            future.set_result(run_in_place(self.evaluator, task, self.sdir / weights_name(task.index)))
        except Exception as e:  # KeyboardInterrupt passes through: Ctrl-C stops the search
            future.set_exception(e)
        return future

    def close(self) -> None:
        pass


# --- the process pool ------------------------------------------------------------------------------
def write_shared_cache(cache: FeatureCache, sdir: Path) -> tempfile.TemporaryDirectory:
    """The cache's tensors as raw files plus layout.json, in a folder the next FeatureCache build clears
    away if this process is killed before removing it."""
    folder = tempfile.TemporaryDirectory(prefix=SPILL_PREFIX + "shared-", dir=sdir)
    layout, tensors = cache.flat()
    shapes = []
    for i, t in enumerate(tensors):
        t.contiguous().numpy().tofile(Path(folder.name) / f"{i}.bin")
        shapes.append([list(t.shape), str(t.dtype).removeprefix("torch.")])
    (Path(folder.name) / "layout.json").write_text(json.dumps({"layout": layout, "tensors": shapes}))
    return folder


def map_shared_cache(folder: Path) -> FeatureCache:
    spec = json.loads((Path(folder) / "layout.json").read_text())
    tensors = [torch.from_file(str(Path(folder) / f"{i}.bin"), shared=True, size=math.prod(shape),
                               dtype=getattr(torch, dtype)).view(shape)
               for i, (shape, dtype) in enumerate(spec["tensors"])]
    return FeatureCache.from_flat(spec["layout"], tensors)


_HOST: WorkerHost | None = None  # this worker process's evaluator (one search per pool)


def _init_worker(evaluator, cache_dir: str | None, threads: int) -> None:
    global _HOST
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's: it stops the pool
    _die_with_parent()
    # `evaluator` is the driver's own object, sent by multiprocessing's spawn (never user data)
    _HOST = WorkerHost(evaluator, threads, map_shared_cache(Path(cache_dir)) if cache_dir else None)


def _die_with_parent() -> None:
    """A driver killed with SIGKILL takes its workers along (Linux), instead of leaving them blocked."""
    import ctypes
    import os

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the driver died before prctl
        os._exit(1)


def _run_task(task: CandidateTask) -> TaskResult:
    assert _HOST is not None, "worker not initialised"
    return _HOST.run(task)


class _PoolPending:
    def __init__(self, executor: "ProcessExecutor", task: CandidateTask):
        self.executor, self.task, self.attempts = executor, task, 1
        self.pool, self.future = executor._pool_submit(task)

    def result(self) -> TaskResult:
        while True:
            try:
                out = self.future.result()
                out.attempts = self.attempts
                return out
            except BrokenProcessPool:
                # A worker died (killed, out of memory) and every task in flight failed with it. Nothing was written
                # (workers return bytes), so each is started again, up to MAX_RETRIES times, on a new pool.
                if self.attempts > MAX_RETRIES:
                    return _lost(self.task, self.attempts, "its worker process died")
                self.executor._replace(self.pool)
                self.attempts += 1
                log.warning("candidate %d: its worker process died; starting it again (try %d of %d)",
                            self.task.index, self.attempts, MAX_RETRIES + 1)
                self.pool, self.future = self.executor._pool_submit(self.task)


def _lost(task: CandidateTask, attempts: int, why: str) -> TaskResult:
    return TaskResult(task.index, {"status": "failed", "message": f"{why} on each of {attempts} tries"}, 0.0,
                      attempts=attempts)


class ProcessExecutor:
    """A local pool of `workers` spawned processes, each with the driver's torch thread count."""

    name = "process"

    def __init__(self, *, workers: int):
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._shared: tempfile.TemporaryDirectory | None = None
        self._initargs: tuple = ()
        self._outstanding: set[Future] = set()

    def start(self, evaluator, sdir: Path) -> None:
        cache = evaluator.shared_cache()
        if cache is not None:
            self._shared = write_shared_cache(cache, Path(sdir))
        self._initargs = (evaluator, self._shared.name if self._shared else None, torch.get_num_threads())
        self._replace(None)

    def _replace(self, broken: ProcessPoolExecutor | None) -> None:
        """A new pool in place of `broken` (a broken pool takes no tasks); nothing if already replaced."""
        if self._pool is not broken:
            return
        if broken is not None:
            broken.shutdown(wait=False, cancel_futures=True)
        # spawn, not fork: the driver holds threads (torch's pools) that a forked child would inherit broken
        self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_init_worker, initargs=self._initargs)

    def _pool_submit(self, task: CandidateTask) -> tuple[ProcessPoolExecutor, Future]:
        pool = self._pool
        try:
            future = pool.submit(_run_task, task)
        except BrokenProcessPool:
            self._replace(pool)
            pool = self._pool
            future = pool.submit(_run_task, task)
        self._outstanding = {f for f in self._outstanding if not f.done()} | {future}
        return pool, future

    def submit(self, task: CandidateTask) -> _PoolPending:
        return _PoolPending(self, task)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            if any(not f.done() for f in self._outstanding):  # interrupted: stop the candidates still training
                for process in list((pool._processes or {}).values()):  # the pool has no public way to kill them
                    process.kill()
            pool.shutdown(wait=True, cancel_futures=True)
        if self._shared is not None:
            self._shared.cleanup()
            self._shared = None
