"""`nascli export --onnx`: the trained model as an ONNX file, checked and compared with PyTorch.

Checks, in order: `onnx.checker.check_model(full_check=True)`; onnxruntime on a seeded N(0, 1) input at the
export size (and, with `--dynamic`, also at batch 2 and a larger size) against PyTorch: the largest
absolute logit difference must be within the tolerance (default 1e-3), else exit 4 with the file kept
for inspection and export.json saying `"passed": false`.

Files: RUN/export/<model>/model.onnx (metadata inside: encoding, classes, mean/std, input size, ...) and
RUN/export/<model>/export.json (opset, exporter, shapes, differences, tolerance, versions, sha256), <model>
being the folder of the trained model under RUN/train (nascli.steps.trained).

With `--int8`, also model.int8.onnx beside model.onnx: the fp32 file statically quantized by ONNX
Runtime (QDQ, per-channel int8 weights; nascli.export.quantize), calibrated on `--calibration-images`
training images preprocessed as eval does (nascli.export.calibration); the calibration (method, list,
seed, files) is in its metadata and in export.json's "int8" entry, with the int8-vs-fp32 argmax
agreement on those images. Score it on the val list with `nascli eval --onnx --int8`. An export
without --int8 removes an earlier model.int8.onnx, which was quantized from the fp32 file it replaces.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nascli import __version__
from nascli.config import Recipe
from nascli.errors import CheckFailed, UsageError
from nascli.export import calibration as calib
from nascli.export import quantize as q
from nascli.export.onnx import (
    DEFAULT_OPSET,
    EXPORTER,
    INPUT_NAME,
    OUTPUT_NAME,
    seeded_input,
    session,
    with_metadata,
)
from nascli.profile.system import versions
from nascli.rundir import RunDir, atomic_write, atomic_write_json
from nascli.steps.common import resolve_data, setup_torch
from nascli.steps.eval import load_pytorch, use_model_normalisation
from nascli.steps.trained import default_checkpoint, export_dir, int8_path, label_of
from nascli.tasks import get_task
from nascli.zoo.registry import model_task

log = logging.getLogger(__name__)

MIN_OPSET, MAX_OPSET = 11, 20  # what the TorchScript exporter supports for these models
DEFAULT_TOLERANCE = 1e-3


@dataclass
class ExportResult:
    run_dir: Path
    onnx_path: Path
    json_path: Path
    report: dict[str, Any]


def run(recipe: Recipe, run_dir: RunDir, *, checkpoint: Path | None = None, input_size: tuple[int, int] | None = None,
        opset: int = DEFAULT_OPSET, dynamic: bool = False, tolerance: float = DEFAULT_TOLERANCE,
        int8: bool = False, calibration_images: int = calib.DEFAULT_IMAGES, calibration_method: str = q.DEFAULT_METHOD,
        calibration_list: Path | None = None, keep_fp32: tuple[str, ...] = ()) -> ExportResult:
    """Validate the checkpoint and options, then export, check and compare; CheckFailed over the tolerance.

    With `int8`, then quantize the checked fp32 file (see the module docstring)."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UsageError(f"option --opset: {opset} is not supported",
                         hint=f"use {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})")
    if not tolerance > 0:
        raise UsageError(f"option --tolerance: {tolerance} must be positive", hint=f"e.g. {DEFAULT_TOLERANCE}")
    if int8:
        calib.check_count(calibration_images)
        if calibration_method not in q.METHODS:
            raise UsageError(f"option --calibration-method: {calibration_method!r} is not known",
                             hint=f"use one of {', '.join(q.METHODS)}")
        if dynamic:
            raise UsageError("options --int8 and --dynamic: int8 export is calibrated at one fixed input size",
                             hint="drop --dynamic (give --input-size HxW for the deployment size)")
    setup_torch(recipe)
    path = Path(checkpoint) if checkpoint is not None else default_checkpoint(run_dir)
    loaded = load_pytorch(path, "cpu")
    task = get_task(model_task(loaded.spec.get("name", "")))
    # A detector is trained and evaluated at one input size (images resized to it): export that size.
    shared = data_size(recipe) if task.name == "segmentation" else None
    size = tuple(input_size or shared or loaded.meta.get("input_size") or recipe.data.input_size)
    edir = export_dir(run_dir, label_of(run_dir, path))
    onnx_path, json_path = edir / "model.onnx", edir / "export.json"
    with run_dir.step("export", interrupted="export interrupted", checkpoint=str(path)) as done:
        report = _export(loaded, path, size, opset, dynamic, tolerance, onnx_path, recipe, task)
        atomic_write_json(json_path, report)
        if not report["passed"]:
            what = (f"differs from PyTorch's by {report['max_abs_diff']:.3g} (tolerance {tolerance:g})"
                    if report["max_abs_diff"] > tolerance else "decodes to other detections than PyTorch's")
            raise CheckFailed(f"onnxruntime's output {what}; {onnx_path} is kept for inspection",
                              hint="see export.json; try another --opset, or raise --tolerance if the argmax "
                                   "agreement there is fine")
        stale = int8_path(onnx_path)
        if stale.exists():  # quantized from the fp32 file just replaced: never leave the two out of step
            log.info("removing %s (from an earlier export)", stale)
            stale.unlink()
        if int8:
            report["int8"] = _export_int8(recipe, loaded, path, size, onnx_path, calibration_images,
                                          calibration_method, calibration_list, keep_fp32, task)
            atomic_write_json(json_path, report)
        done.update(onnx=str(onnx_path), max_abs_diff=report["max_abs_diff"])
    return ExportResult(run_dir.path, onnx_path, json_path, report)


