"""Recipes: one validated settings tree shared by every step.

Where a value comes from, later wins: the defaults below (sized for a CPU and the demo data) <- the run
directory's recipe (what the first step on that run resolved) <- `--recipe FILE` <- command-line flags.
Unknown keys fail with a did-you-mean; wrong types and ranges fail naming the file or the flag.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from nascli.errors import ConfigError
from nascli.spaces.efficientdet import EfficientDetConfig
from nascli.spaces.proxyless import ProxylessConfig

DEFAULT_OPS = ["conv1x1", "conv3x3", "sep_conv_3x3", "sep_conv_5x5", "conv3x3_dil3", "sep_conv_3x3_dil3",
               "sep_conv_5x5_dil6"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SpaceConfig(_Section):
    """The Adelaide decoder space (SPEC 3.1)."""

    op_names: list[str] = Field(default_factory=lambda: list(DEFAULT_OPS), min_length=1, max_length=36)
    agg_size: int = Field(64, ge=1)
    agg_concat: bool = True
    sep_repeats: int = Field(1, ge=1)
    backbone: str = "mobilenet_v2"

    @field_validator("op_names")
    @classmethod
    def _known_ops(cls, names: list[str]) -> list[str]:
        from nascli.zoo.ops import (
            OPS,  # the operator table is the source of truth for names
        )

        for n in names:
            if n not in OPS:
                close = difflib.get_close_matches(n, list(OPS), n=1)
                raise ValueError(f"unknown op {n!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                                 + f"; known: {', '.join(OPS)}")
        if len(set(names)) != len(names):
            raise ValueError("op names repeat")
        return names


class AugmentConfig(_Section):
    """Training augmentation (albumentations); evaluation uses none of it."""

    scale_min: float = Field(0.5, gt=0)
    scale_max: float = Field(2.0, gt=0)
    hflip: float = Field(0.5, ge=0, le=1)
    color_jitter: float = Field(0.5, ge=0, le=1)
    blur_sharpen: float = Field(0.2, ge=0, le=1)
    cutout: float = Field(0.0, ge=0, le=1)


def _image_size(v: tuple[int, int]) -> tuple[int, int]:
    if min(v) < 16:
        raise ValueError("each side must be at least 16 pixels")
    return v


class DataConfig(_Section):
    data_root: Optional[Path] = None
    train_list: Optional[Path] = None
    val_list: Optional[Path] = None
    num_classes: Optional[int] = Field(None, ge=1, le=255)
    class_names: Optional[list[str]] = None
    ignore_index: int = Field(255, ge=0, le=255)
    input_size: tuple[int, int] = (96, 96)  # training crop HxW; also where MACs (and by default latency) are measured
    eval_scale: float = Field(1.0, gt=0, le=4)  # images resized by this for eval; logits resized back to the label
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    workers: int = Field(0, ge=0)
    # A model is flagged degenerate when it predicts one class only, or gives (almost) no pixel to a class
    # covering at least this share of the labelled pixels (nascli.engine.metrics.degeneracy).
    degenerate_share: float = Field(0.02, gt=0, le=1)

    @field_validator("input_size")
    @classmethod
    def _positive(cls, v: tuple[int, int]) -> tuple[int, int]:
        return _image_size(v)


class TrainConfig(_Section):
    """How one network is trained: a candidate during search, or the final model in `train`."""

    epochs: int = Field(2, ge=1)
    # At least this many optimiser steps: on a small training list the epochs are raised to reach it
    # (24 images at batch 16 are 2 steps an epoch; 2 epochs of that train nothing).
    min_steps: int = Field(0, ge=0)
    batch_size: int = Field(16, ge=1)
    # ce: cross-entropy; dice: soft Dice over the classes in the batch; ce+dice: their sum. Dice (or
    # class_weights) for imbalanced classes: plain cross-entropy lets a small class be ignored.
    loss: Literal["ce", "dice", "ce+dice"] = "ce"
    # none, median_frequency (from the training masks' pixel histogram), or one weight per class.
    class_weights: Union[Literal["none", "median_frequency"], list[float]] = "none"
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    scheduler: Literal["step", "cosine", "none"] = "cosine"
    step_epochs: int = Field(5, ge=1)  # StepLR period
    step_gamma: float = Field(0.5, gt=0, le=1)
    mode: Literal["cached", "full"] = "cached"  # cached: frozen encoder, features computed once
    loss_at: Literal["label", "logits"] = "label"  # logits: cross-entropy on the decoder's stride-4 grid
    precise_bn: bool = True  # re-estimate BN statistics after training (short trainings need it)
    cache_views: int = Field(2, ge=1)  # augmented views per image kept in the feature cache
    cache_memory_gb: Optional[float] = Field(None, gt=0)  # over it the cache spills to disk; None: half the free memory
    max_train_images: Optional[int] = Field(None, ge=1)  # subsample the training list (search proxy)
    max_val_images: Optional[int] = Field(None, ge=1)
    sep_repeats: Optional[int] = Field(None, ge=1)  # final training may deepen the separable ops


class SearchConfig(_Section):
    algo: Literal["adelaide-ea", "random", "fast-nas", "proxyless", "efficientdet"] = "adelaide-ea"  # nascli.algorithms.ALGORITHMS
    random_samples: int = Field(8, ge=0)
    mutate_samples: int = Field(8, ge=0)
    samples: int = Field(8, ge=0)  # fast-nas: controller samples
    objectives: Optional[list[str]] = None  # None: the task's metric (miou, map) and macs
    max_macs: Optional[int] = Field(None, gt=0)
    max_params: Optional[int] = Field(None, gt=0)
    max_latency_ms: Optional[float] = Field(None, gt=0)
    max_retries: int = Field(50, ge=1)  # rejected or duplicate proposals per candidate before giving up
    # K, candidates in flight (--parallel): the records depend on it (proposal i+K-1 is asked before record i is
    # told), so a resume must keep it; where they run (--executor, --workers) does not change them.
    parallel: int = Field(1, ge=1)
    measure_latency: bool = False
    latency_threads: int = Field(2, ge=1)
    # What the search's latency means: eager PyTorch, or the exported model in ONNX Runtime (what `profile`
    # and deployment use; the two can rank decoders differently), fp32 or int8 (`export --int8`'s QDQ
    # model), at data.input_size or at this HxW.
    latency_runtime: Literal["torch", "onnxruntime", "onnxruntime-int8"] = "torch"
    latency_size: Optional[tuple[int, int]] = None

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: list[str] | None) -> list[str] | None:
        from nascli.pareto.front import OBJECTIVES

        if v is None:
            return v

        for name in v:
            if name not in OBJECTIVES:
                close = difflib.get_close_matches(name, list(OBJECTIVES), n=1)
                raise ValueError(f"unknown objective {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                                 + f"; known: {', '.join(OBJECTIVES)}")
        if len(v) < 1 or len(set(v)) != len(v):
            raise ValueError("give one or more distinct objectives")
        return v

    @field_validator("latency_size")
    @classmethod
    def _latency_size(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        return None if v is None else _image_size(v)


class FastNasConfig(_Section):
    """Fast-NAS (SPEC 3.2): RL controller and progressive training."""

    hidden: int = Field(100, ge=1)
    lr: float = Field(1e-4, gt=0)
    clip: float = Field(0.1, gt=0)
    grad_clip: float = Field(2.0, gt=0)
    baseline_decay: float = Field(0.95, ge=0, lt=1)
    entropy: float = Field(0.0, ge=0)
    ppo_epochs: int = Field(4, ge=1)
    batch: int = Field(4, ge=1)  # rollouts per PPO update
    termination_delta: float = Field(0.9, gt=0)
    termination_decay: float = Field(0.99, ge=0, lt=1)
    stage2_epochs: int = Field(1, ge=0)
    stage2_lr: float = Field(1e-4, gt=0)
    aux_weight: float = Field(0.15, ge=0)
    polyak_stage1: float = Field(0.9, ge=0, lt=1)
    polyak_stage2: float = Field(0.99, ge=0, lt=1)
    teacher: Optional[Path] = None
    distill_weight: float = Field(0.3, ge=0)


class DetectionConfig(_Section):
    """Detection post-processing (torchvision's detectors' own decode), for every eval, search and predict."""

    score_thresh: float = Field(0.05, ge=0, lt=1)  # COCO-style: low, so the precision-recall curve is complete
    nms_thresh: float = Field(0.5, gt=0, le=1)  # IoU over which class-wise NMS drops the lower-scored box
    detections_per_img: int = Field(100, ge=1)  # COCO's maxDets
    topk_candidates: int = Field(1000, ge=1)  # best-scored boxes kept per pyramid level before NMS
    show_thresh: float = Field(0.3, ge=0, le=1)  # `predict` draws and lists the boxes scoring at least this


class Recipe(_Section):
    # segmentation or detection (nascli.tasks); None: inferred from the list files (steps.common.resolve_data)
    task: Optional[Literal["segmentation", "detection"]] = None
    seed: int = 0
    device: str = "cpu"
    threads: Optional[int] = Field(None, ge=1)  # torch intra-op threads; None keeps torch's default
    space: SpaceConfig = Field(default_factory=SpaceConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    candidate: TrainConfig = Field(default_factory=lambda: TrainConfig(loss_at="logits", min_steps=60))
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=30, mode="full", lr=1e-3, cache_views=1,
                                                                   min_steps=300))
    pretrain: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=10, mode="full", lr=1e-3, min_steps=200))
    fast_nas: FastNasConfig = Field(default_factory=FastNasConfig)
    proxyless: ProxylessConfig = Field(default_factory=ProxylessConfig)  # beside its space: nascli/spaces/proxyless.py
    detection: DetectionConfig = Field(default_factory=DetectionConfig)
    efficientdet: EfficientDetConfig = Field(default_factory=EfficientDetConfig)  # nascli/spaces/efficientdet.py


# ------------------------------------------------------------------------------------------------
def read_yaml(path: Path) -> dict:
    """Read a recipe file: YAML (safe loader only), a mapping at the top."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"recipe {path} not found", hint="check the --recipe path") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"recipe {path} cannot be read ({e})", hint="a recipe is a UTF-8 YAML text file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.constructor.ConstructorError as e:  # e.g. !!python/object: the safe loader builds plain data only
        where = getattr(e, "problem_mark", None)
        line = f":{where.line + 1}" if where is not None else ""
        raise ConfigError(f"recipe {path}{line} was refused: it uses a YAML tag nascli does not load "
                          f"({getattr(e, 'problem', e)})",
                          hint="a recipe holds plain values only (numbers, strings, lists, mappings): remove the tag "
                               "(tags such as !!python/object could run code)") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f":{where.line + 1}" if where is not None else ""
        raise ConfigError(f"recipe {path}{line} is not valid YAML ({getattr(e, 'problem', e)})",
                          hint="fix the YAML syntax; see recipes/ for examples") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a mapping of settings, not a {type(data).__name__}",
                          hint="see recipes/adelaide_ea.yml for the layout")
    return data


def deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def dotted(overrides: dict[str, Any]) -> dict:
    """{'search.random_samples': 4} -> {'search': {'random_samples': 4}}; None values are dropped so that
    an option the user did not give never overrides the recipe."""
    tree: dict = {}
    for key, value in overrides.items():
        if value is None:
            continue
        node = tree
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def _field_names(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names at `loc` (without its last part) inside `model`, for did-you-mean."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def build_recipe(layers: list[tuple[str, dict]], flags: dict[str, str] | None = None) -> Recipe:
    """Merge (source, settings) layers in order and validate once.

    `source` names where a layer came from (a file path, 'the run directory', 'options') for errors;
    `flags` maps dotted keys to the command-line flag that set them, so errors name the flag.
    """
    # The defaults are the bottom layer, so a recipe that sets one key of a section keeps the section's
    # other defaults (Recipe.train's are not TrainConfig's).
    merged: dict = Recipe().model_dump(mode="json")
    origin: dict[str, str] = {}
    for source, layer in layers:
        merged = deep_merge(merged, layer)
        for key in _leaf_keys(layer):
            origin[key] = source
    try:
        return Recipe.model_validate(merged)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(str(p) for p in err["loc"])
        key = ".".join(loc)
        flag = (flags or {}).get(key)
        where = f"option {flag}" if flag and origin.get(key) == "options" else f"{origin.get(_prefix(origin, key), 'recipe')}: {key}"
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(loc[-1], _field_names(Recipe, loc), n=1)
            hint = f"did you mean {'.'.join(loc[:-1] + (close[0],))!r}?" if close else "see recipes/adelaide_ea.yml for the known keys"
            raise ConfigError(f"{where}: unknown setting", hint=hint) from None
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
        raise ConfigError(f"{where}: {msg}{shown}", hint="fix the value; see recipes/adelaide_ea.yml for an example") from None


def _leaf_keys(tree: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in tree.items():
        path = f"{prefix}{k}"
        keys += _leaf_keys(v, path + ".") if isinstance(v, dict) and v else [path]
    return keys


def _prefix(origin: dict[str, str], key: str) -> str:
    """The longest key in `origin` that `key` starts with (errors deep inside a list or dict value)."""
    while key and key not in origin:
        key = key.rpartition(".")[0]
    return key


def parse_size(text: str, flag: str = "--input-size") -> tuple[int, int]:
    """'128x96' -> (128, 96) as (H, W); a single number means a square."""
    from nascli.errors import UsageError

    parts = text.lower().replace(",", "x").split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or min(sizes) < 1:
        raise UsageError(f"option {flag}: {text!r} is not a size", hint="write HxW, e.g. 128x128 or 360x480")
    return sizes[0], sizes[1]


def flatten(tree: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}."""
    out: dict = {}
    for k, v in tree.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def first_difference(saved: Path, recipe: Recipe, *, compare: tuple[str, ...] = ("",),
                     ignore: tuple[str, ...] = ()) -> tuple[str, Any, Any] | None:
    """The first setting (key, saved value, new value) under `compare` and not under `ignore` in which
    `recipe` differs from the recipe saved at `saved`; None when they agree or nothing was saved."""
    if not Path(saved).is_file():
        return None
    from nascli.errors import RunDirError

    try:
        old = flatten(yaml.safe_load(Path(saved).read_text()) or {})
    except (OSError, yaml.YAMLError) as e:
        raise RunDirError(f"{saved} cannot be read ({type(e).__name__})",
                          hint="restore it, or start this step over in a new run directory") from None
    new = flatten(recipe.model_dump(mode="json"))
    # A setting added since the run was saved ran at its default (new settings default to the old behaviour),
    # or, for one whose default means "decide at run time", at what runs before it decided.
    defaults = {**flatten(Recipe().model_dump(mode="json")), **DECIDED_BEFORE}
    for key in sorted(set(old) | set(new)):
        was = old.get(key, defaults.get(key))
        if key.startswith(compare) and not key.startswith(ignore) and was != new.get(key):
            return key, was, new.get(key)
    return None


# Settings added with a run-time default (None), and what every run saved before they existed used.
DECIDED_BEFORE = {"task": "segmentation", "search.objectives": ["miou", "macs"]}


def recipe_to_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
