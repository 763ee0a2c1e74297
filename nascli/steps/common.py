"""What every step does first: resolve the recipe and the data, validate both, before touching the run dir."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from nascli.config import Recipe, build_recipe, dotted, read_yaml, recipe_to_yaml
from nascli.data.listfile import find_classes_file, read_class_names
from nascli.engine.losses import check_class_weights
from nascli.errors import ConfigError, DataError, UsageError
from nascli.rundir import RunDir, atomic_write_text
from nascli.tasks import get_task, infer_task, task_of

log = logging.getLogger(__name__)

RUN_RECIPE = "recipe.yaml"  # the latest resolved recipe of a run: later steps start from it
DEMO_VERSION = 2  # 2: colour families shared by shape groups (nascli.data.demo)


def load_recipe(run: RunDir | None, recipe_file: Path | None, options: dict[str, Any],
                flags: dict[str, str] | None = None, step_config: Path | None = None) -> Recipe:
    """defaults <- the run directory's recipe <- `step_config` (a step's own saved recipe, e.g. to resume it)
    <- --recipe FILE <- command-line options (None = not given)."""
    layers: list[tuple[str, dict]] = []
    if run is not None and (run.path / RUN_RECIPE).is_file():
        layers.append((str(run.path / RUN_RECIPE), read_yaml(run.path / RUN_RECIPE)))
    if step_config is not None and step_config.is_file():
        layers.append((str(step_config), read_yaml(step_config)))
    if recipe_file is not None:
        layers.append((str(recipe_file), _relative_to(read_yaml(recipe_file), Path(recipe_file).parent)))
    layers.append(("options", dotted(options)))
    return build_recipe(layers, flags)


# Paths a recipe may hold; relative ones mean "relative to the recipe file", so a recipe works from any cwd.
RECIPE_PATHS = (("data", "data_root"), ("data", "train_list"), ("data", "val_list"), ("fast_nas", "teacher"))


def _relative_to(layer: dict, folder: Path) -> dict:
    for section, key in RECIPE_PATHS:
        value = (layer.get(section) or {}).get(key) if isinstance(layer.get(section), dict) else None
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            layer[section][key] = str((folder / value).resolve())
    return layer


def save_run_recipe(run: RunDir, recipe: Recipe) -> None:
    atomic_write_text(run.path / RUN_RECIPE, recipe_to_yaml(recipe))


def demo_root() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "nascli" / f"demo-v{DEMO_VERSION}"


def resolve_data(recipe: Recipe, *, train: bool = True, val: bool = True) -> Recipe:
    """Absolute paths, the class count and names; the built-in demo data when no data is configured."""
    d = recipe.data
    if d.data_root is None and d.train_list is None and d.val_list is None:
        from nascli.data.demo import make_demo

        root = demo_root()
        if not (root / "val.txt").is_file():
            make_demo(root)
        log.warning("no --data-root/--train-list/--val-list given: using the built-in demo dataset at %s "
                    "(made by `nascli data demo`)", root)
        d.data_root, d.train_list, d.val_list = root, root / "train.txt", root / "val.txt"
    if d.data_root is not None:
        if not Path(d.data_root).is_dir():
            raise DataError(f"data root {d.data_root} is not a folder", hint="check --data-root")
        d.data_root = Path(d.data_root).resolve()
    for name, needed, flag in (("train_list", train, "--train-list"), ("val_list", val, "--val-list")):
        path = getattr(d, name)
        if path is None:
            if needed:
                raise UsageError(f"no {flag} given", hint=f"pass {flag} FILE (a list of `IMAGE MASK` lines)")
            continue
        if not Path(path).is_file():
            raise DataError(f"list file {path} not found", hint=f"check {flag}")
        setattr(d, name, Path(path).resolve())
    _resolve_task(recipe)
    if d.class_names is None:
        classes = find_classes_file(d.train_list or d.val_list, d.data_root)
        if classes is not None:
            d.class_names = read_class_names(classes)
    if d.num_classes is None:
        if d.class_names is None:
            raise UsageError("the number of classes is unknown",
                             hint="pass --num-classes N, or put classes.txt (one name per line) beside the list files")
        d.num_classes = len(d.class_names)
    if d.class_names is not None and len(d.class_names) != d.num_classes:
        raise ConfigError(f"--num-classes {d.num_classes} disagrees with {len(d.class_names)} names in classes.txt",
                          hint="drop --num-classes, or fix classes.txt")
    for section in ("candidate", "train", "pretrain"):  # before a step writes a recipe that could not be resumed
        check_class_weights(getattr(recipe, section).class_weights, d.num_classes, section)
    return recipe


def _resolve_task(recipe: Recipe) -> None:
    """The recipe's task as given, else what the lists hold (with a note when that is not segmentation);
    a task given that disagrees with the lists fails here, not as an unreadable mask later."""
    d = recipe.data
    found = infer_task(d.train_list or d.val_list)
    if recipe.task is None:
        recipe.task = found or "segmentation"
        if recipe.task != "segmentation":
            log.info("task: %s, from %s (pass --task to choose)", recipe.task, d.train_list or d.val_list)
    elif found is not None and found != recipe.task:
        task = get_task(recipe.task)
        raise UsageError(f"option --task: {recipe.task} needs `{task.list_line}` lines, but "
                         f"{d.train_list or d.val_list} holds {found} lines",
                         hint=f"drop --task (the lists say {found}), or give {recipe.task} lists")


def validate_lists(recipe: Recipe, *, train: bool = True, val: bool = True) -> None:
    """Check every line of the lists up front, as the recipe's task reads them (nascli.tasks)."""
    task_of(recipe).validate_lists(recipe, train=train, val=val)


def datasets(recipe: Recipe, *, augment_seed: int | None = None, train: bool = True,
             max_train: int | None = None, max_val: int | None = None):
    """(train with augmentation or None, val at evaluation scale) of the recipe's task; optional first-N
    subsets (search proxies)."""
    return task_of(recipe).datasets(recipe, augment_seed=augment_seed, train=train, max_train=max_train,
                                    max_val=max_val)


def setup_torch(recipe: Recipe) -> torch.device:
    """Threads and device; a CUDA device that is not there is a usage error, not a crash later."""
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    try:
        device = torch.device(recipe.device)
    except RuntimeError:
        raise UsageError(f"option --device: {recipe.device!r} is not a device", hint="use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"option --device: {recipe.device} requested but no CUDA device is available",
                         hint="use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"option --device: {recipe.device!r} is not supported", hint="use cpu, cuda or cuda:N")
    return device
