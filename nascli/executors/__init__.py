"""Where candidates are evaluated: in this process, a local process pool, or a Ray cluster (SPEC 6).

The search loop owns the order: it asks up to `search.parallel` (K) proposals, submits each as a
`CandidateTask`, and waits for the results in index order, so the records depend on (seed, K) and not
on which backend ran them, how many workers there are or what finished first. An executor only runs
tasks: `start(evaluator, sdir)` once before the first task (the driver builds what workers share, e.g.
the feature cache; workers run the driver's torch thread count), `submit(task)` -> a `Pending` whose `result()` blocks, `close()` at the end. Workers
never write to the run directory: they return the record's fields and the weights' bytes, and the
driver writes both (steps/search.py).
"""

from __future__ import annotations

from typing import Protocol

from nascli.errors import UsageError
from nascli.executors.task import CandidateTask, TaskResult

__all__ = ["EXECUTORS", "CandidateTask", "Executor", "Pending", "TaskResult", "make_executor"]

EXECUTORS = ("serial", "process", "ray")


class Pending(Protocol):
    def result(self) -> TaskResult:
        """Block until the task's result is here (a worker lost for good gives a `failed` result)."""


class Executor(Protocol):
    name: str

    def start(self, evaluator, sdir) -> None: ...

    def submit(self, task: CandidateTask) -> Pending: ...

    def close(self) -> None: ...


def make_executor(name: str, *, parallel: int = 1, workers: int | None = None, address: str | None = None,
                  gpus_per_task: float = 0.0) -> Executor:
    """The executor `--executor NAME` names, with `workers` worker processes (default: K = `parallel`).

    Checks what it can without starting anything (options, an address where nothing listens), so a wrong
    command fails before the run directory is locked. Workers run the driver's torch thread count."""
    if name not in EXECUTORS:
        raise UsageError(f"option --executor: unknown executor {name!r}", hint=f"use one of {', '.join(EXECUTORS)}")
    if address is not None and name != "ray":
        raise UsageError(f"option --address: only --executor ray connects to a cluster (this is {name})",
                         hint="add --executor ray, or drop --address")
    if gpus_per_task and name != "ray":
        raise UsageError(f"option --gpus-per-task: only --executor ray schedules GPUs per task (this is {name})",
                         hint="add --executor ray, or use --device for the other executors")
    if workers is not None and workers < 1:
        raise UsageError(f"option --workers: {workers} is not a positive number", hint="give 1 or more")
    if name == "serial":
        if workers not in (None, 1):
            raise UsageError("option --workers: the serial executor has one worker, this process",
                             hint="add --executor process (or ray) to run several")
        from nascli.executors.local import SerialExecutor

        return SerialExecutor()
    if name == "process":
        from nascli.executors.local import ProcessExecutor

        return ProcessExecutor(workers=workers or parallel)
    from nascli.executors.ray_cluster import RayExecutor

    return RayExecutor(address=address, workers=workers or parallel, gpus_per_task=gpus_per_task)
