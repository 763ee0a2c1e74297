"""`nascli export`."""

from __future__ import annotations

from nascli.errors import UsageError


def export() -> None:
    """Not available yet."""
    raise UsageError("`nascli export` is not available yet", hint="see README.md for what works today")
