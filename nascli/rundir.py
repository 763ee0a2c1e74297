"""The run directory: where every step reads its inputs and writes its outputs.

Layout (each step owns one sub-folder and one status file; later steps find earlier outputs here):

    RUN/
      .lock                    held (flock) by the one process writing this run directory
      status/<step>.json       state of each step: running | done | failed | interrupted
      pretrain/encoder.pth     pretrain-backbone: encoder weights (+ metrics.csv, config.yaml)
      search/config.yaml       search: the resolved recipe (a re-run must match it to resume)
      search/records.jsonl     search: one JSON line per finished candidate, append-only
      search/proposals.jsonl   search: one JSON line per proposal, appended before it is submitted
      search/strategy.pt       search: strategy state after the last told record
      search/runtime.json      search: threads and device the records were made with (a resume must match)
      search/candidates/NNNN/  search: record.json + weights.pth of candidate NNNN
      search/result.csv        search: every candidate (rewritten from records.jsonl)
      search/pareto_front.csv  search: the non-dominated candidates
      train/latest.json        train: which model was trained last (nascli.steps.trained)
      train/<model>/           train: last.pth best.pth (rebuild their model), metrics.csv, config.yaml
      eval/<checkpoint>-<list>/   eval: metrics.json (mIoU & co) and per_class.csv
      profile/<checkpoint>-<HxW>-<device>.json   profile: params, MACs, latency
      export/<model>/model.onnx   export: ONNX model (+ export.json)
      pareto/pareto.csv .png   pareto: front table and plot

All writes go through `atomic_*` (temporary file in the same folder, fsync, `os.replace`), so a crash
leaves either the old or the new version of a file, never half of one. A writer killed between the two
leaves its `.NAME.XXXXXXXX.tmp` behind; the next step to take the lock removes those in the folders it
writes (the run directory's top level, status/ and its own sub-folder).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import io
import json
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from nascli.errors import Interrupted, NascliError, RunDirError
from nascli.faults import fault_point

log = logging.getLogger(__name__)

STEPS = ("pretrain", "search", "train", "eval", "profile", "export", "pareto")


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# OS errors that mean "this place cannot be written" (permissions, read-only file system, disk full): a user's
# problem with a one-line RunDirError (exit 5), not an internal error.
_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        if e.errno not in _UNWRITABLE:
            raise
        raise RunDirError(f"cannot write {path} ({e.strerror})",
                          hint="make that folder writable or free disk space, or use another -r/--run-dir") from None


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], Any]) -> None:
    """Call `write(f)` on a temporary file beside `path`, then move it over `path` in one step."""
    path = Path(path)
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            fault_point(f"atomic_write:{path.name}")
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    _fsync_dir(path.parent)


# What atomic_write's temporary files are called: `.NAME.` + mkstemp's 8 random characters + `.tmp`.
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def remove_stale_temps(folder: Path, recursive: bool = True) -> int:
    """Delete the temporary files that writers killed mid-write left in `folder`; returns how many.

    Only safe while holding the run directory's lock: then no other nascli process is writing there.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for p in folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp"):
        if _TEMP_NAME.match(p.name) and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
                removed += 1
    return removed


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_jsonl(path: Path, record: dict) -> None:
    """Append one record as one line and fsync it, first cutting off a torn last line if a crash left one."""
    path = Path(path)
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab+") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # torn write: drop the partial line so the file stays one record a line
                    f.seek(0)
                    data = f.read()
                    f.truncate(data.rfind(b"\n") + 1)
            f.seek(0, os.SEEK_END)
            f.write((json.dumps(record, sort_keys=False) + "\n").encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict]:
    """Read the complete lines of an append-only record file (a torn last line is ignored)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    data = path.read_bytes()
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # the torn last line of a killed writer
                break
            raise RunDirError(f"{path}:{i + 1}: corrupt record line",
                              hint="the file was edited by hand or the disk is damaged; restore it or start a new run directory") from None
    return records


class RunDir:
    """Paths and bookkeeping of one run directory. Use `with run.lock(step):` around any writing."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock_file = None

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def sub(self, step: str) -> Path:
        return self.path / step

    def file(self, step: str, name: str) -> Path:
        return self.path / step / name

    # --- locking -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, step: str) -> Iterator["RunDir"]:
        """Hold the run directory for `step`; a second process gets a one-line RunDirError."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            f = open(self.path / ".lock", "a+")
        except OSError as e:
            raise RunDirError(f"run directory {self.path} is not writable ({e.strerror})",
                              hint="choose a run directory you can write with -r/--run-dir") from None
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise RunDirError(f"run directory {self.path} is in use by {holder}",
                                  hint="wait for that process to finish, or use another -r/--run-dir") from None
            raise
        f.seek(0)
        f.truncate()
        f.write(f"nascli {step} (pid {os.getpid()})\n")
        f.flush()
        self._lock_file = f
        try:
            # A writer killed between writing its temporary file and renaming it leaves that file behind; the
            # lock holder owns the run directory, so what is left in the folders this step writes is stale.
            removed = sum(remove_stale_temps(folder, recursive) for folder, recursive in
                          ((self.path, False), (self.path / "status", False), (self.sub(step), True)))
            if removed:
                log.info("removed %d temporary file(s) left by an interrupted write in %s", removed, self.path)
            yield self
        finally:
            self._lock_file = None
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            f.close()

    def check_free(self) -> None:
        """Fail now (one line) if another process holds this run directory, before any slow check runs;
        creates nothing. Taking the lock later can still fail if a process starts in between."""
        lock = self.path / ".lock"
        if not lock.is_file():
            return
        try:
            f = open(lock, "r")
        except OSError:
            return  # unreadable here: `lock` itself reports it
        with f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    holder = f.read().strip() or "another process"
                    raise RunDirError(f"run directory {self.path} is in use by {holder}",
                                      hint="wait for that process to finish, or use another -r/--run-dir") from None
                return
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    # --- status --------------------------------------------------------------------------------
    def status_path(self, step: str) -> Path:
        return self.path / "status" / f"{step}.json"

    def read_status(self, step: str) -> dict | None:
        p = self.status_path(step)
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def write_status(self, step: str, state: str, **extra: Any) -> None:
        status = self.read_status(step) or {}
        status.update(step=step, state=state, updated=now_iso(), pid=os.getpid(), argv=sys.argv[1:])
        if state == "running":
            status["started"] = status["updated"]
            status.pop("message", None)
        status.update(extra)
        atomic_write_json(self.status_path(step), status)

    @contextlib.contextmanager
    def step(self, step: str, *, interrupted: str | Callable[[], tuple[str, str]], **info: Any) -> Iterator[dict]:
        """Hold the lock for `step` and keep status/<step>.json true from start to end.

        Writes `running` (with `info`), then `done` with whatever the step put in the yielded dict,
        `failed` with the error, or `interrupted` on Ctrl-C, which becomes an `Interrupted` error whose
        message is `interrupted` (or `interrupted()` -> (message, hint), evaluated at that moment).
        """
        with self.lock(step):
            self.write_status(step, "running", **info)
            done: dict = {}
            try:
                yield done
            except KeyboardInterrupt:
                message, hint = interrupted() if callable(interrupted) else (interrupted, "run the same command again")
                self._final_status(step, "interrupted", message)
                raise Interrupted(message, hint=hint) from None
            except NascliError as e:
                self._final_status(step, "failed", e.message)
                raise
            except Exception as e:
                self._final_status(step, "failed", f"{type(e).__name__}: {e}")
                raise
            self.write_status(step, "done", **done)

    def _final_status(self, step: str, state: str, message: str) -> None:
        # The step already failed; a status file that cannot be written must not hide why.
        with contextlib.suppress(OSError, NascliError):
            self.write_status(step, state, message=message)

    def require(self, path: Path, step: str, flag: str) -> Path:
        """Return `path` if an earlier step made it; otherwise name the step (or flag) that would."""
        if not path.exists():
            raise RunDirError(f"{path} not found: the run directory has no finished `{step}` step",
                              hint=f"run `nascli {step} -r {self.path}` first, or pass {flag}")
        return path
