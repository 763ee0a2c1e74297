"""The one table from `--algo` to what a search is made of (SPEC 5): task, space, strategy, evaluator.

`steps/search.py` looks an algorithm up here and never branches on its name: a new algorithm is a new
row (and its own files: a space in `spaces/`, a builder in `zoo/`, a strategy or a supernet evaluator),
not an `if` in the loop. Factories import lazily, so reading the table costs nothing and a row's heavy
modules load only when that algorithm runs.

A row's parts:
- `space`: the name of the row's space in `SPACES` (its codec, no torch, whose `canonical()` is the dedup
  and CSV key, and the zoo builder a checkpoint of it is rebuilt by);
- `strategy(recipe, space, evaluator)`: ask/tell over that space. A one-shot algorithm's strategy asks its
  evaluator (a supernet evaluator) for the subnets its trained distribution proposes;
- `evaluator(recipe, space, **context)`: an encoding in, a record out (`CandidateEvaluator`'s interface);
- `budget(recipe)`: how many candidates the search records;
- `section`: the recipe section holding the algorithm's own settings (None: only the shared ones);
- `check(recipe)`: fail-fast checks run before the run directory is locked (None: nothing to check);
- `shared_encoder`: the search prepares nascli's MobileNetV2 encoder (`pretrain-backbone` applies) and
  passes it to the evaluator as `encoder_state`/`encoder_file`;
- `serial_only`: why the algorithm refuses `--parallel K` > 1 and the process/ray executors (None: it
  takes them; its evaluator is then pickled to the workers, nascli.executors).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable

from nascli.errors import UsageError


@dataclass(frozen=True)
class Space:
    """A search space: its codec from a recipe, its zoo model and that model's kwargs for one encoding."""

    name: str
    codec: Callable[[Any], Any]
    model: str
    kwargs: Callable[[Any, str, int], dict]
    hint: str
    # (H, W) an encoding's network is trained and measured at, where the space scales resolution
    # (efficientdet); None: the recipe's data.input_size
    input_size: Callable[[Any, str], tuple[int, int]] | None = None


@dataclass(frozen=True)
class Algorithm:
    name: str
    task: str
    summary: str
    space: str
    strategy: Callable[[Any, Any, Any], Any]
    evaluator: Callable[..., Any]
    budget: Callable[[Any], int]
    section: str | None = None
    check: Callable[[Any], None] | None = None
    shared_encoder: bool = True
    serial_only: str | None = None


# --- the Adelaide decoder space (SPEC 3.1, 3.2) ------------------------------------------------------
def _adelaide_space(recipe):
    from nascli.spaces.adelaide import AdelaideSpace

    return AdelaideSpace(recipe.space.op_names)


def _adelaide_kwargs(recipe, code: str, num_classes: int) -> dict:
    from nascli.steps.train import adelaide_kwargs

    return adelaide_kwargs(recipe, code, num_classes)


def _adelaide_ea(recipe, space, evaluator):
    from nascli.strategies.evolution import AdelaideEA

    s = recipe.search
    return AdelaideEA(space, s.random_samples, s.mutate_samples, s.objectives or ["miou", "macs"])  # any space


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


def _proxyless_kwargs(recipe, code: str, num_classes: int) -> dict:
    from nascli.zoo.proxyless import model_kwargs

    return model_kwargs(recipe.proxyless, code, num_classes)


def _proxyless_strategy(recipe, space, evaluator):
    from nascli.engine.supernet import DerivationStrategy

    return DerivationStrategy(space, evaluator, recipe)


def _supernet_evaluator(recipe, space, **kwargs):
    from nascli.engine.supernet import SupernetEvaluator

    return SupernetEvaluator(recipe=recipe, space=space, **kwargs)


def _proxyless_budget(recipe) -> int:
    return 1 + recipe.proxyless.front_samples  # the derived architecture, then the front


# --- the EfficientDet compound-scaling space (SPEC 3.6) ------------------------------------------------
def _efficientdet_space(recipe):
    return recipe.efficientdet.space()


def _efficientdet_spec(recipe, code: str) -> dict:
    from nascli.spaces.efficientdet import efficientdet_kwargs

    ed = recipe.efficientdet
    return efficientdet_kwargs(code, fusion=ed.fusion, head_conv=ed.head_conv, anchor_scale=ed.anchor_scale,
                               head_norm=ed.head_norm, box_loss=ed.box_loss, space=ed.space())


