"""A latency lookup table: each (op, input shape, output shape, stride) timed once on this machine.

Any space can use it: the space's builder lists its entries (`Entry`: a key, a module factory and the
input shapes the module sees at the search's resolution), the table measures the ones it does not hold
yet and keeps them in a JSON file keyed by a device fingerprint (processor, threads, runtime, library
versions), so a second search on the same machine measures nothing. A network's predicted latency is
the sum of its entries plus its fixed parts (also entries).

Runtimes: `torch` (eager, `torch.no_grad`, the intra-op thread count set) or `onnxruntime` (each module
exported alone with the TorchScript exporter and run by an InferenceSession with that many intra-op
threads), or `onnxruntime-int8` (that export quantized as `export --int8` does, QDQ, calibrated on the
entry's random inputs; an entry with nothing to quantize, e.g. the call overhead, is timed in fp32, as it
would run inside an int8 model). Each int8 entry pays its own input quantize and output dequantize, which
a whole int8 network pays once: `nascli lut --check` measures what that does to the sums.
Entries are medians of `runs` timed calls after a warm-up.

In context (`calibrate`): an op timed alone pays what a whole network pays once (the runtime's layout
reorders at the graph's edges, the session call) and the fixed parts are timed in a graph of their own,
so the plain sum is biased (on one 2-core machine it over-predicted whole subnets by 20% on average, on
another under load it under-predicted). The table therefore keeps, per layout (a space at a size), the
fixed parts' cost measured in context: the median over a few whole subnets, timed round-robin, of
measured minus the sum of their layers' entries. Layers keep their own entries (their differences are
what the search trades), so the gradient into alpha and the ranking come from the table as measured.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from nascli.profile.latency import time_runs, torch_threads
from nascli.profile.system import cpu_model, versions
from nascli.rundir import atomic_write_json

log = logging.getLogger(__name__)

FORMAT = "nascli-lut/1"


@dataclass(frozen=True)
class Entry:
    """One thing to time: `key` names it (op and shapes), `build()` makes the module, `inputs` its input shapes."""

    key: str
    build: Callable[[], nn.Module]
    inputs: tuple[tuple[int, ...], ...]


class _Noop(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1.0  # one trivial kernel: what every timed call costs besides its op


# The per-call cost of the runtime itself (Python, dispatch, a session run), which every entry's timing
# includes once but a whole network pays once in total: predictions subtract it from each entry and add it
# back once (small inputs would otherwise be over-predicted by layers x overhead).
OVERHEAD = Entry("call overhead", _Noop, ((1, 1, 1, 1),))


def entry_key(op: str, in_shape: Sequence[int], out_shape: Sequence[int], stride: int) -> str:
    """e.g. `mb3 16x48x48 -> 24x24x24 s2` (channels x height x width, batch 1)."""
    return f"{op} {'x'.join(map(str, in_shape))} -> {'x'.join(map(str, out_shape))} s{stride}"


def fingerprint(runtime: str, threads: int, device: str = "cpu") -> dict:
    v = versions()
    return {"cpu": cpu_model(), "device": device, "threads": threads, "runtime": runtime,
            "torch": v.get("torch"), "onnxruntime": v.get("onnxruntime") if runtime.startswith("onnxruntime") else None}


def default_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "nascli" / "lut"


def default_path(fp: dict) -> Path:
    digest = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]
    return default_dir() / f"{fp['runtime']}-{fp['threads']}t-{digest}.json"


class LatencyTable:
    """Milliseconds per entry key, for one fingerprint."""

    def __init__(self, fp: dict, entries: dict[str, float] | None = None, path: Path | None = None,
                 calibrations: dict[str, dict] | None = None):
        self.fingerprint = fp
        self.entries: dict[str, float] = dict(entries or {})
        self.path = path
        self.calibrations: dict[str, dict] = dict(calibrations or {})  # layout_id -> {"fixed_ms": ..., ...}

    @classmethod
    def load(cls, path: Path, fp: dict | None = None) -> "LatencyTable":
        """Read a table; with `fp`, a file made on another machine or setting is refused."""
        from nascli.errors import RunDirError

        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise RunDirError(f"latency table {path} cannot be read ({type(e).__name__})",
                              hint="delete it: the table is measured again") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("entries"), dict):
            raise RunDirError(f"latency table {path} is not one nascli wrote", hint="delete it: the table is measured again")
        if fp is not None and data.get("fingerprint") != fp:
            raise RunDirError(f"latency table {path} was measured on {data.get('fingerprint')}, not {fp}",
                              hint="use a table of this machine and setting, or delete it to measure again")
        calibrations = data.get("calibrations") or {}
        if not isinstance(calibrations, dict) or not all(
                isinstance(c, dict) and isinstance(c.get("fixed_ms"), (int, float)) for c in calibrations.values()):
            raise RunDirError(f"latency table {path} has a broken calibrations section",
                              hint="delete it: the table is measured again")
        return cls(data["fingerprint"], {str(k): float(v) for k, v in data["entries"].items()}, path, calibrations)

    @classmethod
    def open(cls, fp: dict, path: Path | None = None) -> "LatencyTable":
        """The cached table of this fingerprint (empty when none was measured yet)."""
        path = Path(path) if path is not None else default_path(fp)
        return cls.load(path, fp) if path.is_file() else cls(fp, path=path)

    def save(self, path: Path | None = None) -> Path:
        path = Path(path or self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {"format": FORMAT, "fingerprint": self.fingerprint, "entries": self.entries,
                                 "calibrations": self.calibrations})
        return path

    def missing(self, entries: Sequence[Entry]) -> list[Entry]:
        seen: set[str] = set()
        out = []
        for e in entries:
            if e.key not in self.entries and e.key not in seen:
                seen.add(e.key)
                out.append(e)
        return out

    def measure(self, entries: Sequence[Entry], *, runs: int = 20, warmup: int = 3,
                progress: Callable[[int, int], None] | None = None) -> int:
        """Time every entry the table lacks (saving after each, so a kill loses one); returns how many."""
        todo = self.missing(entries)
        fp = self.fingerprint
        for i, e in enumerate(todo):
            self.entries[e.key] = round(time_entry(e, fp["runtime"], fp["threads"], runs=runs, warmup=warmup), 5)
            if self.path is not None:
                self.save()
            if progress:
                progress(i + 1, len(todo))
        if todo:
            log.info("latency table: measured %d entries (%s, %d threads)", len(todo), fp["runtime"], fp["threads"])
        return len(todo)

    def __getitem__(self, key: str) -> float:
        return self.entries[key]

    def net(self, key: str) -> float:
        """An entry without the per-call overhead (never below zero)."""
        return max(0.0, self.entries[key] - self.entries.get(OVERHEAD.key, 0.0))

    def predict(self, keys: Sequence[str]) -> float:
        """A network's latency: the sum of its entries, the per-call overhead counted once."""
        return float(sum(self.net(k) for k in keys) + self.entries.get(OVERHEAD.key, 0.0))


