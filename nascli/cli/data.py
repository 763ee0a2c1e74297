"""`nascli data check|demo`."""

from __future__ import annotations

import typer

app = typer.Typer(help="Check a list-file dataset, or make the built-in demo dataset.", no_args_is_help=True)
