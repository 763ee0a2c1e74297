"""The one table from `--algo` to what a search is made of (SPEC 5): task, space, strategy, evaluator.

`steps/search.py` looks an algorithm up here and never branches on its name: a new algorithm is a new
row (and its own files: a space in `spaces/`, a builder in `zoo/`, a strategy or a supernet evaluator),
not an `if` in the loop. Factories import lazily, so reading the table costs nothing and a row's heavy
modules load only when that algorithm runs.

A row's parts:
- `space(recipe)`: the codec (no torch) whose `canonical()` is the dedup and CSV key;
- `strategy(recipe, space, evaluator)`: ask/tell over that space. A one-shot algorithm's strategy asks its
  evaluator (a supernet evaluator) for the subnets its trained distribution proposes;
- `evaluator(recipe, space, **context)`: an encoding in, a record out (`CandidateEvaluator`'s interface);
- `budget(recipe)`: how many candidates the search records;
- `section`: the recipe section holding the algorithm's own settings (None: only the shared ones);
- `check(recipe)`: fail-fast checks run before the run directory is locked (None: nothing to check);
- `shared_encoder`: the search prepares nascli's MobileNetV2 encoder (`pretrain-backbone` applies) and
  passes it to the evaluator as `encoder_state`/`encoder_file`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable

from nascli.errors import UsageError


@dataclass(frozen=True)
class Algorithm:
    name: str
    task: str
    summary: str
    space: Callable[[Any], Any]
    strategy: Callable[[Any, Any, Any], Any]
    evaluator: Callable[..., Any]
    budget: Callable[[Any], int]
    section: str | None = None
    check: Callable[[Any], None] | None = None
    shared_encoder: bool = True


# --- the Adelaide decoder space (SPEC 3.1, 3.2) ------------------------------------------------------
def _adelaide_space(recipe):
    from nascli.spaces.adelaide import AdelaideSpace

    return AdelaideSpace(recipe.space.op_names)


def _adelaide_ea(recipe, space, evaluator):
    from nascli.strategies.evolution import AdelaideEA

    s = recipe.search
    return AdelaideEA(space, s.random_samples, s.mutate_samples, s.objectives)


def _random(recipe, space, evaluator):
    from nascli.strategies.evolution import RandomSearch

    s = recipe.search
    return RandomSearch(space, s.random_samples + s.mutate_samples)


def _fast_nas(recipe, space, evaluator):
    from nascli.strategies.rl import FastNasController

    return FastNasController(space, recipe)


def _candidate_evaluator(recipe, space, **kwargs):
    from nascli.engine.evaluator import CandidateEvaluator

    return CandidateEvaluator(recipe=recipe, num_classes=recipe.data.num_classes, **kwargs)


def _progressive_evaluator(recipe, space, **kwargs):
    from nascli.engine.progressive import ProgressiveEvaluator

    return ProgressiveEvaluator(recipe=recipe, num_classes=recipe.data.num_classes, **kwargs)


def _check_teacher(recipe) -> None:
    if recipe.fast_nas.teacher is not None:
        from nascli.engine.progressive import load_teacher

        load_teacher(recipe.fast_nas.teacher, recipe.data.num_classes)  # fail now, not after the lock and the cache


def _two_phase_budget(recipe) -> int:
    return recipe.search.random_samples + recipe.search.mutate_samples


# --- the proxyless chain-backbone space (SPEC 3.3) --------------------------------------------------
def _proxyless_space(recipe):
    from nascli.spaces.proxyless import ProxylessSpace

    return ProxylessSpace.from_config(recipe.proxyless)


def _proxyless_strategy(recipe, space, evaluator):
    from nascli.engine.supernet import DerivationStrategy

    return DerivationStrategy(space, evaluator, recipe)


def _supernet_evaluator(recipe, space, **kwargs):
    from nascli.engine.supernet import SupernetEvaluator

    return SupernetEvaluator(recipe=recipe, space=space, **kwargs)


def _proxyless_budget(recipe) -> int:
    return 1 + recipe.proxyless.front_samples  # the derived architecture, then the front


ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (
    Algorithm("adelaide-ea", "segmentation", "Adelaide-EA-NAS: random phase, then one-position mutations of "
              "Pareto-front parents", _adelaide_space, _adelaide_ea, _candidate_evaluator, _two_phase_budget),
    Algorithm("random", "segmentation", "uniform samples, same budget", _adelaide_space, _random,
              _candidate_evaluator, _two_phase_budget),
    Algorithm("fast-nas", "segmentation", "LSTM controller + PPO, progressive two-stage training",
              _adelaide_space, _fast_nas, _progressive_evaluator, lambda r: r.search.samples,
              section="fast_nas", check=_check_teacher),
    Algorithm("proxyless", "segmentation", "one-shot latency-aware chain-backbone search (binary gates, "
              "latency lookup table)", _proxyless_space, _proxyless_strategy, _supernet_evaluator,
              _proxyless_budget, section="proxyless", shared_encoder=False),
)}


def get_algorithm(name: str) -> Algorithm:
    if name not in ALGORITHMS:
        close = difflib.get_close_matches(name, list(ALGORITHMS), n=1)
        raise UsageError(f"unknown --algo {name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""),
                         hint=f"use one of {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]
