"""A test hook: kill this process with SIGKILL at a named point, to prove crash safety deterministically.

    NASCLI_KILL_AT=NAME      the process SIGKILLs itself the first time `fault_point(NAME)` runs
    NASCLI_KILL_AT=NAME:N    ... the N-th time (1-based)

Points in the code (tests/robustness uses them): `cache_batch` (a batch of the feature cache encoded),
`train_step` (an optimiser step done, candidate training or `train`), `search_trained` (a candidate
trained and its weights saved, its record.json not yet written), `search_recorded` (record.json written,
records.jsonl not yet appended), `search_appended` (records.jsonl appended, strategy state and CSVs not
yet rewritten), `atomic_write:FILENAME` (the temporary file of FILENAME written and fsynced, not yet
renamed over the target), `supernet_step` / `supernet_arch_step` (a proxyless supernet's weight / architecture
step done, its checkpoint maybe not yet written). A NAME may itself contain ':'; a trailing ':digits' is the count.

    NASCLI_KILL_ONCE=FILE    ... and only in the first process to get there (it creates FILE): a worker
                             started again after the kill gets past the point (tests of worker loss)

Not a user feature: without the variable a point costs one dict lookup. The variable is read once, at
import, so a process decides at start whether (and where) it dies.
"""

from __future__ import annotations

import os
import signal

ENV = "NASCLI_KILL_AT"
ONCE_ENV = "NASCLI_KILL_ONCE"


def _parse(value: str) -> tuple[str, int] | None:
    if not value:
        return None
    name, sep, count = value.rpartition(":")
    if sep and name and count.isdigit() and int(count) >= 1:
        return name, int(count)
    return value, 1


_target = _parse(os.environ.get(ENV, ""))
_seen: dict[str, int] = {}
_armed: dict[str, int] = {_target[0]: _target[1]} if _target else {}


def fault_point(name: str) -> None:
    """Die here (SIGKILL, no cleanup, no atexit) when NASCLI_KILL_AT names this point and count."""
    if name not in _armed:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] == _armed[name] and _first_to_die():
        os.kill(os.getpid(), signal.SIGKILL)


def _first_to_die() -> bool:
    marker = os.environ.get(ONCE_ENV)
    if not marker:
        return True
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True
