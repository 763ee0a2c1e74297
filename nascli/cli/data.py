"""`nascli data check|demo`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from nascli.cli import console
from nascli.cli.options import DataRoot, Json, NumClasses, TrainList, ValList
from nascli.errors import CheckFailed, DataError, UsageError

if TYPE_CHECKING:
    from nascli.data.check import ListReport

app = typer.Typer(help="Check a list-file dataset, or make the built-in demo dataset.", no_args_is_help=True)

Lists = Annotated[Optional[list[Path]], typer.Option("--list", "-l", metavar="<path>", help="List file to check (`IMAGE MASK` or `IMAGE ANNOTATION` per line); repeat for several.")]
IgnoreIndex = Annotated[int, typer.Option("--ignore-index", min=0, max=255, help="Mask value that means 'not labelled'.")]
Limit = Annotated[Optional[int], typer.Option("--limit", min=1, help="Open only the first N samples of each list (syntax is checked on every line).")]
Task = Annotated[Optional[str], typer.Option("--task", help="segmentation or detection (default: detection when the list's second column is .xml).")]


@app.command("check")
def check(
    data_root: DataRoot = None,
    lists: Lists = None,
    train_list: TrainList = None,
    val_list: ValList = None,
    num_classes: NumClasses = None,
    ignore_index: IgnoreIndex = 255,
    limit: Limit = None,
    task: Task = None,
    json_out: Json = False,
) -> None:
    """Check list files up front: syntax, missing or unreadable files, size mismatches, mask values or boxes.

    Prints one `file:line: problem` line per problem, each list's label statistics (per class: share of
    labelled pixels and of images it appears in; the ignore share) with warnings, then a summary; exits 4
    if there were problems. Warnings (a class that never appears in a list, over 50% of pixels ignored,
    0/255 binary masks) do not change the exit code. Without --num-classes the classes come from
    classes.txt beside the first list (or in --data-root).

    Detection lists (`IMAGE ANNOTATION`, Pascal VOC XML; chosen when the second column ends in .xml, or
    by --task detection): every annotation and box is checked (well-formed XML, known class names,
    xmin < xmax and ymin < ymax, inside the image, <size> equal to the image's), and each list's boxes
    per class, difficult boxes, COCO small/medium/large counts and image sizes are printed.

    Example:

    \b
      nascli data check --data-root data/demo --list data/demo/train.txt --list data/demo/val.txt
      nascli data check --data-root ../shared/data/camvid --train-list ../shared/data/camvid/train.txt --num-classes 11
      nascli data check --data-root ../shared/data/bccd --list ../shared/data/bccd/train.txt --list ../shared/data/bccd/val.txt
    """
    from nascli.cli.det_data import check_detection, resolve_task
    from nascli.data.check import inspect_list

    files = [*(lists or []), *([train_list] if train_list else []), *([val_list] if val_list else [])]
    if not files:
        raise UsageError("no list file to check", hint="give --list FILE (repeat it for several lists)")
    if resolve_task(task, files[0]) == "detection":
        check_detection(files, data_root, num_classes, limit, json_out)
        return
    num_classes, names = _classes(num_classes, files[0], data_root)
    reports = [inspect_list(f, data_root, num_classes, ignore_index, limit, class_names=names) for f in files]
    checked, problems, warnings, summary = summarise(reports, files)
    if json_out:
        console.print_json({"checked": checked, "num_classes": num_classes, "ignore_index": ignore_index,
                            "problems": [p.to_dict() for p in problems],
                            "warnings": [w.to_dict() for w in warnings],
                            "lists": [_stats_dict(r, names) for r in reports]})
    else:
        for p in problems:
            typer.echo(str(p))
        for r in reports:
            _print_stats(r, names, ignore_index)
        for w in warnings:
            typer.echo(str(w))
            if w.hint:
                typer.echo(f"  hint: {w.hint}")
        typer.echo(summary)
    if problems:
        # the error line names the first problem, so a log that keeps only stderr still says where to look
        raise CheckFailed(f"{summary}; the first: {problems[0]}",
                          hint="fix the lines listed (file:line), then run the check again")


def _class_rows(report: ListReport, names: list[str] | None) -> list[dict]:
    h = report.histogram
    pixel_share, image_share = h.pixel_share(), h.image_share()
    return [{"id": c, "name": names[c] if names and c < len(names) else str(c), "pixels": int(h.pixels[c]),
             "pixel_share": float(pixel_share[c]), "images": int(h.images[c]), "image_share": float(image_share[c])}
            for c in range(len(h.pixels))]


def _stats_dict(report: ListReport, names: list[str] | None) -> dict:
    h = report.histogram
    return {"list": str(report.list_file), "masks": h.masks, "pixels": h.total, "ignored": h.ignored,
            "ignore_share": h.ignore_share, "classes": _class_rows(report, names)}


def _share(x: float) -> str:
    return "<0.1%" if 0 < x < 0.001 else f"{x:.1%}"


def _print_stats(report: ListReport, names: list[str] | None, ignore_index: int) -> None:
    h = report.histogram
    rows = [{"id": r["id"], "class": r["name"], "pixels": _share(r["pixel_share"]), "images": _share(r["image_share"])}
            for r in _class_rows(report, names)]
    console.print_table(rows, ["id", "class", "pixels", "images"],
                        title=f"{report.list_file}: {h.masks} masks, share of labelled pixels and of images per class")
    typer.echo(f"ignore ({ignore_index}): {_share(h.ignore_share)} of all pixels")


def _classes(given: int | None, first_list: Path, data_root: Path | None) -> tuple[int | None, list[str] | None]:
    """(--num-classes, else the length of classes.txt, else None: value ranges then go unchecked; the names
    from classes.txt when it matches)."""
    from nascli.data.listfile import find_classes_file, read_class_names

    found = find_classes_file(first_list, data_root)
    if given is not None:  # the names only label the table: a broken or other classes.txt is not an error here
        try:
            names = read_class_names(found) if found is not None else None
        except DataError:
            names = None
        return given, names if names is not None and len(names) == given else None
    names = read_class_names(found) if found is not None else None
    if names is None:
        console.say("No --num-classes and no classes.txt found: mask values are not range-checked.")
        return None, None
    console.say(f"Using {len(names)} classes from {found}.")
    return len(names), names


@app.command("demo")
def demo(
    out: Annotated[Path, typer.Argument(help="Folder to write (new, empty, or an earlier demo dataset).")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same files.")] = 0,
    size: Annotated[Optional[int], typer.Option("--size", min=16, help="Image side in pixels (default: 128; detection 160).")] = None,
    n_train: Annotated[Optional[int], typer.Option("--train", min=1, help="Number of training images (default: 240; detection 300).")] = None,
    n_val: Annotated[Optional[int], typer.Option("--val", min=1, help="Number of validation images.")] = 60,
    task: Annotated[str, typer.Option("--task", help="segmentation (masks) or detection (VOC XML boxes).")] = "segmentation",
) -> None:
    """Write the built-in demo dataset: textured shapes whose class only their outline reveals.

    Segmentation: VOC layout JPEGImages/, SegmentationClass/ (palette PNG masks, 255 = ignore),
    train.txt, val.txt, classes.txt. Detection (--task detection): JPEGImages/, Annotations/ (VOC XML
    boxes), train.txt, val.txt, classes.txt; four shape classes from small to large on cluttered
    backgrounds, a few images without objects. Seeded: the same options give byte-identical files.

    Example:

    \b
      nascli data demo data/demo
      nascli data demo /tmp/tiny --size 48 --train 24 --val 8 --seed 1
      nascli data demo --task detection data/det-demo
    """
    from nascli.cli.det_data import resolve_task

    if resolve_task(task, None) == "detection":
        from nascli.data.det_demo import CLASS_NAMES, make_detection_demo

        size, n_train = size or 160, n_train or 300
        make_detection_demo(out, seed=seed, size=size, n_train=n_train, n_val=n_val)
        next_command = f"nascli data check --data-root {out} --list {out / 'train.txt'} --list {out / 'val.txt'}"
    else:
        from nascli.data.demo import CLASS_NAMES, make_demo

        size, n_train = size or 128, n_train or 240
        make_demo(out, seed=seed, size=size, n_train=n_train, n_val=n_val)
        next_command = (f"nascli search -r runs/demo --data-root {out} --train-list {out / 'train.txt'} "
                        f"--val-list {out / 'val.txt'}")
    console.say(f"Wrote {n_train} training and {n_val} validation images ({size}x{size}, "
                f"{len(CLASS_NAMES)} classes) to {out}")
    console.next_step(next_command)


def summarise(reports: list, files: list) -> tuple[int, list, list, str]:
    """(samples checked, problems, warnings, the one-line summary) of list-check reports (either task's)."""
    checked = sum(r.checked for r in reports)
    problems = [p for r in reports for p in r.problems]
    warnings = [w for r in reports for w in r.warnings]
    bad = len({(p.file, p.line) for p in problems})
    summary = (f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in {bad} of {checked} samples"
               if problems else f"{checked} samples in {len(files)} list file{'s' if len(files) != 1 else ''}: no problems")
    if warnings:
        summary += f", {len(warnings)} warning{'s' if len(warnings) != 1 else ''}"
    return checked, problems, warnings, summary
