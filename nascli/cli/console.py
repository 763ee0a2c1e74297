"""Printing for the CLI: results on stdout (a table, or JSON), logs and progress on stderr."""

from __future__ import annotations

import json
import logging
import math
import sys
from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

out = Console(highlight=False, soft_wrap=True)  # stdout: results
err = Console(stderr=True, highlight=False, soft_wrap=True)  # stderr: logs, progress, next-step hints
_quiet = False  # --quiet: `say` (what was written, what to run next) prints nothing; warnings still do


def setup_logging(debug: bool = False, quiet: bool = False) -> None:
    """Library code logs through `logging`; here it goes to stderr (rich on a terminal, plain text else)."""
    global _quiet
    _quiet = quiet
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    root = logging.getLogger("nascli")
    root.handlers.clear()
    if err.is_terminal:
        handler: logging.Handler = RichHandler(console=err, show_path=False, show_time=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:  # log files get no colour codes
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = _quiet or quiet  # a command's --quiet adds to the top-level one, never undoes it
    if quiet:
        logging.getLogger("nascli").setLevel(logging.WARNING)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return "" if v is None else str(v)


def print_table(rows: Sequence[dict], columns: Iterable[str] | None = None, title: str | None = None) -> None:
    columns = list(columns or (rows[0].keys() if rows else []))
    table = Table(title=title, show_lines=False)
    for c in columns:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*(_cell(r.get(c)) for c in columns))
    out.print(table)


def print_json(obj: Any) -> None:
    out.file.write(json.dumps(obj, indent=2, default=str) + "\n")
    out.file.flush()


def say(message: str) -> None:
    """A line for the person at the terminal (what was written, what to run next): stderr, none with --quiet."""
    if _quiet:
        return
    err.print(message, markup=False, highlight=False)


def warn(message: str) -> None:
    """A warning the person must see even with --quiet (e.g. a result that cannot be trusted): stderr."""
    err.print(f"Warning: {message}", markup=False, highlight=False)


def next_step(command: str) -> None:
    say(f"Next: {command}")


class LiveBar:
    """A rich progress bar on stderr when it is a terminal (nothing otherwise), one task shown at a time.

    Subclasses turn the steps' progress events into `show` calls.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.live = enabled and err.is_terminal
        self.bar = None
        self.task = None
        self.description = None

    def __enter__(self):
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=err)
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def show(self, description: str, done: int, total: int, info: str) -> None:
        if self.bar is None:
            return
        if description != self.description:
            if self.task is not None:
                self.bar.remove_task(self.task)
            self.task = self.bar.add_task(description, total=total, info=info)
            self.description = description
        self.bar.update(self.task, completed=done, total=total, info=info)
