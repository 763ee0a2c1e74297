"""`nascli eval`: segmentation metrics of a trained model (PyTorch checkpoint or ONNX file) on a list file.

Metrics come from one confusion matrix accumulated with `bincount` (nascli.engine.metrics): mIoU, per-class
IoU and accuracy, pixel accuracy, mean class accuracy, frequency-weighted IoU. Pixels labelled with the
ignore value are skipped; a class absent from both labels and predictions has no IoU, is left out of the
means and listed. Logits are always resized (bilinear) to the label's size before the argmax; an ONNX
model with a fixed input size gets each image resized (bilinear) to that size first.

Files: RUN/eval/<model>-<list>/metrics.json and per_class.csv, named after the evaluated file (its path
in the run directory, `-onnx` for an ONNX model) and the list, e.g. eval/train-best-val/ and
eval/export-model-onnx-val/, so evaluating the exported model does not overwrite the PyTorch results.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
import torch.nn.functional as F

from nascli.config import Recipe
from nascli.data.listfile import find_classes_file, read_class_names
from nascli.engine.checkpoint import load_checkpoint, model_from_checkpoint
from nascli.engine.loops import group_by_shape
from nascli.engine.metrics import DEGENERATE_SHARE, ConfusionMatrix, degeneracy
from nascli.errors import CheckpointError, UsageError
from nascli.rundir import RunDir, atomic_write_json, atomic_write_text
from nascli.steps.common import datasets, resolve_data, setup_torch, validate_lists
from nascli.tasks import task_of

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model ready to predict: `predict(x)` maps a normalised NCHW batch to logits (NCHW, any size)."""

    path: Path
    kind: str  # "pytorch" or "onnxruntime"
    meta: dict[str, Any]
    predict: Callable[[torch.Tensor], torch.Tensor]
    module: torch.nn.Module | None = None
    spec: dict[str, Any] = field(default_factory=dict)  # a checkpoint's {"name", "kwargs"}


@dataclass
class EvalResult:
    run_dir: Path
    name: str
    model: LoadedModel
    list_file: Path
    metrics: dict[str, Any]
    classes: list[dict[str, Any]]
    out_dir: Path
    seconds: float
    doc: dict[str, Any]  # what metrics.json holds (NaN written as null)
    task: Any = None  # the data's task (nascli.tasks): what the metrics are


def default_model(run: RunDir, onnx: bool, int8: bool = False) -> Path:
    """The latest trained model's best.pth, or its exported ONNX file (nascli.steps.trained); with `int8`
    the model.int8.onnx that `export --int8` wrote beside that file."""
    from nascli.steps.trained import default_checkpoint, default_onnx, int8_path

    if int8:
        return run.require(int8_path(default_onnx(run)), "export --int8", "--checkpoint FILE.onnx")
    return default_onnx(run) if onnx else default_checkpoint(run)


def load_pytorch(path: Path, device: torch.device | str = "cpu") -> LoadedModel:
    """A nascli checkpoint's model in eval mode (CheckpointError if it is not one or does not fit)."""
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, path).to(device).eval()

    @torch.no_grad()
    def predict(x: torch.Tensor) -> torch.Tensor:
        return model(x.to(device))

    return LoadedModel(Path(path), "pytorch", dict(ckpt["meta"]), predict, model, dict(ckpt["model"]))


