"""`nascli eval`."""

from __future__ import annotations

from nascli.errors import UsageError


def eval_cmd() -> None:
    """Not available yet."""
    raise UsageError("`nascli eval` is not available yet", hint="see README.md for what works today")
