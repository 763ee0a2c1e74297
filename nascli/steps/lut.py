"""`nascli lut`: measure (or reuse) the latency lookup table of the recipe's proxyless space, and check it.

The table is the one a search with the same settings uses (nascli.profile.lut: cached per device
fingerprint, so measuring it here first makes the search start at once). With `check=N`, N random
subnets are built whole and timed by the same runtime, in turn, and their predicted latency (the sum of
table entries) is compared with the measured one: the median absolute error in percent and Spearman's
rank correlation say whether the table can be trusted to rank and to constrain.

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
from nascli.engine.loops import recalibrate_bn
from nascli.engine.supernet import LatencyModel
from nascli.errors import EncodingError, UsageError
from nascli.profile.lut import OVERHEAD, LatencyTable, fingerprint
from nascli.profile.onnx_latency import LATENCY_RUNTIMES, latency_function
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


def run(recipe: Recipe, run_dir: RunDir, *, num_classes: int, check: int = 0, encodings: list[str] | None = None,
        runs: int = 20) -> LutResult:
    """Measure what the table lacks; with `check`, time random (and the given) subnets against it."""
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
    latency = LatencyModel.from_table(table, layout)
    rng = random.Random(derive_seed(recipe.seed, 0x1C7))
    while len(codes) < len(encodings or []) + check:
        code = space.sample(rng)
        if code not in codes:
            codes.append(code)
    measure = latency_function(s.latency_runtime)
    rows = []
    for i, code in enumerate(codes):
        net = timing_model(build_proxyless(**model_kwargs(cfg, code, num_classes)), size)
        got = measure(net, size, device="cpu", threads=s.latency_threads, warmup=5, runs=runs)["median_ms"]
        pred = latency.predict(space.indices(code))
        rows.append({"encoding": code, "predicted_ms": round(pred, 4), "measured_ms": round(got, 4),
                     "error_pct": round(100 * (pred - got) / got, 2)})
        log.info("subnet %d/%d %s: predicted %.2f ms, measured %.2f ms", i + 1, len(codes), code, pred, got)
    summary = {}
    if len(rows) >= 2:
        df = pd.DataFrame(rows)
        summary = {"subnets": len(rows), "median_abs_error_pct": round(float(df["error_pct"].abs().median()), 2),
                   "spearman": round(float(df["predicted_ms"].corr(df["measured_ms"], method="spearman")), 4)}
    out = run_dir.path / "profile" / f"lut-{s.latency_runtime}-{size_str(size)}-{s.latency_threads}t.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, {"fingerprint": fp, "table_file": str(table.path), "input_size": list(size),
                            "num_classes": num_classes, "entries": len(entries), "measured_now": measured,
                            "fastest_subnet_ms": round(latency.fastest(), 4), "check": rows, "summary": summary,
                            "versions": versions(), **machine()})
    return LutResult(out, Path(table.path), len({e.key for e in entries}), measured, latency.fastest(),
                     time.perf_counter() - started, rows, summary)


def timing_model(net, size: tuple[int, int]):
    """A randomly initialised network with its BN statistics measured on random images, so that every layer
    sees unit-scale activations as a trained network's do. With BN's default statistics a random subnet's
    activations shrink layer by layer (mean |x| ~1e-6 at stride 32 here) towards denormal floats, which a
    CPU computes slowly; on one subnet in ONNX Runtime the effect measured was small (51.5 vs 49.5 ms with
    denormals as zero, on a busy machine), but a table is compared with what a trained model would do."""
    import torch

    gen = torch.Generator().manual_seed(0)
    recalibrate_bn(net, [torch.randn(2, 3, *size, generator=gen)])
    return net.eval()


def check_runtime(runtime: str | None) -> None:
    if runtime is not None and runtime not in LATENCY_RUNTIMES:
        raise UsageError(f"option --runtime: {runtime!r} is not a runtime", hint=f"use {', '.join(LATENCY_RUNTIMES)}")