def layout_id(layout) -> str:
    """Names one layout (per layer the entry keys of its choices, then the fixed entries): what a calibration is of."""
    layers, fixed = layout
    keys = [[None if e is None else e.key for e in row] for row in layers], [e.key for e in fixed]
    return hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:16]


def fixed_in_context(layer_sums: Sequence[float], measured: Sequence[float]) -> dict:
    """The fixed parts' in-context cost from whole subnets: median of (measured - sum of layer entries), >= 0."""
    gaps = np.asarray(measured, dtype=np.float64) - np.asarray(layer_sums, dtype=np.float64)
    fixed = max(0.0, float(np.median(gaps)))
    return {"fixed_ms": round(fixed, 5), "subnets": len(gaps), "gap_spread_ms": round(float(np.std(gaps)), 5)}


def calibrate(table: "LatencyTable", layout, layer_sums: Sequence[float], models: Sequence[nn.Module],
              input_size: tuple[int, int], *, rounds: int = 3, runs: int = 20) -> dict:
    """Time `models` (whole subnets of `layout`, their layers' entry sums `layer_sums`) in the table's runtime
    and thread count, round-robin, and keep the fixed parts' in-context cost for this layout in the table."""
    from nascli.profile.onnx_latency import time_whole_models

    fp = table.fingerprint
    measured = time_whole_models(list(models), input_size, fp["runtime"], fp["threads"], rounds=rounds, runs=runs)
    _, fixed = layout
    calibration = {**fixed_in_context(layer_sums, measured), "fixed_alone_ms": round(table.predict([e.key for e in fixed]), 5),
                   "rounds": rounds, "runs": runs}
    table.calibrations[layout_id(layout)] = calibration
    if table.path is not None:
        table.save()
    log.info("latency table: fixed parts %.3f ms in context (%.3f ms timed alone), from %d whole subnets",
             calibration["fixed_ms"], calibration["fixed_alone_ms"], len(models))
    return calibration


