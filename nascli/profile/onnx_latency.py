"""ONNX Runtime latency of a model: export to a temporary file, then time `InferenceSession.run`.

Measured like the eager numbers (nascli.profile.latency.time_runs: warm-up, then timed runs; median and
p90), with the session's intra-op threads set to the same count, so the two are comparable.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from torch import nn

from nascli.export.onnx import DEFAULT_OPSET, INPUT_NAME, export_bytes, session
from nascli.profile.latency import time_runs

log = logging.getLogger(__name__)


def onnxruntime_latency(model: nn.Module, input_size: tuple[int, int], *, device: str = "cpu",
                        threads: int | None = None, batch: int = 1, warmup: int = 5, runs: int = 30,
                        min_seconds: float = 0.0, opset: int = DEFAULT_OPSET) -> dict:
    """Latency of `model` exported to ONNX (fixed shape) and run by onnxruntime on `device`."""
    import onnxruntime as ort

    started = time.perf_counter()
    data = export_bytes(model, input_size, batch=batch, opset=opset)
    export_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="nascli-profile-") as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(data)
        sess = session(path, threads=threads, device=device)
    x = np.random.default_rng(0).standard_normal((batch, 3, *input_size), dtype=np.float32)
    result = time_runs(lambda: sess.run(None, {INPUT_NAME: x}), warmup=warmup, runs=runs, min_seconds=min_seconds)
    opts = sess.get_session_options()
    return {**result, "threads": opts.intra_op_num_threads or None, "providers": sess.get_providers(),
            "opset": opset, "onnxruntime": ort.__version__, "export_seconds": round(export_seconds, 2)}
