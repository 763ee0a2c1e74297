"""The detection half of `nascli data check|demo`: task choice, class names, the box-statistics report."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from nascli.cli import console
from nascli.errors import CheckFailed, DataError, UsageError

if TYPE_CHECKING:
    from nascli.data.det_check import DetectionReport

TASKS = ("segmentation", "detection")


def resolve_task(given: str | None, first_list: Path | None) -> str:
    """--task as given (validated), else detection when the list's second column is .xml (said on
    stderr), else segmentation."""
    if given is not None:
        task = given.strip().lower()
        if task not in TASKS:
            close = difflib.get_close_matches(task, TASKS, n=1)
            raise UsageError(f"option --task: {given!r} is not segmentation or detection"
                             + (f" (did you mean {close[0]!r}?)" if close else ""),
                             hint="use --task segmentation or --task detection")
        return task
    from nascli.data.det_check import is_detection_list

    if first_list is not None and is_detection_list(first_list):
        console.say(f"Task: detection (the second column of {first_list} is .xml annotations; "
                    "--task segmentation overrides).")
        return "detection"
    return "segmentation"


def detection_classes(num_classes: int | None, first_list: Path, data_root: Path | None) -> list[str]:
    """The class names from classes.txt beside the first list (or in --data-root); detection needs them,
    since an XML names its classes and their ids are classes.txt's order."""
    from nascli.data.listfile import find_classes_file, read_class_names

    found = find_classes_file(first_list, data_root)
    if found is None:
        raise DataError(f"no classes.txt beside {first_list} or in the data root",
                        hint="write classes.txt, one class name per line in id order, beside the list file")
    names = read_class_names(found)
    if num_classes is not None and num_classes != len(names):
        raise UsageError(f"option --num-classes {num_classes} disagrees with the {len(names)} classes of {found}",
                         hint="drop --num-classes (detection takes its classes from classes.txt) or fix classes.txt")
    console.say(f"Using {len(names)} class{'es' if len(names) != 1 else ''} from {found}.")
    return names


def check_detection(files: list[Path], data_root: Path | None, num_classes: int | None, limit: int | None,
                    json_out: bool) -> None:
    """Check detection list files, print every problem and each list's statistics; CheckFailed on problems."""
    from nascli.cli.data import summarise
    from nascli.data.det_check import inspect_detection_list

    names = detection_classes(num_classes, files[0], data_root)
    reports = [inspect_detection_list(f, data_root, names, limit) for f in files]
    checked, problems, warnings, summary = summarise(reports, files)
    if json_out:
        console.print_json({"task": "detection", "checked": checked, "class_names": names,
                            "problems": [p.to_dict() for p in problems], "warnings": [w.to_dict() for w in warnings],
                            "lists": [{"list": str(r.list_file), **r.stats.to_dict()} for r in reports]})
    else:
        for p in problems:
            typer.echo(str(p))
        for r in reports:
            _print_stats(r)
        for w in warnings:
            typer.echo(str(w))
            if w.hint:
                typer.echo(f"  hint: {w.hint}")
        typer.echo(summary)
    if problems:
        raise CheckFailed(f"{summary}; the first: {problems[0]}",
                          hint="fix the lines listed (file:line), then run the check again")


def _print_stats(report: DetectionReport) -> None:
    s = report.stats
    unread = f" of {report.checked} (the rest have problems)" if s.images < report.checked else ""
    rows = [{"id": c, "class": name, "boxes": int(s.boxes[c]), "images": int(s.images_with[c]),
             "difficult": int(s.difficult[c])} for c, name in enumerate(s.class_names)]
    console.print_table(rows, ["id", "class", "boxes", "images", "difficult"],
                        title=f"{report.list_file}: {s.images} images{unread} ({s.empty_images} without objects), "
                              f"{int(s.boxes.sum())} boxes ({int(s.difficult.sum())} difficult)")
    typer.echo(f"box sizes (COCO, pixel area): small (<32^2) {s.small}, medium {s.medium}, large (>=96^2) {s.large}")
    if s.sizes:
        common = ", ".join(f"{w}x{h} ({k})" for (w, h), k in s.sizes.most_common(3))
        more = f", {len(s.sizes) - 3} other sizes" if len(s.sizes) > 3 else ""
        widths, heights = [w for w, _ in s.sizes], [h for _, h in s.sizes]
        span = (f"; width {min(widths)}..{max(widths)}, height {min(heights)}..{max(heights)}"
                if len(s.sizes) > 1 else "")
        typer.echo(f"image sizes (WxH): {common}{more}{span}")
