"""`nascli pretrain-backbone`."""

from __future__ import annotations

from nascli.errors import UsageError


def pretrain_backbone() -> None:
    """Not available yet."""
    raise UsageError("`nascli pretrain-backbone` is not available yet", hint="see README.md for what works today")
