"""`nascli profile`: parameters, MACs at a stated input size, and latency in eager PyTorch and ONNX Runtime.

The model: `--checkpoint` (a nascli checkpoint), `--encoding` (an Adelaide architecture, random weights:
cost does not depend on them), `--model` (a zoo model, random weights), else the latest training's best.pth (RUN/train/<model>/).
Latency: warm-up, then at least `runs` timed runs and at least `min_seconds`; median and p90 in ms, with
the threads used (the same count for PyTorch intra-op and onnxruntime intra-op), device, library versions
and CPU model recorded. MACs are per image (batch 1); latency is per call at `batch`.

With `int8`, the ONNX Runtime figures are fp32 and int8 (the model quantized as `export --int8` does,
calibrated on seeded random inputs: the speed does not depend on the scales) timed round-robin in one
process, with the ratio ("int8_speedup" = fp32 median / int8 median).

File: RUN/profile/<model>-<HxW>-<device>.json, so profiles of several models sit side by side.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nascli.config import Recipe
from nascli.errors import UsageError
from nascli.profile.cost import count_macs, count_params
from nascli.profile.latency import torch_latency
from nascli.profile.system import machine, versions
from nascli.rundir import RunDir, atomic_write_json
from nascli.steps.common import setup_torch
from nascli.steps.eval import load_pytorch, path_label
from nascli.algorithms import encoded_model
from nascli.steps.trained import default_checkpoint
from nascli.zoo.registry import NEEDS_ENCODING, check_name, create_model

log = logging.getLogger(__name__)


@dataclass
class ProfileResult:
    run_dir: Path
    path: Path
    report: dict[str, Any]


@dataclass
class _Subject:
    module: torch.nn.Module
    label: str
    description: dict[str, Any]
    meta: dict[str, Any]


def run(recipe: Recipe, run_dir: RunDir, *, checkpoint: Path | None = None, encoding: str | None = None,
        model: str | None = None, num_classes: int | None = None, input_size: tuple[int, int] | None = None,
        batch: int = 1, warmup: int = 10, runs: int = 50, min_seconds: float = 2.0, onnx: bool = True,
        int8: bool = False) -> ProfileResult:
    """Validate the options and build the model, then measure and write RUN/profile/<name>.json."""
    if batch < 1 or runs < 1 or warmup < 0 or min_seconds < 0:
        raise UsageError("options --batch/--runs must be >= 1, --warmup and --min-seconds >= 0",
                         hint="e.g. --warmup 10 --runs 50 --min-seconds 2")
    if int8 and not onnx:
        raise UsageError("options --int8 and --no-onnx: int8 latency is ONNX Runtime's", hint="drop --no-onnx")
    device = setup_torch(recipe)
    if int8 and device.type != "cpu":
        raise UsageError(f"option --int8: int8 ONNX Runtime latency is measured on the CPU, not {device}",
                         hint="use --device cpu")
    if checkpoint is not None and Path(checkpoint).suffix.lower() == ".onnx":
        return _run_onnx_file(recipe, run_dir, Path(checkpoint), input_size, batch, warmup, runs, min_seconds,
                              (encoding, model, num_classes, int8, device.type))
    subject = _subject(recipe, run_dir, checkpoint, encoding, model, num_classes)
    size = tuple(input_size or subject.meta.get("input_size") or recipe.data.input_size)
    threads = recipe.threads or torch.get_num_threads()
    name = f"{subject.label}-{size[0]}x{size[1]}-{device.type}"
    path = run_dir.sub("profile") / f"{name}.json"
    with run_dir.step("profile", interrupted="profiling interrupted; nothing was written",
                      model=subject.label) as done:
        report = _measure(subject, size, device, threads, batch, warmup, runs, min_seconds, onnx, int8)
        atomic_write_json(path, report)
        done.update(file=str(path))
    return ProfileResult(run_dir.path, path, report)


def _run_onnx_file(recipe: Recipe, run_dir: RunDir, path: Path, input_size, batch: int, warmup: int, runs: int,
                   min_seconds: float, others: tuple) -> ProfileResult:
    """`--checkpoint FILE.onnx`: the exported file in ONNX Runtime (an int8 one beside its fp32 source)."""
    from nascli.profile.onnx_file import profile_onnx_file

    encoding, model, num_classes, int8, device = others
    if encoding is not None or model is not None or num_classes is not None or int8 or device != "cpu":
        raise UsageError("--checkpoint FILE.onnx is timed as it is, on the CPU",
                         hint="drop --encoding/--model/--num-classes/--int8/--device")
    threads = recipe.threads or torch.get_num_threads()
    label = path_label(run_dir, path)
    with run_dir.step("profile", interrupted="profiling interrupted; nothing was written", model=label) as done:
        report = profile_onnx_file(path, threads=threads, input_size=input_size, batch=batch, warmup=warmup,
                                   runs=runs, min_seconds=min_seconds)
        report.update(device="cpu", versions=versions(), **machine())
        size = report["input_size"]
        out = run_dir.sub("profile") / f"{label}-onnx-{size[0]}x{size[1]}-cpu.json"
        atomic_write_json(out, report)
        done.update(file=str(out))
    return ProfileResult(run_dir.path, out, report)


def _num_classes(recipe: Recipe, given: int | None) -> int:
    if given is not None:
        return given
    d = recipe.data
    if d.num_classes is not None:
        return d.num_classes
    if d.class_names:
        return len(d.class_names)
    raise UsageError("the number of classes is unknown", hint="pass --num-classes N (it changes the head's cost)")


def _subject(recipe: Recipe, run_dir: RunDir, checkpoint: Path | None, encoding: str | None, model: str | None,
             num_classes: int | None) -> _Subject:
    given = [f for f, v in (("--checkpoint", checkpoint), ("--encoding", encoding), ("--model", model)) if v is not None]
    if len(given) > 1 and not (given == ["--encoding", "--model"] and model in NEEDS_ENCODING):
        raise UsageError(f"options {' and '.join(given)} both choose the model", hint="give only one of them")
    if model in NEEDS_ENCODING and encoding is None:
        raise UsageError(f"--model {model} needs --encoding", hint="e.g. --encoding _0000000000000000000")
    if encoding is not None:
        name, kwargs, code = encoded_model(recipe, encoding, _num_classes(recipe, num_classes))
        return _Subject(create_model(name, **kwargs), code.lstrip("_"),
                        {"name": name, "encoding": code, "weights": "random (cost does not depend on them)",
                         "kwargs": kwargs}, {})
    if model is not None:
        check_name(model)
        nc = _num_classes(recipe, num_classes)
        description = {"name": model, "weights": "random (cost does not depend on them)", "kwargs": {"num_classes": nc}}
        return _Subject(create_model(model, num_classes=nc), model, description, {})
    path = Path(checkpoint) if checkpoint is not None else default_checkpoint(run_dir)
    if num_classes is not None:
        raise UsageError("--num-classes applies to --encoding/--model; a checkpoint has its own",
                         hint="drop --num-classes")
    loaded = load_pytorch(path, "cpu")
    return _Subject(loaded.module, path_label(run_dir, path), {"name": loaded.spec.get("name"), "checkpoint": str(path),
                                              "encoding": loaded.meta.get("encoding"), "kwargs": loaded.spec.get("kwargs")},
                    loaded.meta)


def _measure(subject: _Subject, size: tuple[int, int], device: torch.device, threads: int, batch: int, warmup: int,
             runs: int, min_seconds: float, onnx: bool, int8: bool = False) -> dict[str, Any]:
    net = subject.module.eval()
    started = time.perf_counter()
    params, macs = count_params(net), count_macs(net.cpu(), size)
    log.info("%s: %.2f M params, %.3f GMACs at %dx%d", subject.label, params / 1e6, macs / 1e9, *size)
    eager = torch_latency(net, size, device=str(device), threads=threads, batch=batch, warmup=warmup, runs=runs,
                          min_seconds=min_seconds)
    log.info("eager PyTorch: median %.2f ms, p90 %.2f ms (%d runs, %d threads)", eager["median_ms"], eager["p90_ms"],
             eager["runs"], eager["threads"])
    report = {
        "model": subject.description, "num_classes": subject.meta.get("num_classes") or _head_classes(subject),
        "input_size": list(size), "batch": batch, "params": params, "macs": macs, "gmacs": round(macs / 1e9, 4),
        "macs_note": "multiply-accumulates of one image (batch 1) at input_size; convolutions and matmuls only",
        "device": str(device), "threads": threads,
        "eager": _latency_fields(eager),
        "onnxruntime": _ort(net.cpu(), size, device, threads, batch, warmup, runs, min_seconds) if onnx and not int8
        else None,
        "versions": versions(), **machine(),
    }
    if int8:
        report.update(_ort_int8(net.cpu(), size, threads, batch, warmup, runs, min_seconds))
    report["seconds"] = round(time.perf_counter() - started, 2)
    return report


def _ort(net, size, device: torch.device, threads: int, batch: int, warmup: int, runs: int, min_seconds: float):
    from nascli.profile.onnx_latency import onnxruntime_latency

    try:
        ort = onnxruntime_latency(net, size, device=str(device), threads=threads, batch=batch, warmup=warmup,
                                  runs=runs, min_seconds=min_seconds)
    except RuntimeError as e:
        if device.type == "cuda":  # e.g. a CPU-only onnxruntime: eager numbers stand, ORT's are missing
            log.warning("onnxruntime latency skipped: %s", e)
            return {"skipped": str(e)}
        raise
    log.info("onnxruntime: median %.2f ms, p90 %.2f ms (%d runs, %s threads)", ort["median_ms"], ort["p90_ms"],
             ort["runs"], ort["threads"])
    return {**_latency_fields(ort), "providers": ort["providers"], "opset": ort["opset"],
            "export_seconds": ort["export_seconds"]}


def _ort_int8(net, size, threads: int, batch: int, warmup: int, runs: int, min_seconds: float) -> dict:
    from nascli.profile.onnx_latency import fp32_vs_int8

    # three rounds of the requested runs each, alternating, so the ratio sees the same machine load
    r = fp32_vs_int8(net, size, threads=threads, batch=batch, warmup=warmup, runs=max(1, runs // 3),
                     min_seconds=min_seconds / 3, rounds=3)
    log.info("onnxruntime fp32 %.2f ms, int8 %.2f ms (median of 3 alternating rounds): int8 %.2fx faster",
             r["fp32"]["median_ms"], r["int8"]["median_ms"], r["speedup"])
    return {"onnxruntime": {**_latency_fields(r["fp32"]), "rounds": r["fp32"]["rounds"], "opset": r["opset"]},
            "onnxruntime_int8": {**_latency_fields(r["int8"]), "rounds": r["int8"]["rounds"],
                                 "quantization": "QDQ, per-channel int8 weights, uint8 activations",
                                 "calibration": r["int8_calibration"]},
            "int8_speedup": round(r["speedup"], 4), "int8_round_speedups": [round(v, 4) for v in r["round_speedups"]]}


def _latency_fields(r: dict) -> dict:
    return {"median_ms": round(r["median_ms"], 4), "p90_ms": round(r["p90_ms"], 4), "min_ms": round(r["min_ms"], 4),
            "runs": r["runs"], "warmup": r["warmup"], "threads": r["threads"]}


def _head_classes(subject: _Subject) -> int | None:
    return subject.description.get("kwargs", {}).get("num_classes")
