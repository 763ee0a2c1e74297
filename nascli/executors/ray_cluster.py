"""`--executor ray`: candidates as Ray core tasks on a cluster (`--address host:port|auto`) or on a local
cluster this command starts and stops itself.

Why core tasks and not Ray Tune: the loop needs results in index order and its own resumable strategy
state; Tune reports in finish order and keeps searcher state of its own.

What workers share: the driver's evaluator and the frozen-encoder feature cache go into Ray's object store
once (`ray.put`); each worker process fetches them on its first task and keeps them for the rest of the
search. On a node the object store is shared memory, so the cache's arrays are mapped, not copied, into
every worker there; across nodes Ray moves them once per node, so no shared filesystem is needed (the
process executor's memory-mapped files would need one). Full-mode training reads the images, so there
every node needs the data at the same path.

Safe defaults: an address where nothing listens fails at once with one line (Ray would keep retrying);
token authentication is on unless the environment says otherwise (RAY_AUTH_MODE, Ray 2.52+); a local
cluster binds to 127.0.0.1, has no dashboard, and is stopped by `ray.shutdown()` in this process, never
by `ray stop`, which would stop every cluster of the user. A worker that dies mid-candidate (killed, its
node lost) is retried by Ray up to MAX_RETRIES times, then the candidate is recorded as failed.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import uuid
from pathlib import Path

from nascli.errors import NascliError, UsageError
from nascli.executors.task import CandidateTask, TaskResult, WorkerHost
from nascli.faults import ENV as FAULT_ENV, ONCE_ENV as FAULT_ONCE_ENV

log = logging.getLogger(__name__)

MAX_RETRIES = 2
CONNECT_TIMEOUT_S = 5.0
INSTALL_HINT = "pip install nascli[ray]"


def import_ray():
    """Ray, or a one-line error naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise UsageError("option --executor ray: Ray is not installed", hint=f"install the extra: {INSTALL_HINT}") from None
    return ray


def check_listening(address: str) -> None:
    """Fail fast on host:port where nothing accepts connections."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"option --address: {address!r} is not host:port or auto",
                         hint="give the head node's GCS address, e.g. --address 10.0.0.5:6379, or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise UsageError(f"option --address: nothing listens at {address} ({reason})",
                         hint="start the head there (`ray start --head --port PORT`), or drop --address to run a "
                              "local cluster") from None


# This worker process's evaluator, by search: a driver (one Ray job) may run several searches on one cluster.
_HOST: tuple[str, WorkerHost] | None = None


def _evaluate(job: list, task: CandidateTask) -> TaskResult:
    """The Ray task: the job's refs come wrapped in a list so Ray does not fetch them for every task."""
    global _HOST
    token, evaluator_ref, cache_ref, threads = job
    if _HOST is None or _HOST[0] != token:
        import ray

        from nascli.engine.feature_cache import FeatureCache

        if _HOST is not None:
            _HOST[1].close()
            _HOST = None
        cache = None
        if cache_ref is not None:
            import warnings

            import torch

            layout, arrays = ray.get(cache_ref)
            with warnings.catch_warnings():  # read-only shared memory: the cache is only ever read
                warnings.simplefilter("ignore", UserWarning)
                cache = FeatureCache.from_flat(layout, [torch.from_numpy(a) for a in arrays])
        _HOST = token, WorkerHost(ray.get(evaluator_ref), threads, cache)
    return _HOST[1].run(task)


class _RayPending:
    def __init__(self, ref, task: CandidateTask):
        self.ref, self.task = ref, task

    def result(self) -> TaskResult:
        import ray
        from ray import exceptions as rx

        try:
            return ray.get(self.ref)
        except (rx.WorkerCrashedError, rx.NodeDiedError, rx.OutOfMemoryError, rx.ObjectLostError) as e:
            why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            log.warning("candidate %d: lost its Ray worker %d times (%s); recorded as failed", self.task.index,
                        MAX_RETRIES + 1, why)
            return TaskResult(self.task.index, {"status": "failed", "message": f"its Ray worker died on each of "
                                                f"{MAX_RETRIES + 1} tries ({type(e).__name__})"}, 0.0,
                              attempts=MAX_RETRIES + 1)
        except rx.RayTaskError as e:  # the candidate itself raised: the same error a serial search gives
            cause = e.cause if isinstance(getattr(e, "cause", None), BaseException) else None
            if isinstance(cause, (NascliError, ValueError, RuntimeError)):
                raise cause from None
            raise


class RayExecutor:
    name = "ray"

    def __init__(self, *, address: str | None, workers: int, gpus_per_task: float = 0.0):
        self.address, self.workers, self.gpus = address, workers, gpus_per_task
        self.threads = 1
        self._owns_cluster = False
        self._remote = None
        self._job: list = []
        if address not in (None, "auto"):
            check_listening(address)  # before importing Ray: the cheap check first
        if "ray" not in sys.modules:  # both are read when Ray is imported: too late once it is
            os.environ.setdefault("RAY_AUTH_MODE", "token")
            if address is None:
                # A local cluster on loopback only: Ray binds the node's public address unless this says "no
                # cluster" (its switch for single-node Windows/macOS, which is what a local cluster is).
                os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        self.ray = import_ray()

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():  # a caller (a notebook, a test) already holds a cluster: use it, leave it
            return
        try:
            if self.address is None:
                ray.init(num_cpus=self.workers * self.threads, num_gpus=None, include_dashboard=False,
                         _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False)
                self._owns_cluster = True
                log.info("started a local Ray cluster (%d CPUs) on 127.0.0.1", self.workers * self.threads)
            else:
                ray.init(address=self.address, log_to_driver=False, configure_logging=False)
                log.info("connected to the Ray cluster at %s", self.address)
        except (ConnectionError, RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            where = f"--address {self.address}" if self.address else "the local cluster"
            raise UsageError(f"option --executor ray: cannot start or reach {where} ({first})",
                             hint="check the address (`ray status` on the head) and RAY_AUTH_MODE/RAY_AUTH_TOKEN; "
                                  "drop --address for a local cluster") from None

    def start(self, evaluator, sdir: Path) -> None:
        import torch

        self.threads = torch.get_num_threads()  # each task sets the driver's count and asks for that many CPUs
        self._connect()
        ray = self.ray
        cache = evaluator.shared_cache()
        cache_ref = None
        if cache is not None:
            layout, tensors = cache.flat()
            cache_ref = ray.put((layout, [t.contiguous().numpy() for t in tensors]))
        self._job = [uuid.uuid4().hex, ray.put(evaluator), cache_ref, self.threads]
        # Test hook (nascli.faults): a kill point set for this command reaches the workers too.
        env = {k: os.environ[k] for k in (FAULT_ENV, FAULT_ONCE_ENV) if k in os.environ}
        self._remote = ray.remote(_evaluate).options(
            num_cpus=self.threads, num_gpus=self.gpus, max_retries=MAX_RETRIES, retry_exceptions=False,
            **({"runtime_env": {"env_vars": env}} if env else {}))

    def submit(self, task: CandidateTask) -> _RayPending:
        return _RayPending(self._remote.remote(self._job, task), task)

    def close(self) -> None:
        self._job, self._remote = [], None
        if self._owns_cluster:
            self.ray.shutdown()  # the cluster this process started; `ray stop` would stop all of the user's
            self._owns_cluster = False