def load_onnx(path: Path, threads: int | None = None) -> LoadedModel:
    """An ONNX file in onnxruntime; its metadata from the file, its input size fixed or free."""
    from nascli.export.onnx import (
        INPUT_NAME,
        decode_metadata,
        session,
        static_input_size,
    )

    if not Path(path).is_file():
        raise CheckpointError(f"ONNX model {path} not found", hint="run `nascli export --onnx` first, or check the path")
    try:
        sess = session(Path(path), threads=threads)
    except Exception as e:  # onnxruntime raises its own exception types for unreadable models
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"ONNX model {path} cannot be loaded ({first})",
                              hint="re-export it with `nascli export --onnx`") from None
    meta = decode_metadata(dict(sess.get_modelmeta().custom_metadata_map))
    if "num_classes" not in meta:
        channels = sess.get_outputs()[0].shape[1]
        if not isinstance(channels, int):
            raise CheckpointError(f"ONNX model {path} states no number of classes",
                                  hint="export it with `nascli export --onnx` (which writes the metadata)")
        meta["num_classes"] = channels
    fixed = static_input_size(sess)
    warned: list[tuple] = []
    names = [o.name for o in sess.get_outputs()]

    def predict(x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        if len(names) > 1:  # a detector's raw outputs, by name; its images come at its input size
            runs = [sess.run(None, {INPUT_NAME: img[None].numpy()}) for img in x]
            return {n: torch.cat([torch.from_numpy(r[i]) for r in runs]) for i, n in enumerate(names)}
        outs = []
        for img in x:  # one image a run: a fixed-shape model takes batch 1
            img = img[None]
            if fixed is not None and tuple(img.shape[-2:]) != fixed:
                if not warned:
                    warned.append(tuple(img.shape[-2:]))
                    log.warning("%s has a fixed input of %dx%d: images (e.g. %dx%d) are resized to it and the logits "
                                "back; export with --input-size HxW or --dynamic to evaluate at the images' size",
                                path, *fixed, *img.shape[-2:])
                img = F.interpolate(img, size=fixed, mode="bilinear", align_corners=False)
            outs.append(torch.from_numpy(sess.run(None, {INPUT_NAME: img.numpy()})[0]))
        return torch.cat(outs)

    return LoadedModel(Path(path), "onnxruntime", meta, predict)


def load_model(path: Path, device: torch.device | str = "cpu", threads: int | None = None) -> LoadedModel:
    path = Path(path)
    return load_onnx(path, threads) if path.suffix.lower() == ".onnx" else load_pytorch(path, device)


def _fit_data(recipe: Recipe, meta: dict[str, Any], list_file: Path | None, model_path: Path) -> Recipe:
    """The recipe's data settings made to agree with the model: its classes and normalisation (CheckpointError
    if the list's classes.txt declares another number of classes)."""
    d = recipe.data
    if list_file is not None:
        if not Path(list_file).is_file():
            raise UsageError(f"option --list: {list_file} not found", hint="give a list file of the data to evaluate on")
        d.val_list = Path(list_file)
    nc = int(meta["num_classes"])
    classes_txt = find_classes_file(d.val_list, d.data_root) if d.val_list is not None else None
    declared = len(read_class_names(classes_txt)) if classes_txt is not None else nc
    if declared != nc:  # e.g. a model trained on another dataset
        raise CheckpointError(f"{model_path} predicts {nc} classes but {classes_txt} declares {declared}",
                              hint="evaluate the model on data with the classes it was trained for")
    names = meta.get("class_names")
    if names and len(names) == nc:
        d.class_names = names
    elif d.class_names and len(d.class_names) != nc:
        d.class_names = None  # the data's names do not fit this model: ids only
    d.num_classes = nc
    use_model_normalisation(d, meta)
    if meta.get("task") == "detection" and meta.get("input_size"):
        d.input_size = tuple(meta["input_size"])  # a detector sees every image resized to its input size
    if meta.get("ignore_index") is not None and recipe.data.ignore_index != meta["ignore_index"]:
        log.info("ignore value %d (the data's), the model was trained with %d", d.ignore_index, meta["ignore_index"])
    return resolve_data(recipe, train=False, val=True)


def use_model_normalisation(data, meta: dict[str, Any]) -> None:
    """Normalise as the model was trained (its checkpoint's or ONNX file's mean/std), whatever the run says."""
    if meta.get("mean") and meta.get("std"):
        data.mean, data.std = tuple(meta["mean"]), tuple(meta["std"])


def run(recipe: Recipe, run_dir: RunDir, *, checkpoint: Path | None = None, onnx: bool = False,
        list_file: Path | None = None, batch_size: int = 8,
        progress: Callable[[dict], None] | None = None, int8: bool = False) -> EvalResult:
    """Validate the model and the list, then evaluate and write RUN/eval/<name>/."""
    device = setup_torch(recipe)
    path = Path(checkpoint) if checkpoint is not None else default_model(run_dir, onnx, int8)
    model = load_model(path, device, recipe.threads)
    recipe = _fit_data(recipe, model.meta, list_file, path)
    task = task_of(recipe)
    validate_lists(recipe, train=False)
    _, val_ds = datasets(recipe, train=False)
    list_path = Path(recipe.data.val_list)
    name = result_name(run_dir, path, model.kind, list_path)
    out = run_dir.sub("eval") / name
    progress = progress or (lambda event: None)
    started = time.perf_counter()
    with run_dir.step("eval", interrupted="evaluation interrupted; nothing was written", model=str(path),
                      list=str(list_path)) as done:
        metrics, classes, settings = task.eval_predictions(model, val_ds, recipe, batch_size, progress)
        seconds = time.perf_counter() - started
        doc = {"model": str(path), "kind": model.kind, "task": task.name, "list": str(list_path), "images": len(val_ds),
               "encoding": model.meta.get("encoding"), **settings, **metrics, "classes": classes,
               "seconds": round(seconds, 2)}
        doc = _json_safe(doc)
        atomic_write_json(out / "metrics.json", doc)
        atomic_write_text(out / "per_class.csv", pd.DataFrame(classes).to_csv(index=False))
        done.update(model=str(path), out=str(out), **{task.metric: _json_safe(metrics[task.metric])})
    return EvalResult(run_dir.path, name, model, list_path, metrics, classes, out, seconds, doc, task)


def path_label(run_dir: RunDir, path: Path) -> str:
    """A file's path inside the run directory as a name: train/best.pth -> train-best (else its stem)."""
    try:
        return "-".join(path.resolve().relative_to(run_dir.path.resolve()).with_suffix("").parts)
    except ValueError:  # outside the run directory
        return path.stem


def result_name(run_dir: RunDir, model: Path, kind: str, list_file: Path) -> str:
    """e.g. train-best-val, export-model-onnx-val, search-candidates-0003-weights-val, mymodel-test."""
    return "-".join([path_label(run_dir, model), *(["onnx"] if kind == "onnxruntime" else []), list_file.stem])


def confusion(predict: Callable[[torch.Tensor], torch.Tensor], data, num_classes: int, ignore_index: int,
              batch_size: int = 8, progress: Callable[[dict], None] | None = None) -> ConfusionMatrix:
    """The confusion matrix of `predict` over a dataset; logits resized to each label's size."""
    cm = ConfusionMatrix(num_classes, ignore_index)
    done = 0
    with torch.no_grad():
        for x, y in group_by_shape((data[i] for i in range(len(data))), batch_size):
            logits = predict(x)
            if logits.shape[-2:] != y.shape[-2:]:
                logits = F.interpolate(logits.float(), size=y.shape[-2:], mode="bilinear", align_corners=False)
            cm.update(logits.argmax(1), y)
            done += len(x)
            if progress:
                progress({"event": "images", "done": done, "total": len(data)})
    return cm


def report(cm: ConfusionMatrix, class_names: list[str] | None = None,
           degenerate_share: float = DEGENERATE_SHARE) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(summary metrics, one row per class) from a confusion matrix; absent classes named, not averaged;
    `degenerate` says why the predictions are degenerate (nascli.engine.metrics.degeneracy), else None."""
    m = cm.compute()
    names = class_names or [str(i) for i in range(cm.num_classes)]
    labels, preds = cm.mat.sum(1).tolist(), cm.mat.sum(0).tolist()
    classes = [{"id": i, "name": names[i], "iou": m["iou"][i], "acc": m["acc"][i], "label_pixels": int(labels[i]),
                "pred_pixels": int(preds[i]), "label_share": m["label_share"][i], "pred_share": m["pred_share"][i],
                "absent": i in m["absent_classes"]} for i in range(cm.num_classes)]
    summary = {"miou": m["miou"], "pixel_acc": m["pixel_acc"], "mean_acc": m["mean_acc"], "fwiou": m["fwiou"],
               "pixels": m["pixels"], "classes_in_mean": cm.num_classes - len(m["absent_classes"]),
               "absent_classes": [names[i] for i in m["absent_classes"]],
               "degenerate": degeneracy(m, names, degenerate_share)}
    return summary, classes


def _json_safe(obj: Any) -> Any:
    """NaN -> None, so the JSON is standard (readable by any tool)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj
