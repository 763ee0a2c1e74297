"""`nascli data check` for detection lists: every line, image and box checked up front, each problem
named by list file and line (and the XML file and object), plus the box statistics of each list.

Same report shape as `nascli.data.check` (problems fail the check, warnings do not): syntax from the
shared `parse_list`, each annotation by `voc.voc_problems` (the rules training applies), and each image
decoded fully and compared with the XML's <size>. Box sizes are binned as COCO does, by absolute pixel
area in the original image: small < 32^2, medium < 96^2, large the rest.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nascli.data.check import DataWarning, _map
from nascli.data.listfile import Problem, Sample, open_image, parse_list
from nascli.data.voc import Annotation, size_problem, voc_problems
from nascli.errors import DataError

__all__ = ["BoxStats", "DetectionReport", "check_detection_sample", "inspect_detection_list", "is_detection_list"]

log = logging.getLogger(__name__)
SMALL_AREA = 32 ** 2
LARGE_AREA = 96 ** 2


@dataclass
class BoxStats:
    """Counts over the annotations of one list that parsed (and the images that decoded, for `sizes`)."""

    class_names: list[str]
    images: int = 0  # annotations counted
    empty_images: int = 0  # of them, without any object
    boxes: np.ndarray = field(default=None)  # per class
    images_with: np.ndarray = field(default=None)  # per class: images holding at least one such box
    difficult: np.ndarray = field(default=None)  # per class
    small: int = 0
    medium: int = 0
    large: int = 0
    sizes: Counter = field(default_factory=Counter)  # (width, height) of each decoded image

    def __post_init__(self) -> None:
        n = len(self.class_names)
        for name in ("boxes", "images_with", "difficult"):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(n, np.int64))

    def add(self, ann: Annotation) -> None:
        n = len(self.class_names)
        self.images += 1
        self.empty_images += int(len(ann) == 0)
        self.boxes += np.bincount(ann.labels, minlength=n)
        self.images_with += np.bincount(np.unique(ann.labels), minlength=n)
        self.difficult += np.bincount(ann.labels[ann.difficult], minlength=n)
        area = (ann.boxes[:, 2] - ann.boxes[:, 0]) * (ann.boxes[:, 3] - ann.boxes[:, 1])
        self.small += int((area < SMALL_AREA).sum())
        self.large += int((area >= LARGE_AREA).sum())
        self.medium += int(len(area) - (area < SMALL_AREA).sum() - (area >= LARGE_AREA).sum())

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "images_without_objects": self.empty_images,
                "boxes": int(self.boxes.sum()), "difficult": int(self.difficult.sum()),
                "small": self.small, "medium": self.medium, "large": self.large,
                "classes": [{"id": c, "name": name, "boxes": int(self.boxes[c]), "images": int(self.images_with[c]),
                             "difficult": int(self.difficult[c])} for c, name in enumerate(self.class_names)],
                "image_sizes": [{"width": w, "height": h, "images": k} for (w, h), k in self.sizes.most_common()]}


@dataclass
class DetectionReport:
    """What the check found in one detection list file: problems (fail), statistics and warnings (do not)."""

    list_file: Path
    checked: int  # entries checked, malformed lines included
    problems: list[Problem]
    stats: BoxStats
    warnings: list[DataWarning]


def is_detection_list(list_file: Path) -> bool:
    """True when the first entry's second column ends in .xml (a VOC annotation, not a mask); False for an
    unreadable or empty list (its check then says why)."""
    try:
        lines = Path(list_file).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError):
        return False
    for raw in lines:
        fields = raw.strip().split()
        if fields and not fields[0].startswith("#"):
            return len(fields) == 2 and fields[1].lower().endswith(".xml")
    return False


def inspect_detection_list(list_file: Path, data_root: Path | None, class_names: Sequence[str],
                           limit: int | None = None) -> DetectionReport:
    """Check one `IMAGE ANNOTATION` list and count its boxes (the first `limit` samples when given).

    Every line's syntax is checked; for each sample the annotation (`voc.voc_problems`: well-formed XML,
    required fields, known class names, 0/1 difficult flags, positive boxes inside the stated size) and
    the image (exists, decodes fully, the size the XML states, EXIF orientation applied). A missing list
    file or data root raises DataError.
    """
    if data_root is not None and not Path(data_root).is_dir():
        raise DataError(f"data root {data_root} is not a folder", hint="check --data-root")
    samples, problems = parse_list(list_file, data_root)
    problems = [_as_detection(p) for p in problems]
    bad_lines = len({p.line for p in problems if p.line is not None})
    todo = samples if limit is None else samples[:limit]
    log.info("checking %s (%d samples)", list_file, len(todo))
    stats = BoxStats(list(class_names))
    for sample_problems, ann, size in _map(lambda s: _check(s, class_names), todo):
        problems += sample_problems
        if ann is not None:
            stats.add(ann)
        if size is not None:
            stats.sizes[size] += 1
    problems.sort(key=lambda p: p.line or 0)
    return DetectionReport(Path(list_file), len(todo) + bad_lines, problems, stats,
                           box_warnings(stats, Path(list_file)))


def check_detection_sample(sample: Sample, class_names: Sequence[str]) -> list[Problem]:
    """Everything wrong with one `IMAGE ANNOTATION` sample (empty list when fine)."""
    return _check(sample, class_names)[0]


def _check(sample: Sample, class_names: Sequence[str]) -> tuple[list[Problem], Annotation | None,
                                                                 tuple[int, int] | None]:
    """(problems, the annotation or None, the image's (w, h) or None)."""
    where = sample.list_file or Path("?")
    problems: list[Problem] = []
    size = None
    try:
        size = open_image(sample.image, "image").size
    except DataError as e:
        problems.append(Problem(where, sample.line, e.message, e.hint))
    ann, errors = voc_problems(sample.mask, class_names)
    problems += [Problem(where, sample.line, e.message, e.hint) for e in errors]
    if ann is not None and size is not None:
        mismatch = size_problem(ann, size, sample.mask, sample.image)
        if mismatch is not None:
            problems.append(Problem(where, sample.line, mismatch.message, mismatch.hint))
    return problems, ann, size


def _as_detection(p: Problem) -> Problem:
    """parse_list speaks of `IMAGE MASK` pairs; a detection list holds `IMAGE ANNOTATION` pairs."""
    fix = lambda s: s.replace("IMAGE MASK", "IMAGE ANNOTATION") if s else s  # noqa: E731
    return Problem(p.file, p.line, fix(p.message), fix(p.hint))


def box_warnings(stats: BoxStats, list_file: Path) -> list[DataWarning]:
    """Warnings about one list's boxes: none at all, or classes that never appear."""
    if stats.images == 0:  # nothing parsed: the problems say why
        return []
    if stats.boxes.sum() == 0:
        return [DataWarning(list_file, f"none of its {stats.images} annotations has an object",
                            "a detector learns nothing from images without boxes: check the XML files")]
    absent = [f"{c} ({name})" for c, name in enumerate(stats.class_names) if stats.boxes[c] == 0]
    if not absent:
        return []
    noun, verb = ("class", "never appears") if len(absent) == 1 else ("classes", "never appear")
    return [DataWarning(list_file, f"{noun} {', '.join(absent)} {verb} in its {stats.images} annotations",
                        "a class missing from the training list cannot be learnt, and one missing from the "
                        "validation list scores nothing: check the XML names and classes.txt")]
