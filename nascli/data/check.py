"""`nascli data check`: find every problem in a list-file dataset up front, each named by file and line.

Beside the problems (which fail the check) it counts each list's labels from the masks it decodes anyway
(one `np.bincount` per mask): per-class pixel and image counts, the ignore share, and warnings for data
that is legal but probably not what the user meant (a class that never appears, mostly-ignored masks,
0/255 binary masks). Warnings never fail the check.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nascli.data.listfile import Problem, Sample, load_mask, mask_array, open_image, parse_list, read_list
from nascli.errors import DataError

__all__ = ["DataWarning", "ListReport", "PixelHistogram", "Problem", "bad_values", "check_list", "check_sample",
           "inspect_list", "list_warnings", "pixel_histogram"]

log = logging.getLogger(__name__)
_SHOWN_VALUES = 5  # bad mask values named per problem
IGNORE_WARN_SHARE = 0.5  # warn when more than half of a list's pixels are the ignore value
BINARY_WARN_SHARE = 0.1  # 0/255 masks with more than this share of 255: 255 probably marks a class
_REMAP_HINT = ("if 255 marks the object, remap it to class 1 and keep 255 for unlabelled pixels only, e.g. per mask "
               "`Image.fromarray(np.where(np.array(Image.open(p)) == 255, 1, 0).astype(np.uint8)).save(p)` "
               "(on a copy); if those pixels really are unlabelled, ignore this warning")


@dataclass(frozen=True)
class PixelHistogram:
    """Label statistics of one list's masks, per class id 0..C-1.

    `pixels[c]`: pixels of class c; `images[c]`: masks in which c appears; `present_pixels[c]`: labelled
    (non-ignore) pixels of the masks in which c appears, the denominator of median-frequency balancing
    (freq_c = pixels[c] / present_pixels[c]; weight_c = median(freq) / freq_c). Pixels holding a value that
    is neither a class id nor the ignore value (a problem of the check) are counted in `total` only.
    """

    pixels: np.ndarray
    images: np.ndarray
    present_pixels: np.ndarray
    ignored: int  # pixels equal to the ignore value
    total: int  # every pixel of every counted mask
    masks: int  # masks counted
    binary_masks: int  # masks whose only values are 0 and 255

    @property
    def labelled(self) -> int:
        return int(self.pixels.sum())

    def pixel_share(self) -> np.ndarray:
        """Each class's share of the labelled pixels (zeros when nothing is labelled)."""
        return self.pixels / self.labelled if self.labelled else np.zeros(len(self.pixels))

    def image_share(self) -> np.ndarray:
        """The share of masks each class appears in."""
        return self.images / self.masks if self.masks else np.zeros(len(self.images))

    @property
    def ignore_share(self) -> float:
        return self.ignored / self.total if self.total else 0.0


@dataclass
class _Counts:
    """Running sums over the masks of one list, per mask value 0..255."""

    pixels: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))
    images: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))
    present_pixels: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))
    masks: int = 0
    binary_masks: int = 0

    def add(self, counts: np.ndarray, ignore_index: int) -> None:
        present = counts > 0
        self.pixels += counts
        self.images += present
        self.present_pixels += present * (int(counts.sum()) - int(counts[ignore_index]))
        self.masks += 1
        self.binary_masks += int(counts[1:255].sum() == 0)

    def histogram(self, num_classes: int | None, ignore_index: int) -> PixelHistogram:
        """Per class 0..num_classes-1; without num_classes, up to the largest non-ignore value present."""
        if num_classes is None:
            values = [v for v in np.flatnonzero(self.pixels) if v != ignore_index]
            num_classes = int(max(values)) + 1 if values else 0
        ids = np.arange(min(num_classes, 256))
        keep = ids[ids != ignore_index]
        pick = np.zeros(num_classes, np.int64)
        pixels, images, present = pick.copy(), pick.copy(), pick.copy()
        pixels[keep], images[keep], present[keep] = self.pixels[keep], self.images[keep], self.present_pixels[keep]
        return PixelHistogram(pixels, images, present, int(self.pixels[ignore_index]), int(self.pixels.sum()),
                              self.masks, self.binary_masks)


