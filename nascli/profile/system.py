"""What a measurement ran on: library versions and the processor, recorded beside every number."""

from __future__ import annotations

import platform
import sys
from functools import lru_cache
from importlib import metadata


def versions() -> dict[str, str]:
    """nascli, python, torch, torchvision, onnx, onnxruntime and numpy versions (missing ones omitted)."""
    out = {"python": platform.python_version()}
    for name in ("nascli", "torch", "torchvision", "onnx", "onnxruntime", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The processor's model name (/proc/cpuinfo on Linux, platform.processor() elsewhere)."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line.lower().startswith("model name"):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
    return platform.processor() or platform.machine() or "unknown"


@lru_cache(maxsize=1)
def simd_flags() -> list[str]:
    """The CPU's vector-instruction flags (AVX*, AMX, FMA, SSE4), which decide what fast kernels exist."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return sorted(x for x in line.split(":", 1)[1].split() if x.startswith(("avx", "amx", "fma", "sse4")))
    except OSError:
        pass
    return []


def machine() -> dict[str, object]:
    import os

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else None
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "simd": simd_flags(),
            "memory_gib": round(memory, 1) if memory else None, "platform": platform.platform()}
