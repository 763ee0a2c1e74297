"""ONNX Runtime latency of a model: export to a temporary file, then time `InferenceSession.run`.

Measured like the eager numbers (nascli.profile.latency.time_runs: warm-up, then timed runs; median and
p90), with the session's intra-op threads set to the same count, so the two are comparable.
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Callable

import numpy as np
from torch import nn

from nascli.export.onnx import DEFAULT_OPSET, INPUT_NAME, export_bytes, session
from nascli.profile.latency import time_runs, torch_threads

log = logging.getLogger(__name__)


def random_input(input_size: tuple[int, int], batch: int = 1) -> np.ndarray:
    """The seeded input every latency measurement feeds (the speed does not depend on the values)."""
    return np.random.default_rng(0).standard_normal((batch, 3, *input_size), dtype=np.float32)


def onnx_bytes(model: nn.Module, input_size: tuple[int, int], runtime: str, *, batch: int = 1,
               opset: int = DEFAULT_OPSET) -> bytes:
    """The ONNX graph `runtime` runs: the fp32 export, or its int8 (QDQ) form for onnxruntime-int8."""
    if runtime == "onnxruntime":
        return export_bytes(model, input_size, batch=batch, opset=opset)
    if runtime == "onnxruntime-int8":
        return int8_bytes(model, input_size, batch=batch, opset=opset)[1]
    raise ValueError(f"unknown latency runtime {runtime!r}")


def _ort_latency(model: nn.Module, input_size: tuple[int, int], runtime: str, *, device: str, threads: int | None,
                 batch: int, warmup: int, runs: int, min_seconds: float, opset: int) -> dict:
    import onnxruntime as ort

    started = time.perf_counter()
    data = onnx_bytes(model, input_size, runtime, batch=batch, opset=opset)
    export_seconds = time.perf_counter() - started
    sess = session(data, threads=threads, device=device)
    x = random_input(input_size, batch)
    result = time_runs(lambda: sess.run(None, {INPUT_NAME: x}), warmup=warmup, runs=runs, min_seconds=min_seconds)
    opts = sess.get_session_options()
    return {**result, "threads": opts.intra_op_num_threads or None, "providers": sess.get_providers(),
            "opset": opset, "onnxruntime": ort.__version__, "export_seconds": round(export_seconds, 2)}


def onnxruntime_latency(model: nn.Module, input_size: tuple[int, int], *, device: str = "cpu",
                        threads: int | None = None, batch: int = 1, warmup: int = 5, runs: int = 30,
                        min_seconds: float = 0.0, opset: int = DEFAULT_OPSET) -> dict:
    """Latency of `model` exported to ONNX (fixed shape) and run by onnxruntime on `device`."""
    return _ort_latency(model, input_size, "onnxruntime", device=device, threads=threads, batch=batch,
                        warmup=warmup, runs=runs, min_seconds=min_seconds, opset=opset)


def int8_bytes(model: nn.Module, input_size: tuple[int, int], *, batch: int = 1,
               opset: int = DEFAULT_OPSET) -> tuple[bytes, bytes]:
    """(fp32, int8) ONNX of `model` for timing: the int8 one calibrated on seeded random inputs, which sets
    different scales than real images would but the same graph and kernels, so the same speed."""
    from nascli.export.quantize import quantize, random_inputs

    fp32 = export_bytes(model, input_size, batch=batch, opset=opset)
    inputs = [np.repeat(x, batch, axis=0) for x in random_inputs(input_size)]
    return fp32, quantize(fp32, inputs).data


def onnxruntime_int8_latency(model: nn.Module, input_size: tuple[int, int], *, device: str = "cpu",
                             threads: int | None = None, batch: int = 1, warmup: int = 5, runs: int = 30,
                             min_seconds: float = 0.0, opset: int = DEFAULT_OPSET) -> dict:
    """Latency of `model` as an int8 (QDQ, per-channel) ONNX model in onnxruntime (what `export --int8` deploys)."""
    return {**_ort_latency(model, input_size, "onnxruntime-int8", device=device, threads=threads, batch=batch,
                           warmup=warmup, runs=runs, min_seconds=min_seconds, opset=opset), "precision": "int8"}


def round_robin(fns: dict[str, Callable[[], object]], *, rounds: int = 3, warmup: int = 5, runs: int = 30,
                min_seconds: float = 0.0) -> dict:
    """Time several callables in alternation (`rounds` rounds of each), so machine load hits them alike.

    Per name: the median over rounds of each round's median (and p90, min over all runs); "ratios": first
    name's median / each other's (how many times faster the other is), and "round_ratios" per round.
    """
    per: dict[str, list[dict]] = {k: [] for k in fns}
    for r in range(rounds):
        for name, fn in fns.items():
            per[name].append(time_runs(fn, warmup=warmup if r == 0 else 1, runs=runs, min_seconds=min_seconds))
    out = {name: {"median_ms": statistics.median(t["median_ms"] for t in ts),
                  "p90_ms": statistics.median(t["p90_ms"] for t in ts), "min_ms": min(t["min_ms"] for t in ts),
                  "runs": sum(t["runs"] for t in ts), "warmup": warmup, "rounds": rounds} for name, ts in per.items()}
    first = next(iter(fns))
    out["ratios"] = {name: out[first]["median_ms"] / out[name]["median_ms"] for name in fns if name != first}
    out["round_ratios"] = {name: [a["median_ms"] / b["median_ms"] for a, b in zip(per[first], per[name])]
                           for name in fns if name != first}
    return out


def whole_model_runner(model: nn.Module, input_size: tuple[int, int], runtime: str, threads: int | None,
                       ) -> Callable[[], object]:
    """One prepared batch-1 forward pass of `model` as `runtime` runs it (torch: call it under
    `torch_threads`; the ONNX sessions carry their own thread count)."""
    import torch

    x = random_input(input_size)
    if runtime == "torch":
        model, xt = model.eval(), torch.from_numpy(x)

        def forward():
            with torch.no_grad():
                return model(xt)
        return forward
    sess = session(onnx_bytes(model, input_size, runtime), threads=threads)
    return lambda: sess.run(None, {INPUT_NAME: x})


def time_whole_models(models: list[nn.Module], input_size: tuple[int, int], runtime: str, threads: int | None, *,
                      rounds: int = 3, runs: int = 20, warmup: int = 5) -> list[float]:
    """Median ms of each model, all timed round-robin (`rounds` rounds of `runs`), so drift hits them alike."""
    fns = {str(i): whole_model_runner(m, input_size, runtime, threads) for i, m in enumerate(models)}
    with torch_threads(threads if runtime == "torch" else None):
        timed = round_robin(fns, rounds=rounds, warmup=warmup, runs=runs)
    return [timed[str(i)]["median_ms"] for i in range(len(models))]


def fp32_vs_int8(model: nn.Module, input_size: tuple[int, int], *, threads: int | None = None, batch: int = 1,
                 warmup: int = 5, runs: int = 30, min_seconds: float = 0.0, rounds: int = 3,
                 opset: int = DEFAULT_OPSET) -> dict:
    """fp32 and int8 onnxruntime latency (CPU) of `model`, timed round-robin; "speedup" = fp32 / int8."""
    import onnxruntime as ort

    fp32, int8 = int8_bytes(model, input_size, batch=batch, opset=opset)
    sessions = {"fp32": session(fp32, threads=threads), "int8": session(int8, threads=threads)}
    x = random_input(input_size, batch)
    timed = round_robin({k: (lambda s=s: s.run(None, {INPUT_NAME: x})) for k, s in sessions.items()},
                        rounds=rounds, warmup=warmup, runs=runs, min_seconds=min_seconds)
    threads_used = sessions["fp32"].get_session_options().intra_op_num_threads or None
    return {"fp32": {**timed["fp32"], "threads": threads_used}, "int8": {**timed["int8"], "threads": threads_used},
            "speedup": timed["ratios"]["int8"], "round_speedups": timed["round_ratios"]["int8"],
            "onnxruntime": ort.__version__, "opset": opset,
            "int8_calibration": "4 seeded N(0, 1) inputs (timing only: the speed does not depend on the scales)"}


def latency_function(runtime: str) -> Callable[..., dict]:
    """What measures a whole model's latency for `search.latency_runtime` (torch, onnxruntime, onnxruntime-int8)."""
    from nascli.profile.latency import torch_latency

    table = {"torch": torch_latency, "onnxruntime": onnxruntime_latency, "onnxruntime-int8": onnxruntime_int8_latency}
    if runtime not in table:
        raise ValueError(f"unknown latency runtime {runtime!r}; known: {', '.join(LATENCY_RUNTIMES)}")
    return table[runtime]


LATENCY_RUNTIMES = ("torch", "onnxruntime", "onnxruntime-int8")  # what latency_function measures