@dataclass(frozen=True)
class DataWarning:
    """Something legal but probably unintended about a whole list file; it does not fail the check."""

    file: Path
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        return f"{self.file}: warning: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"file": str(self.file), "message": self.message, "hint": self.hint}


@dataclass
class ListReport:
    """What the check found in one list file: problems (fail), label statistics and warnings (do not)."""

    list_file: Path
    checked: int  # entries checked, malformed lines included
    problems: list[Problem]
    histogram: PixelHistogram
    warnings: list[DataWarning]


def inspect_list(list_file: Path, data_root: Path | None, num_classes: int | None, ignore_index: int = 255,
                 limit: int | None = None, class_names: Sequence[str] | None = None) -> ListReport:
    """Check one list file (see `check_list`) and count its labels from the same decoded masks.

    The histogram and the warnings cover the masks that decoded (the first `limit` samples when given).
    `class_names` (classes.txt, in id order) only make the warnings read better.
    """
    if data_root is not None and not Path(data_root).is_dir():
        raise DataError(f"data root {data_root} is not a folder", hint="check --data-root")
    samples, problems = parse_list(list_file, data_root)
    bad_lines = len({p.line for p in problems if p.line is not None})
    todo = samples if limit is None else samples[:limit]
    log.info("checking %s (%d samples)", list_file, len(todo))
    found = _map(lambda s: _check(s, num_classes, ignore_index), todo)
    counts = _Counts()
    for sample_problems, mask_counts in found:
        problems += sample_problems
        if mask_counts is not None:
            counts.add(mask_counts, ignore_index)
    problems.sort(key=lambda p: (p.line or 0))
    hist = counts.histogram(num_classes, ignore_index)
    warnings = list_warnings(hist, Path(list_file), ignore_index, class_names)
    return ListReport(Path(list_file), len(todo) + bad_lines, problems, hist, warnings)


def _map(fn, items: Sequence) -> list:
    """fn over items on a few threads (decoding releases the GIL: threads overlap I/O and decode). Ctrl-C
    drops the queued items instead of waiting for the whole list to be read."""
    pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1))
    try:
        return list(pool.map(fn, items))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def check_list(list_file: Path, data_root: Path | None, num_classes: int | None, ignore_index: int = 255,
               limit: int | None = None) -> tuple[int, list[Problem]]:
    """(entries checked, problems) for one list file; every line is checked, none stops the rest.

    Syntax problems come from `parse_list` (the same parser training uses). Then, for the first `limit`
    samples (all when None): image and mask exist and decode fully (truncated files are caught), the mask
    holds indices rather than colours, sizes match, and (when `num_classes` is given) every mask value is a
    class id or `ignore_index`. Entries counts malformed lines too. A missing list file or data root raises.
    """
    report = inspect_list(list_file, data_root, num_classes, ignore_index, limit)
    return report.checked, report.problems


def check_sample(sample: Sample, num_classes: int | None, ignore_index: int = 255) -> list[Problem]:
    """Everything wrong with one sample (empty list when fine)."""
    return _check(sample, num_classes, ignore_index)[0]


def _check(sample: Sample, num_classes: int | None, ignore_index: int) -> tuple[list[Problem], np.ndarray | None]:
    """(problems, the mask's bincount over 0..255, or None when the mask did not decode)."""
    where = sample.list_file or Path("?")
    problems: list[Problem] = []

    def fail(e: DataError) -> None:
        problems.append(Problem(where, sample.line, e.message, e.hint))

    image = mask = counts = None
    try:
        image = open_image(sample.image, "image")
    except DataError as e:
        fail(e)
    try:
        mask = mask_array(open_image(sample.mask, "mask"), sample.mask)
        counts = np.bincount(mask.ravel(), minlength=256)
    except DataError as e:
        fail(e)
    if image is not None and mask is not None:
        w, h = image.size
        if mask.shape != (h, w):
            problems.append(Problem(where, sample.line, f"image {sample.image} is {w}x{h} but mask {sample.mask} is "
                                    f"{mask.shape[1]}x{mask.shape[0]} (WxH)",
                                    "an image and its mask must have the same size"))
    if counts is not None and num_classes is not None:
        bad = _bad_from_counts(counts, num_classes, ignore_index)
        if bad:
            shown = ", ".join(map(str, bad[:_SHOWN_VALUES])) + (f" (+{len(bad) - _SHOWN_VALUES} more)"
                                                               if len(bad) > _SHOWN_VALUES else "")
            noun, verb = ("value", "is") if len(bad) == 1 else ("values", "are")
            problems.append(Problem(where, sample.line, f"mask {noun} {shown} in {sample.mask} {verb} neither a class "
                                    f"id (0..{num_classes - 1}) nor the ignore value {ignore_index}",
                                    "fix the mask, or --num-classes / --ignore-index"))
    return problems, counts


