"""`nascli models`."""

from __future__ import annotations

from nascli.errors import UsageError


def models() -> None:
    """Not available yet."""
    raise UsageError("`nascli models` is not available yet", hint="see README.md for what works today")
