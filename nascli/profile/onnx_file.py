"""ONNX Runtime latency of an exported file (fp32 `model.onnx` or int8 `model.int8.onnx`), as deployed.

An int8 file written by `export --int8` names its fp32 source in its metadata (`fp32_model`, beside it);
when that file is there, the two are timed round-robin and the ratio reported, as `profile --int8` does
for a model it quantizes itself. Parameters and MACs are not counted from ONNX files (profile the
checkpoint for those).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any


from nascli.errors import CheckpointError, UsageError
from nascli.export.onnx import INPUT_NAME, decode_metadata, session, static_input_size
from nascli.profile.onnx_latency import random_input, round_robin

log = logging.getLogger(__name__)


def _session(path: Path, threads: int | None):
    if not path.is_file():
        raise CheckpointError(f"ONNX model {path} not found", hint="run `nascli export --onnx` (or --int8) first")
    try:
        return session(path, threads=threads)
    except Exception as e:  # onnxruntime's own exception types
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"ONNX model {path} cannot be loaded ({first})", hint="re-export it") from None


def profile_onnx_file(path: Path, *, threads: int | None, input_size: tuple[int, int] | None, batch: int = 1,
                      warmup: int = 10, runs: int = 50, min_seconds: float = 2.0) -> dict[str, Any]:
    """Latency of the ONNX file at `path` (and of its fp32 source when it is an int8 export)."""
    sess = _session(path, threads)
    meta = decode_metadata(dict(sess.get_modelmeta().custom_metadata_map))
    fixed = static_input_size(sess)
    if fixed is not None and input_size is not None and tuple(input_size) != fixed:
        raise UsageError(f"option --input-size: {path} has a fixed input of {fixed[0]}x{fixed[1]}",
                         hint=f"drop --input-size, or export at {input_size[0]}x{input_size[1]}")
    size = fixed or input_size
    if size is None:
        raise UsageError(f"{path} has a dynamic input size", hint="pass --input-size HxW")
    sessions = {meta.get("precision", "fp32"): sess}
    fp32_name = meta.get("fp32_model")
    if meta.get("precision") == "int8" and fp32_name and (path.parent / fp32_name).is_file():
        sessions = {"fp32": _session(path.parent / fp32_name, threads), "int8": sess}
    elif meta.get("precision") == "int8":
        log.warning("%s: its fp32 source %s is not beside it: timing the int8 file alone", path, fp32_name)
    x = random_input(size, batch)
    timed = round_robin({k: (lambda s=s: s.run(None, {INPUT_NAME: x})) for k, s in sessions.items()}, rounds=3,
                        warmup=warmup, runs=max(1, runs // 3), min_seconds=min_seconds / 3)
    used = sess.get_session_options().intra_op_num_threads or None
    report: dict[str, Any] = {"onnx_file": str(path), "input_size": list(size), "batch": batch, "threads": used,
                              "num_classes": meta.get("num_classes"), "encoding": meta.get("encoding"),
                              "quantization": meta.get("quantization")}
    for key, name in (("fp32", "onnxruntime"), ("int8", "onnxruntime_int8")):
        if key in timed:
            report[name] = {**{k: round(v, 4) if isinstance(v, float) else v for k, v in timed[key].items()},
                            "threads": used, "file": str(path if sessions[key] is sess else path.parent / fp32_name)}
    if "int8" in timed.get("ratios", {}):
        report["int8_speedup"] = round(timed["ratios"]["int8"], 4)
        report["int8_round_speedups"] = [round(v, 4) for v in timed["round_ratios"]["int8"]]
    return report
