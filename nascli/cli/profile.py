"""`nascli profile`."""

from __future__ import annotations

from nascli.errors import UsageError


def profile() -> None:
    """Not available yet."""
    raise UsageError("`nascli profile` is not available yet", hint="see README.md for what works today")
