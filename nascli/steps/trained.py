"""Where trained models live in a run directory: one folder per model, and which one is the latest.

    RUN/train/<label>/   last.pth, best.pth, metrics.csv, config.yaml of one trained model
    RUN/train/latest.json  {"label": ...}: the model `eval`, `profile`, `export` and `predict` use by default
    RUN/export/<label>/  model.onnx, export.json of that model

<label> is the zoo name (`lraspp_mobilenet_v3_large`) or the architecture (`adelaide-3104242330135120344`),
so `train --model X` after a searched model's training keeps both. Run directories written before this
layout (RUN/train/best.pth) still work: their model is the label `.` (the train folder itself).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from nascli.errors import RunDirError
from nascli.rundir import RunDir, atomic_write_json

log = logging.getLogger(__name__)

LATEST = "latest.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]+")


def model_label(name: str, encoding: str | None) -> str:
    """A folder name for a model: its zoo name, or name-encoding for a searched architecture."""
    label = name if not encoding else f"{name}-{encoding.lstrip('_')}"
    return _UNSAFE.sub("_", label).strip(".") or "model"


def train_dir(run: RunDir, label: str) -> Path:
    return run.sub("train") / label


def set_latest(run: RunDir, label: str) -> None:
    atomic_write_json(run.file("train", LATEST), {"label": label})


def latest_label(run: RunDir) -> str | None:
    """The model trained last (None when nothing was trained); '.' for a run directory of the old layout."""
    path = run.file("train", LATEST)
    if path.is_file():
        try:
            label = json.loads(path.read_text()).get("label")
        except (OSError, json.JSONDecodeError, AttributeError):
            raise RunDirError(f"{path} cannot be read", hint="delete it; the next `nascli train` rewrites it") from None
        if isinstance(label, str) and label and "/" not in label and label != "..":
            return label
        raise RunDirError(f"{path} names no trained model", hint="delete it; the next `nascli train` rewrites it")
    if run.file("train", "best.pth").is_file() or run.file("train", "last.pth").is_file():
        return "."
    return None


def latest_dir(run: RunDir | Path) -> Path:
    """RUN/train/<latest>/ (RunDirError when nothing was trained)."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    label = latest_label(run)
    if label is None:
        raise RunDirError(f"{run.sub('train')} holds no trained model", hint=f"run `nascli train -r {run.path}`")
    return train_dir(run, label)


def trained_labels(run: RunDir) -> list[str]:
    """Every model folder under RUN/train that holds a checkpoint, sorted."""
    root = run.sub("train")
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "last.pth").is_file())


def default_checkpoint(run: RunDir) -> Path:
    """RUN/train/<latest>/best.pth, logged so that every command says which model it used."""
    label = latest_label(run)
    if label is None:
        return run.require(run.file("train", "best.pth"), "train", "--checkpoint FILE")
    path = run.require(train_dir(run, label) / "best.pth", "train", "--checkpoint FILE")
    _say_which(run, label, path)
    return path


def default_onnx(run: RunDir) -> Path:
    """RUN/export/<latest>/model.onnx (RUN/export/model.onnx in the old layout)."""
    label = latest_label(run)
    path = export_dir(run, label or ".") / "model.onnx"
    path = run.require(path, "export", "--checkpoint FILE.onnx")
    _say_which(run, label or ".", path)
    return path


def export_dir(run: RunDir, label: str) -> Path:
    return run.sub("export") / label


def int8_path(onnx_path: Path) -> Path:
    """Where the int8 file of an fp32 export goes: beside it, model.onnx -> model.int8.onnx."""
    return onnx_path.with_name(f"{onnx_path.stem}.int8{onnx_path.suffix}")


def label_of(run: RunDir, checkpoint: Path) -> str:
    """The model folder a checkpoint sits in (RUN/train/<label>/best.pth), else its file stem."""
    try:
        rel = Path(checkpoint).resolve().relative_to(run.sub("train").resolve())
    except ValueError:
        return Path(checkpoint).stem
    return rel.parts[0] if len(rel.parts) > 1 else "."


def _say_which(run: RunDir, label: str, path: Path) -> None:
    others = [x for x in trained_labels(run) if x != label]
    more = f"; also trained: {', '.join(others)} (choose with --checkpoint)" if others else ""
    log.info("using %s (the latest training%s)", path, more)