def data_size(recipe: Recipe) -> tuple[int, int] | None:
    """The (H, W) every validation image shares, scaled by data.eval_scale (what `eval` feeds the model), so
    the exported model takes the images as they come; None (with the reason logged) when there is no list or
    the sizes differ. Reads image headers only."""
    from PIL import Image

    from nascli.data.listfile import read_list
    from nascli.errors import DataError

    d = recipe.data
    if d.val_list is None or not Path(d.val_list).is_file():
        return None
    sizes = set()
    try:
        for sample in read_list(d.val_list, d.data_root):
            with Image.open(sample.image) as img:
                w, h = img.size
                if img.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF rotation by 90 degrees: shown as h x w
                    w, h = h, w
            sizes.add((h, w))
            if len(sizes) > 1:
                break
    except (OSError, DataError) as e:
        log.info("export size: the validation images cannot be read (%s); using the training size", e)
        return None
    if len(sizes) != 1:
        log.info("export size: the validation images differ in size; using the training crop (give --input-size, "
                 "or --dynamic for any size)")
        return None
    h, w = sizes.pop()
    size = (round(h * d.eval_scale), round(w * d.eval_scale))
    log.info("export size %dx%d: the size of every validation image%s", *size,
             f" x eval_scale {d.eval_scale:g}" if d.eval_scale != 1 else "")
    return size


def metadata(loaded, checkpoint: Path, size: tuple[int, int], dynamic: bool, task=None,
             recipe: Recipe | None = None) -> dict[str, Any]:
    """What a deployment needs to run the model without nascli (stored as ONNX metadata_props)."""
    meta = loaded.meta
    task = task or get_task(model_task(loaded.spec.get("name", "")))
    extra = {}
    if task.name == "detection":
        from nascli.tasks.detection import decode_settings

        extra = {"task": "detection", "decode": decode_settings(recipe) if recipe is not None else {}}
    return {
        "producer": f"nascli {__version__}",
        "model": loaded.spec.get("name", ""),
        "model_kwargs": loaded.spec.get("kwargs", {}),
        "encoding": meta.get("encoding") or "",
        "num_classes": meta.get("num_classes"),
        "class_names": meta.get("class_names"),
        "mean": meta.get("mean"),
        "std": meta.get("std"),
        "input_size": list(size),
        "dynamic_shape": dynamic,
        "ignore_index": meta.get("ignore_index"),
        "input_format": "NCHW float32 RGB, (pixel / 255 - mean) / std",
        "output_format": task.output_format,
        "source_checkpoint": str(checkpoint),
        **extra,
    }


