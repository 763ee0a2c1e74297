"""`nascli data check`: find every problem in a list-file dataset up front, each named by file and line."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from nascli.data.listfile import Problem, Sample, mask_array, open_image, parse_list
from nascli.errors import DataError

__all__ = ["Problem", "bad_values", "check_list", "check_sample"]

log = logging.getLogger(__name__)
_SHOWN_VALUES = 5  # bad mask values named per problem


def check_list(list_file: Path, data_root: Path | None, num_classes: int | None, ignore_index: int = 255,
               limit: int | None = None) -> tuple[int, list[Problem]]:
    """(entries checked, problems) for one list file; every line is checked, none stops the rest.

    Syntax problems come from `parse_list` (the same parser training uses). Then, for the first `limit`
    samples (all when None): image and mask exist and decode fully (truncated files are caught), the mask
    holds indices rather than colours, sizes match, and (when `num_classes` is given) every mask value is a
    class id or `ignore_index`. Entries counts malformed lines too. A missing list file or data root raises.
    """
    if data_root is not None and not Path(data_root).is_dir():
        raise DataError(f"data root {data_root} is not a folder", hint="check --data-root")
    samples, problems = parse_list(list_file, data_root)
    bad_lines = len({p.line for p in problems if p.line is not None})
    todo = samples if limit is None else samples[:limit]
    log.info("checking %s (%d samples)", list_file, len(todo))
    workers = min(4, os.cpu_count() or 1)  # decoding releases the GIL: threads overlap I/O and decode
    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = list(pool.map(lambda s: check_sample(s, num_classes, ignore_index), todo))
    problems += [p for ps in found for p in ps]
    problems.sort(key=lambda p: (p.line or 0))
    return len(todo) + bad_lines, problems


def check_sample(sample: Sample, num_classes: int | None, ignore_index: int = 255) -> list[Problem]:
    """Everything wrong with one sample (empty list when fine)."""
    where = sample.list_file or Path("?")
    problems: list[Problem] = []

    def fail(e: DataError) -> None:
        problems.append(Problem(where, sample.line, e.message, e.hint))

    image = mask = None
    try:
        image = open_image(sample.image, "image")
    except DataError as e:
        fail(e)
    try:
        mask = mask_array(open_image(sample.mask, "mask"), sample.mask)
    except DataError as e:
        fail(e)
    if image is not None and mask is not None:
        w, h = image.size
        if mask.shape != (h, w):
            problems.append(Problem(where, sample.line, f"image {sample.image} is {w}x{h} but mask {sample.mask} is "
                                    f"{mask.shape[1]}x{mask.shape[0]} (WxH)",
                                    "an image and its mask must have the same size"))
    if mask is not None and num_classes is not None:
        bad = bad_values(mask, num_classes, ignore_index)
        if bad:
            shown = ", ".join(map(str, bad[:_SHOWN_VALUES])) + (f" (+{len(bad) - _SHOWN_VALUES} more)"
                                                               if len(bad) > _SHOWN_VALUES else "")
            noun, verb = ("value", "is") if len(bad) == 1 else ("values", "are")
            problems.append(Problem(where, sample.line, f"mask {noun} {shown} in {sample.mask} {verb} neither a class "
                                    f"id (0..{num_classes - 1}) nor the ignore value {ignore_index}",
                                    "fix the mask, or --num-classes / --ignore-index"))
    return problems


def bad_values(mask: np.ndarray, num_classes: int, ignore_index: int = 255) -> list[int]:
    """The distinct values of a uint8 mask that are neither class ids nor the ignore value, ascending."""
    present = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
    return [int(v) for v in present if v >= num_classes and v != ignore_index]