def bad_values(mask: np.ndarray, num_classes: int, ignore_index: int = 255) -> list[int]:
    """The distinct values of a uint8 mask that are neither class ids nor the ignore value, ascending."""
    return _bad_from_counts(np.bincount(mask.ravel(), minlength=256), num_classes, ignore_index)


def _bad_from_counts(counts: np.ndarray, num_classes: int, ignore_index: int) -> list[int]:
    return [int(v) for v in np.flatnonzero(counts) if v >= num_classes and v != ignore_index]


def list_warnings(hist: PixelHistogram, list_file: Path, ignore_index: int = 255,
                  class_names: Sequence[str] | None = None) -> list[DataWarning]:
    """Warnings about one list's labels: 0/255 binary masks, a large ignore share, classes that never appear."""
    if hist.masks == 0:  # nothing decoded: the problems say why
        return []
    warnings: list[DataWarning] = []
    share = hist.ignore_share
    if ignore_index == 255 and hist.binary_masks == hist.masks and share > BINARY_WARN_SHARE:
        warnings.append(DataWarning(list_file, f"every mask holds only 0 and 255, and 255 is the ignore value: "
                                    f"{share:.1%} of pixels are ignored, not learnt (0/255 binary masks?)",
                                    _REMAP_HINT))
    elif share > IGNORE_WARN_SHARE:  # the 0/255 warning above already names the share
        warnings.append(DataWarning(list_file, f"{share:.1%} of pixels are the ignore value {ignore_index} "
                                    f"(over {IGNORE_WARN_SHARE:.0%}): they are not used in training or evaluation",
                                    "check --ignore-index and the masks"))
    absent = [c for c in range(len(hist.pixels)) if c != ignore_index and hist.pixels[c] == 0]
    if absent:
        named = ", ".join(_class_label(c, class_names) for c in absent)
        noun, verb = ("class", "never appears") if len(absent) == 1 else ("classes", "never appear")
        warnings.append(DataWarning(list_file, f"{noun} {named} {verb} in its {hist.masks} masks",
                                    "a class missing from the training list cannot be learnt, and one missing from "
                                    "the validation list scores nothing: check the masks' values and classes.txt"))
    return warnings


def _class_label(c: int, names: Sequence[str] | None) -> str:
    return f"{c} ({names[c]})" if names is not None and c < len(names) else str(c)


def pixel_histogram(list_file: Path, data_root: Path | None, num_classes: int,
                    ignore_index: int = 255) -> PixelHistogram:
    """Per-class label counts of a list's masks (e.g. the training list, for class weights).

    Reads the masks only (no images); DataError on the first unreadable line or mask, so run it after the
    check. `inspect_list(...).histogram` gives the same counts from the check's own pass.
    """
    return mask_histogram(read_list(list_file, data_root), num_classes, ignore_index)


def mask_histogram(samples: Sequence[Sample], num_classes: int, ignore_index: int = 255) -> PixelHistogram:
    """`pixel_histogram` of some samples (e.g. the subset a training uses)."""
    all_counts = _map(lambda s: np.bincount(load_mask(s.mask).ravel(), minlength=256), samples)
    counts = _Counts()
    for c in all_counts:
        counts.add(c, ignore_index)
    return counts.histogram(num_classes, ignore_index)