def _efficientdet_kwargs(recipe, code: str, num_classes: int) -> dict:
    return {**_efficientdet_spec(recipe, code)["model"], "num_classes": num_classes}


def _efficientdet_size(recipe, code: str) -> tuple[int, int]:
    return tuple(_efficientdet_spec(recipe, code)["input_size"])


def _detection_evaluator(recipe, space, **kwargs):
    from nascli.engine.det_evaluator import DetectionCandidateEvaluator

    return DetectionCandidateEvaluator(recipe=recipe, space=space, **kwargs)


SPACES: dict[str, Space] = {s.name: s for s in (
    Space("adelaide", _adelaide_space, "adelaide", _adelaide_kwargs,
          "an Adelaide encoding is '_' + 19 base-36 digits, as in RUN/search/result.csv"),
    Space("proxyless", _proxyless_space, "proxyless", _proxyless_kwargs,
          "a proxyless encoding names each layer's op, '-' between layers and '.' between stages, e.g. "
          "mb3-skip.sep3-dil5 (the recipe's proxyless: section gives the stages)"),
    Space("efficientdet", _efficientdet_space, "efficientdet", _efficientdet_kwargs,
          "an efficientdet encoding is phi<N> with optional ratio overrides, e.g. phi1 or phi2-w1.2-d0.5-r32 "
          "(b<width>: the backbone's width multiplier, e.g. phi0-b0.5)",
          input_size=_efficientdet_size),
)}

ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (
    Algorithm("adelaide-ea", "segmentation", "Adelaide-EA-NAS: random phase, then one-position mutations of "
              "Pareto-front parents", "adelaide", _adelaide_ea, _candidate_evaluator, _two_phase_budget),
    Algorithm("random", "segmentation", "uniform samples, same budget", "adelaide", _random,
              _candidate_evaluator, _two_phase_budget),
    Algorithm("fast-nas", "segmentation", "LSTM controller + PPO, progressive two-stage training",
              "adelaide", _fast_nas, _progressive_evaluator, lambda r: r.search.samples,
              section="fast_nas", check=_check_teacher),
    Algorithm("proxyless", "segmentation", "one-shot latency-aware chain-backbone search (binary gates, "
              "latency lookup table)", "proxyless", _proxyless_strategy, _supernet_evaluator,
              _proxyless_budget, section="proxyless", shared_encoder=False,
              serial_only="it is one-shot: the supernet trains once, in this process, and each subnet is then "
                          "scored from the supernet's weights in seconds, so there is nothing to spread over workers"),
    Algorithm("efficientdet", "detection", "EfficientDet compound scaling (phi and the width/depth/resolution "
              "ratios) of a BiFPN detector: random phase, then mutations of Pareto-front parents", "efficientdet",
              _adelaide_ea, _detection_evaluator, _two_phase_budget, section="efficientdet"),
)}


def get_algorithm(name: str) -> Algorithm:
    if name not in ALGORITHMS:
        close = difflib.get_close_matches(name, list(ALGORITHMS), n=1)
        raise UsageError(f"unknown --algo {name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""),
                         hint=f"use one of {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]


def space_of(recipe) -> Any:
    """The codec of the recipe's search space."""
    return SPACES[get_algorithm(recipe.search.algo).space].codec(recipe)


def encoded_model(recipe, text: str, num_classes: int, flag: str = "--encoding") -> tuple[str, dict, str]:
    """(zoo model, its kwargs, canonical encoding) of an encoding: in the recipe's space, else in the first
    other space it parses in (the two spellings cannot be confused); one-line error otherwise."""
    from nascli.errors import EncodingError

    first = SPACES[get_algorithm(recipe.search.algo).space]
    problem = None
    for entry in [first] + [s for s in SPACES.values() if s is not first]:
        try:
            code = entry.codec(recipe).canonical(text)
        except ValueError as e:  # every codec's EncodingError is a ValueError
            problem = problem or e
            continue
        return entry.model, entry.kwargs(recipe, code, num_classes), code
    raise EncodingError(f"option {flag}: {problem}", hint=first.hint)


def encoded_input_size(recipe, model: str, code: str | None) -> tuple[int, int] | None:
    """The input size an encoded network of `model` is built for, where its space scales resolution; None
    where the recipe's data.input_size applies."""
    for space in SPACES.values():
        if space.model == model and space.input_size is not None and code is not None:
            return tuple(space.input_size(recipe, code))
    return None
