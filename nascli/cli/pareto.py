"""`nascli pareto`."""

from __future__ import annotations

from nascli.errors import UsageError


def pareto() -> None:
    """Not available yet."""
    raise UsageError("`nascli pareto` is not available yet", hint="see README.md for what works today")
