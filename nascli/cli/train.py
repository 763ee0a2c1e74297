"""`nascli train`."""

from __future__ import annotations

from nascli.errors import UsageError


def train() -> None:
    """Not available yet."""
    raise UsageError("`nascli train` is not available yet", hint="see README.md for what works today")