def _export(loaded, checkpoint: Path, size: tuple[int, int], opset: int, dynamic: bool, tolerance: float,
            onnx_path: Path, recipe: Recipe, task) -> dict[str, Any]:
    started = time.perf_counter()
    model, threads = loaded.module, recipe.threads
    data = task.export_bytes(model, size, opset=opset, dynamic=dynamic)
    proto = with_metadata(data, metadata(loaded, checkpoint, size, dynamic, task, recipe))  # runs onnx.checker
    data = proto.SerializeToString()
    atomic_write(onnx_path, lambda f: f.write(data))
    sess = session(data, threads=threads)
    inputs = [seeded_input(size, 1, seed=0)]
    if dynamic:
        inputs.append(seeded_input((size[0] + 32, size[1] + 32), 2, seed=1))
    checks = [{"input_shape": list(x.shape), **task.compare(model, sess, x, recipe)} for x in inputs]
    worst = max(c["max_abs_diff"] for c in checks)
    extra, passed_extra = task.checks_summary(checks)
    log.info("onnxruntime vs PyTorch: max abs output difference %.3g (tolerance %g)", worst, tolerance)
    return {
        "onnx": str(onnx_path), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
        "checkpoint": str(checkpoint), "exporter": EXPORTER, "opset": opset, "dynamic": dynamic,
        "input_size": list(size), "input_name": INPUT_NAME, "output_names": list(getattr(model, "raw_names", [OUTPUT_NAME])),
        "checker": "onnx.checker.check_model(full_check=True): ok",
        "checks": checks, "max_abs_diff": worst, "tolerance": tolerance,
        "passed": bool(worst <= tolerance and passed_extra), **extra,
        "metadata": {p.key: p.value for p in proto.metadata_props}, "versions": versions(),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _export_int8(recipe: Recipe, loaded, checkpoint: Path, size: tuple[int, int], onnx_path: Path, n: int,
                 method: str, list_file: Path | None, keep_fp32: tuple[str, ...], task) -> dict[str, Any]:
    """Calibrate on training images (as eval preprocesses them), quantize, write and check the int8 file."""
    started = time.perf_counter()
    meta = loaded.meta
    if list_file is None:
        resolve_data(recipe, train=True, val=False)
        list_file = recipe.data.train_list
    elif not Path(list_file).is_file():
        raise UsageError(f"option --calibration-list: {list_file} not found",
                         hint=f"give a list of `{task.list_line}` lines")
    d = recipe.data
    use_model_normalisation(d, meta)  # as eval does
    cal = calib.calibration_set(d, Path(list_file), n, size, seed=recipe.seed,
                                make_dataset=task.calibration_dataset(recipe, loaded.meta, size))
    fp32 = onnx_path.read_bytes()
    result = q.quantize(fp32, cal.inputs, method=method, per_channel=True, exclude=keep_fp32)
    quant = {**result.settings, "calibration": cal.record}
    proto = with_metadata(result.data, {**metadata(loaded, checkpoint, size, False, task, recipe), "precision": "int8",
                                        "fp32_model": onnx_path.name, "quantization": quant})
    data = proto.SerializeToString()
    out = int8_path(onnx_path)
    atomic_write(out, lambda f: f.write(data))
    try:
        sess = session(data, threads=recipe.threads)
    except Exception as e:  # e.g. a quantized op this onnxruntime has no kernel for
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckFailed(f"onnxruntime cannot run the int8 model {out} ({first})",
                          hint="keep the op in fp32 with --int8-keep-fp32 NODE, or export without --int8") from None
    agree, note = task.int8_agreement(session(fp32, threads=recipe.threads), sess, cal.inputs, loaded, recipe)
    log.info("int8: %d compute ops quantized; %s: %.4f", result.quantized_ops, note, agree)
    return {"onnx": str(out), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), **quant,
            "quantized_ops": result.quantized_ops, "fp32_ops": result.fp32_ops,
            "agreement_calibration": round(agree, 6),
            "agreement_note": f"{note}; `nascli eval --onnx --int8` for the val {task.label}",
            "seconds": round(time.perf_counter() - started, 2)}
