"""Fast-NAS controller (SPEC 3.2): an LSTM policy over the Adelaide encoding, trained with PPO.

Nekrasov et al., "Fast Neural Architecture Search of Compact Semantic Segmentation Models via Auxiliary
Cells", CVPR 2019 (arXiv 1810.10804). The reference controller feeds its own output back as the next
input, which makes every decision independent of the tokens sampled before it; here the next input is an
embedding of the token just sampled (one embedding table per position), so later decisions (e.g. which
merge inputs) can depend on earlier ones.

PPO as in the reference: clip 0.1, Adam 1e-4, gradient-norm clip 2, a moving-average baseline (decay
0.95; advantage = reward - baseline before this reward), `ppo_epochs` passes over the rollout buffer once
it holds `batch` samples, then the buffer is cleared.

Decisions of this implementation:
- Reward: the record's final `reward` (the stage the candidate reached: a candidate stopped after stage 1
  is rewarded with its stage-1 reward, as in the reference). A failed record (training diverged) is
  rewarded 0: the controller should learn to avoid what does not train.
- Repeats: a converging controller samples architectures it has already evaluated. Every architecture's
  reward is a function of its encoding (its training is seeded from it), so a repeat is rewarded with the
  known value without training, and sampling continues (at most `MAX_DRAWS` draws per ask) until a new
  encoding comes up; if none does, a single-position mutation of the last draw is proposed instead
  (phase `rl-fallback`). Repeats are real draws of the policy and belong in the policy gradient, so they
  enter the rollout buffer (before the new sample). `ask` changes no state: the repeats travel in the
  proposal's info (`repeats`) and are added by `tell`, so the state after record i depends on the
  records alone and a resumed search replays it exactly.
- Determinism: proposal i draws from a torch.Generator seeded from the loop's rng; the state (policy,
  Adam, baseline, buffer, known rewards) round-trips through torch.save / torch.load(weights_only=True).
"""

from __future__ import annotations

import logging
import math
import random
from typing import Sequence

import torch
from torch import nn

from nascli.config import Recipe
from nascli.seeding import derive_seed
from nascli.spaces.adelaide import AdelaideSpace
from nascli.strategies.base import Proposal

log = logging.getLogger(__name__)

MAX_DRAWS = 100  # policy draws per ask before falling back to a mutation of the last draw
INIT_RANGE = 0.1  # uniform initialisation of every controller weight, as the reference


