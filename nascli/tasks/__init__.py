"""Tasks (SPEC 5): what one kind of dense prediction brings to the shared steps.

A task owns its data format (list lines, dataset, batches), its loss, its validation metric and the
columns it writes; `steps/` ask the recipe's task for these and never branch on the task's name. The
task is `recipe.task`: given by `--task` or the recipe, else inferred from the list file (`infer_task`).
Task modules import lazily, so a segmentation run never loads the detection code.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from nascli.errors import UsageError

log = logging.getLogger(__name__)

# name -> "module:class" of its task class (segmentation.py is the reference for what one provides)
TASKS = {
    "segmentation": "nascli.tasks.segmentation:SegmentationTask",
    "detection": "nascli.tasks.detection:DetectionTask",
}
_loaded: dict = {}


def get_task(name: str | None):
    """The task object of `name` (None: segmentation, the default of every recipe written before tasks)."""
    name = name or "segmentation"
    if name not in TASKS:
        raise UsageError(f"unknown task {name!r}", hint=f"use one of {', '.join(TASKS)}")
    if name not in _loaded:
        module, cls = TASKS[name].split(":")
        _loaded[name] = getattr(importlib.import_module(module), cls)()
    return _loaded[name]


def task_of(recipe):
    return get_task(recipe.task)


def infer_task(list_file: Path | None) -> str | None:
    """'detection' when the list's first entry names an .xml annotation, else 'segmentation'; None when
    there is no list to read (the caller keeps its default)."""
    from nascli.data.det_check import is_detection_list

    if list_file is None or not Path(list_file).is_file():
        return None
    return "detection" if is_detection_list(Path(list_file)) else "segmentation"