def timing_model(net: nn.Module, size: tuple[int, int]) -> nn.Module:
    """A randomly initialised network with its BN statistics measured on random images, so that every layer
    sees unit-scale activations as a trained network's do. With BN's default statistics a random subnet's
    activations shrink layer by layer (mean |x| ~1e-6 at stride 32 here) towards denormal floats, which a
    CPU computes slowly; on one subnet in ONNX Runtime the effect measured was small (51.5 vs 49.5 ms with
    denormals as zero, on a busy machine), but a table is compared with what a trained model would do."""
    from nascli.engine.loops import recalibrate_bn

    gen = torch.Generator().manual_seed(0)
    recalibrate_bn(net, [torch.randn(2, 3, *size, generator=gen)])
    return net.eval()


def _inputs(shapes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(*s, generator=gen) for s in shapes]


@torch.no_grad()
def time_entry(entry: Entry, runtime: str, threads: int, *, runs: int = 20, warmup: int = 3) -> float:
    """Median milliseconds of one entry's module on batch-1 inputs."""
    torch.manual_seed(0)
    module = entry.build().eval()
    xs = _inputs(entry.inputs)
    if runtime == "torch":
        with torch_threads(threads):
            return time_runs(lambda: module(*xs), warmup=warmup, runs=runs)["median_ms"]
    if runtime in ("onnxruntime", "onnxruntime-int8"):
        import io

        from nascli.export.onnx import session

        buf = io.BytesIO()
        names = [f"x{i}" for i in range(len(xs))]
        torch.onnx.export(module, tuple(xs), buf, dynamo=False, opset_version=17, input_names=names)
        feed = {n: x.numpy().astype(np.float32) for n, x in zip(names, xs)}
        data = buf.getvalue()
        if runtime == "onnxruntime-int8":
            data = _int8(data, feed, entry.key)
        with tempfile.TemporaryDirectory(prefix="nascli-lut-") as tmp:
            path = Path(tmp) / "op.onnx"
            path.write_bytes(data)
            sess = session(path, threads=threads)
        return time_runs(lambda: sess.run(None, feed), warmup=warmup, runs=runs)["median_ms"]
    raise ValueError(f"unknown runtime {runtime!r}")


def _int8(data: bytes, feed: dict[str, np.ndarray], key: str) -> bytes:
    """An entry's ONNX model quantized (QDQ, calibrated on `feed`), or as it is when it has no compute op."""
    from nascli.errors import CheckFailed
    from nascli.export.quantize import quantize

    try:
        return quantize(data, [feed]).data
    except CheckFailed as e:  # e.g. a pooling-only entry: no int8 kernel to time
        log.debug("latency table: %s timed in fp32 (%s)", key, e)
        return data


def expected_latency(probs: Sequence[torch.Tensor], latencies: Sequence[torch.Tensor], fixed: float = 0.0) -> torch.Tensor:
    """E[lat] = fixed + sum over layers of sum over ops p * lat, differentiable in p (and so in alpha).

    The graph runs through the probabilities: callers pass softmax(alpha) itself, not a detached copy
    (the bug of microsoft/nni#4643, where the latency term had no gradient).
    """
    total = torch.zeros((), dtype=torch.float32)
    for p, lat in zip(probs, latencies):
        total = total + (p * lat).sum()
    return total + fixed
