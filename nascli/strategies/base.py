"""Ask/tell interface shared by every search strategy.

A strategy sees only encodings and records (plain dicts of numbers); the search loop owns the rest:
it asks for proposal i with a random.Random seeded from (seed, i), rejects duplicates and infeasible
ones (asking again with the same rng, so retries are deterministic too), evaluates, appends the record,
tells the strategy and saves its `state_dict()`. Resume = load the state, tell the records after it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class Proposal:
    encoding: str
    phase: str  # "random", "mutate", "rl", ...
    parent: str | None = None
    info: dict[str, Any] = field(default_factory=dict)  # strategy-specific, stored in the record


class Strategy(Protocol):
    name: str

    def ask(self, index: int, rng: random.Random) -> Proposal | None:
        """Proposal number `index` (0-based over evaluated candidates), or None when the budget is spent."""

    def tell(self, record: dict) -> None:
        """The finished record of a proposal (status 'ok' or 'failed'), in index order."""

    def state_dict(self) -> dict:
        """Everything needed to continue after `tell`: plain data and tensors only."""

    def load_state_dict(self, state: dict) -> None: ...
