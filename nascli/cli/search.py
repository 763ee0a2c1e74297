"""`nascli search`."""

from __future__ import annotations

from nascli.errors import UsageError


def search() -> None:
    """Not available yet."""
    raise UsageError("`nascli search` is not available yet", hint="see README.md for what works today")
