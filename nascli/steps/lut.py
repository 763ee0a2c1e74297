"""`nascli lut`: measure (or reuse) the latency lookup table of the recipe's proxyless space, and check it.

The table is the one a search with the same settings uses (nascli.profile.lut: cached per device
fingerprint, so measuring it here first makes the search start at once). With `check=N`, N random
subnets are built whole and timed by the same runtime, in turn, and their predicted latency (the sum of
table entries) is compared with the measured one: the median absolute error in percent and Spearman's
rank correlation say whether the table can be trusted to rank and to constrain. The check's subnets are
timed round-robin (`rounds` rounds of `runs`: a drifting machine slows them alike) and are never among
the calibration subnets (nascli.profile.lut.calibrate), so the error reported is on held-out networks.

Writes RUN/profile/lut-<runtime>-<HxW>-<threads>t.json (the table's fingerprint and file, the check's rows).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from nascli.config import Recipe
from nascli.engine.evaluator import size_str
from nascli.engine.supernet import LatencyModel, calibrate_layout, calibration_codes, distinct_codes
from nascli.errors import EncodingError, UsageError
from nascli.profile.lut import OVERHEAD, LatencyTable, fingerprint, layout_id, timing_model
from nascli.profile.onnx_latency import LATENCY_RUNTIMES, time_whole_models
from nascli.profile.system import machine, versions
from nascli.rundir import RunDir, atomic_write_json
from nascli.seeding import derive_seed
from nascli.spaces.proxyless import ProxylessSpace
from nascli.zoo.proxyless import build_proxyless, lut_layout, model_kwargs, supernet_kwargs

log = logging.getLogger(__name__)


@dataclass
class LutResult:
    path: Path
    table_file: Path
    entries: int
    measured: int
    fastest_ms: float
    seconds: float
    rows: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    calibration: dict | None = None


def run(recipe: Recipe, run_dir: RunDir, *, num_classes: int, check: int = 0, encodings: list[str] | None = None,
        runs: int = 20, rounds: int = 3, recalibrate: bool = False) -> LutResult:
    """Measure what the table lacks and calibrate its fixed parts in context (unless proxyless.lut_calibrate
    is 0); with `check`, time random (and the given) subnets, none of them a calibration subnet, against it."""
    started = time.perf_counter()
    s, cfg = recipe.search, recipe.proxyless
    space = ProxylessSpace.from_config(cfg)
    size = tuple(s.latency_size or recipe.data.input_size)
    try:  # bad encodings fail before anything is measured
        codes = [space.canonical(e) for e in encodings or []]
    except ValueError as e:
        raise EncodingError(f"option --encoding: {e}", hint="encodings of this recipe's proxyless: space") from None
    fp = fingerprint(s.latency_runtime, s.latency_threads)  # the table times on the CPU
    table = LatencyTable.open(fp, Path(cfg.lut_file) if cfg.lut_file else None)
    layout = lut_layout(space, size, num_classes, **supernet_kwargs(cfg))
    layers, fixed = layout
    entries = [e for row in layers for e in row if e is not None] + list(fixed) + [OVERHEAD]
    measured = table.measure(entries, runs=cfg.lut_runs)
    if cfg.lut_calibrate and (recalibrate or layout_id(layout) not in table.calibrations):
        calibrate_layout(table, space, cfg, layout, size, num_classes)
    calibration = table.calibrations.get(layout_id(layout)) if cfg.lut_calibrate else None
    latency = LatencyModel.from_table(table, layout, raw=calibration is None)
    raw = LatencyModel.from_table(table, layout, raw=True)
    held_out = set(calibration_codes(space, cfg.lut_calibrate)) if calibration else set()
    rng = random.Random(derive_seed(recipe.seed, 0x1C7))
    codes += distinct_codes(space, rng, check, exclude=held_out | set(codes))
    rows = []
    if codes:
        nets = [timing_model(build_proxyless(**model_kwargs(cfg, code, num_classes)), size) for code in codes]
        got = time_whole_models(nets, size, s.latency_runtime, s.latency_threads, rounds=rounds, runs=runs)
        for code, ms in zip(codes, got):
            path = space.indices(code)
            pred = latency.predict(path)
            rows.append({"encoding": code, "predicted_ms": round(pred, 4), "measured_ms": round(ms, 4),
                         "error_pct": round(100 * (pred - ms) / ms, 2), "uncalibrated_ms": round(raw.predict(path), 4)})
            log.info("subnet %s: predicted %.2f ms, measured %.2f ms", code, pred, ms)
    summary = {}
    if len(rows) >= 2:
        df = pd.DataFrame(rows)
        raw_err = 100 * (df["uncalibrated_ms"] - df["measured_ms"]) / df["measured_ms"]
        summary = {"subnets": len(rows), "median_abs_error_pct": round(float(df["error_pct"].abs().median()), 2),
                   "spearman": round(float(df["predicted_ms"].corr(df["measured_ms"], method="spearman")), 4),
                   "uncalibrated_median_abs_error_pct": round(float(raw_err.abs().median()), 2),
                   "calibrated": calibration is not None, "rounds": rounds, "runs": runs}
    out = run_dir.path / "profile" / f"lut-{s.latency_runtime}-{size_str(size)}-{s.latency_threads}t.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, {"fingerprint": fp, "table_file": str(table.path), "input_size": list(size),
                            "num_classes": num_classes, "entries": len(entries), "measured_now": measured,
                            "calibration": calibration, "fastest_subnet_ms": round(latency.fastest(), 4),
                            "check": rows, "summary": summary, "versions": versions(), **machine()})
    return LutResult(out, Path(table.path), len({e.key for e in entries}), measured, latency.fastest(),
                     time.perf_counter() - started, rows, summary, calibration)


def check_runtime(runtime: str | None) -> None:
    if runtime is not None and runtime not in LATENCY_RUNTIMES:
        raise UsageError(f"option --runtime: {runtime!r} is not a runtime", hint=f"use {', '.join(LATENCY_RUNTIMES)}")