class PolicyLSTM(nn.Module):
    """2-layer LSTM emitting one token per position; heads sized to each position's legal range."""

    def __init__(self, ranges: Sequence[int], hidden: int = 100, layers: int = 2):
        super().__init__()
        self.ranges = tuple(int(r) for r in ranges)
        self.start = nn.Parameter(torch.zeros(1, 1, hidden))  # the first input
        # embeds[i] embeds the token sampled at position i; it is the input of position i + 1.
        self.embeds = nn.ModuleList(nn.Embedding(r, hidden) for r in self.ranges[:-1])
        self.lstm = nn.LSTM(hidden, hidden, num_layers=layers, batch_first=True)
        self.heads = nn.ModuleList(nn.Linear(hidden, r) for r in self.ranges)

    def reset_parameters(self, generator: torch.Generator) -> None:
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-INIT_RANGE, INIT_RANGE, generator=generator)

    @torch.no_grad()
    def sample(self, generator: torch.Generator) -> tuple[list[int], float]:
        """One sequence of tokens and its log-probability under the current policy."""
        x, state = self.start, None
        tokens, logp = [], 0.0
        for i, head in enumerate(self.heads):
            out, state = self.lstm(x, state)
            logprobs = torch.log_softmax(head(out[:, -1]), dim=-1)[0]
            token = int(torch.multinomial(logprobs.exp(), 1, generator=generator))
            tokens.append(token)
            logp += float(logprobs[token])
            if i + 1 < len(self.heads):
                x = self.embeds[i](torch.tensor([[token]]))
        return tokens, logp

    def log_prob(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probability, entropy) per row of `actions` (B x positions, long), teacher-forced."""
        batch = actions.shape[0]
        inputs = [self.start.expand(batch, 1, -1)]
        inputs += [emb(actions[:, i : i + 1]) for i, emb in enumerate(self.embeds)]
        out, _ = self.lstm(torch.cat(inputs, dim=1))
        logp = torch.zeros(batch)
        entropy = torch.zeros(batch)
        for i, head in enumerate(self.heads):
            logprobs = torch.log_softmax(head(out[:, i]), dim=-1)
            logp = logp + logprobs.gather(1, actions[:, i : i + 1]).squeeze(1)
            entropy = entropy - (logprobs.exp() * logprobs).sum(1)
        return logp, entropy


class FastNasController:
    """ask/tell strategy: the LSTM policy samples encodings; PPO learns from their rewards."""

    name = "fast-nas"

    def __init__(self, space: AdelaideSpace, recipe: Recipe):
        self.space = space
        self.samples = recipe.search.samples
        self.cfg = recipe.fast_nas
        self.policy = PolicyLSTM(space.ranges, self.cfg.hidden)
        self.policy.reset_parameters(torch.Generator().manual_seed(derive_seed(recipe.seed, 0xC0471201)))
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.cfg.lr)
        self.baseline: float | None = None
        self.buffer: list[tuple[list[int], float, float]] = []  # (tokens, old log-prob, advantage)
        self.known: dict[str, float] = {}  # encoding -> reward fed to PPO
        self.updates = 0

    # --- ask ---------------------------------------------------------------------------------------
    def ask(self, index: int, rng: random.Random) -> Proposal | None:
        if index >= self.samples:
            return None
        gen = torch.Generator().manual_seed(rng.getrandbits(63))
        repeats: list[str] = []
        tokens: list[int] = []
        for _ in range(MAX_DRAWS):
            tokens, logp = self.policy.sample(gen)
            encoding = self.space.format(tokens)
            if encoding not in self.known:
                return Proposal(encoding, "rl", info=self._info(logp, repeats))
            repeats.append(f"{encoding}:{logp:.6f}")
        return self._fallback(self.space.format(tokens), rng, repeats)

    def _fallback(self, last: str, rng: random.Random, repeats: list[str]) -> Proposal:
        """A new neighbour of the last draw (mutating further while every neighbour tried is known)."""
        child = last
        for _ in range(MAX_DRAWS):
            child, _ = self.space.mutate(child, rng)
            if child not in self.known:
                break
        log.info("the controller drew %d known architectures in a row; proposing a mutation of %s", len(repeats), last)
        return Proposal(child, "rl-fallback", parent=last, info=self._info(self.log_prob(child), repeats))

    @staticmethod
    def _info(logp: float, repeats: list[str]) -> dict:
        return {"logp": round(logp, 6), "repeats": " ".join(repeats)}

    def log_prob(self, encoding: str) -> float:
        """Log-probability of an encoding under the current policy."""
        actions = torch.tensor([self.space.parse(encoding)], dtype=torch.long)
        with torch.no_grad():
            return float(self.policy.log_prob(actions)[0][0])

    # --- tell --------------------------------------------------------------------------------------
    def tell(self, record: dict) -> None:
        """Add the record's repeats (known rewards), then the record itself, to the rollout buffer."""
        for item in str(record.get("repeats") or "").split():
            encoding, _, logp = item.rpartition(":")
            if encoding in self.known:
                self._add(encoding, float(logp), self.known[encoding])
        reward = _reward(record)
        logp = record.get("logp")
        if logp is None or (isinstance(logp, float) and math.isnan(logp)):
            logp = self.log_prob(record["encoding"])
        self.known[self.space.canonical(record["encoding"])] = reward
        self._add(record["encoding"], float(logp), reward)

    def _add(self, encoding: str, logp: float, reward: float) -> None:
        baseline = reward if self.baseline is None else self.baseline
        self.buffer.append((list(self.space.parse(encoding)), logp, reward - baseline))
        self.baseline = self.cfg.baseline_decay * baseline + (1 - self.cfg.baseline_decay) * reward
        if len(self.buffer) >= self.cfg.batch:
            self.update()

    def update(self) -> dict:
        """`ppo_epochs` clipped-surrogate passes over the buffer, then clear it."""
        actions = torch.tensor([t for t, _, _ in self.buffer], dtype=torch.long)
        old = torch.tensor([lp for _, lp, _ in self.buffer])
        adv = torch.tensor([a for _, _, a in self.buffer])
        c = self.cfg
        for _ in range(c.ppo_epochs):
            logp, entropy = self.policy.log_prob(actions)
            ratio = torch.exp(logp - old)
            surrogate = torch.min(ratio * adv, ratio.clamp(1 - c.clip, 1 + c.clip) * adv)
            loss = -surrogate.mean() - c.entropy * entropy.mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.policy.parameters(), c.grad_clip)
            self.optimizer.step()
        self.updates += 1
        stats = {"update": self.updates, "samples": len(self.buffer), "baseline": self.baseline,
                 "mean_advantage": float(adv.mean()), "entropy": float(entropy.detach().mean())}
        log.info("PPO update %d on %d samples: baseline %.4f, entropy %.3f", self.updates, len(self.buffer),
                 self.baseline, stats["entropy"])
        self.buffer.clear()
        return stats

    # --- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "baseline": self.baseline,
            "buffer": [[list(t), lp, a] for t, lp, a in self.buffer],
            "known": dict(self.known),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline = state["baseline"]
        self.buffer = [(list(t), float(lp), float(a)) for t, lp, a in state["buffer"]]
        self.known = {str(k): float(v) for k, v in state["known"].items()}
        self.updates = int(state["updates"])


def _reward(record: dict) -> float:
    """The reward PPO sees: the record's final reward, 0 for a failed candidate."""
    if record.get("status") != "ok":
        return 0.0
    value = record.get("reward")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if math.isnan(value) else value
