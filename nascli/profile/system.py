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


def machine() -> dict[str, object]:
    import os

    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform()}
