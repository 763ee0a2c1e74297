"""Latency measurement: warm-up, then timed runs; median and p90 in milliseconds, threads recorded."""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Run with `n` intra-op threads (None: leave as is); yields the number in effect."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


def time_runs(fn: Callable[[], object], *, warmup: int = 5, runs: int = 30, min_seconds: float = 0.0,
              sync: Callable[[], None] | None = None) -> dict:
    """Call `fn` `warmup` times, then at least `runs` times (and for at least `min_seconds`)."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    times = []
    started = time.perf_counter()
    while len(times) < runs or time.perf_counter() - started < min_seconds:
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append((time.perf_counter() - t) * 1000)
    return {
        "median_ms": statistics.median(times),
        "p90_ms": float(np.percentile(times, 90)),
        "min_ms": min(times),
        "runs": len(times),
        "warmup": warmup,
    }


@torch.no_grad()
def torch_latency(model: nn.Module, input_size: tuple[int, int], *, device: str = "cpu", threads: int | None = None,
                  batch: int = 1, warmup: int = 5, runs: int = 30, min_seconds: float = 0.0) -> dict:
    """Eager PyTorch latency of one forward pass on a batch of `batch` images."""
    dev = torch.device(device)
    model = model.to(dev).eval()
    x = torch.randn(batch, 3, *input_size, device=dev, generator=torch.Generator(device=dev).manual_seed(0))
    sync = torch.cuda.synchronize if dev.type == "cuda" else None
    with torch_threads(threads if dev.type == "cpu" else None) as used:
        result = time_runs(lambda: model(x), warmup=warmup, runs=runs, min_seconds=min_seconds, sync=sync)
    return {**result, "threads": used, "device": str(dev), "batch": batch, "input_size": list(input_size)}
