"""Random search and SEGMENTATION-Adelaide-EA-NAS (Vega): a random phase, then single-position mutation
of parents drawn uniformly from the current Pareto front (SPEC 3.1)."""

from __future__ import annotations

import random

import numpy as np

from nascli.pareto.front import OBJECTIVES, non_dominated
from nascli.spaces.adelaide import AdelaideSpace
from nascli.strategies.base import Proposal


class RandomSearch:
    """Uniform samples from the space (the baseline every NAS method must beat)."""

    name = "random"

    def __init__(self, space: AdelaideSpace, samples: int):
        self.space = space
        self.samples = samples

    def ask(self, index: int, rng: random.Random) -> Proposal | None:
        if index >= self.samples:
            return None
        return Proposal(self.space.sample(rng), "random")

    def tell(self, record: dict) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class AdelaideEA:
    """`random_samples` uniform samples, then `mutate_samples` children: each child copies a parent drawn
    uniformly from the Pareto front of everything evaluated so far and changes exactly one position.

    The search asks again for the same index when a proposal was a duplicate (or over budget). After
    `FALLBACK_AFTER` such asks the child is a uniform sample instead ("mutate-fallback"): in a small space
    (EfficientDet's has tens of networks) a one-member front's every neighbour can already be evaluated,
    and mutating it again could never give a new candidate."""

    name = "adelaide-ea"
    FALLBACK_AFTER = 10

    def __init__(self, space: AdelaideSpace, random_samples: int, mutate_samples: int, objectives: list[str]):
        self.space = space
        self.random_samples = random_samples
        self.mutate_samples = mutate_samples
        self.objectives = list(objectives)
        self.history: list[tuple[str, list[float]]] = []  # (encoding, signed objective values) of ok records
        self._asks = (-1, 0)  # (index, how many times it was asked): not state, it restarts with each index

    def ask(self, index: int, rng: random.Random) -> Proposal | None:
        if index >= self.random_samples + self.mutate_samples:
            return None
        self._asks = (index, self._asks[1] + 1 if self._asks[0] == index else 1)
        front = self.front() if index >= self.random_samples else []
        if not front or self._asks[1] > self.FALLBACK_AFTER:  # random phase, nothing to mutate, or stuck
            return Proposal(self.space.sample(rng), "random" if index < self.random_samples else "mutate-fallback")
        parent = rng.choice(front)
        child, pos = self.space.mutate(parent, rng)
        return Proposal(child, "mutate", parent=parent, info={"mutated_position": pos})

    def front(self) -> list[str]:
        """Encodings of the non-dominated evaluated candidates, in evaluation order."""
        points = np.array([v for _, v in self.history], dtype=float)
        keep = non_dominated(points)
        return [e for (e, _), k in zip(self.history, keep) if k]

    def tell(self, record: dict) -> None:
        if record.get("status") != "ok":
            return
        values = []
        for name in self.objectives:
            column, sign = OBJECTIVES[name]
            v = record.get(column)
            values.append(float("nan") if v is None else sign * float(v))
        self.history.append((record["encoding"], values))

    def state_dict(self) -> dict:
        return {"history": [[e, v] for e, v in self.history], "objectives": self.objectives}

    def load_state_dict(self, state: dict) -> None:
        self.history = [(e, list(v)) for e, v in state.get("history", [])]
