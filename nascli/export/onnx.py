"""ONNX export: one PyTorch model in, a checked ONNX model with its metadata out.

Exporter: `torch.onnx.export(..., dynamo=False)`, the TorchScript-based exporter. It handles every model in
the zoo (bilinear resizes, LR-ASPP's global average pool, dilated and depthwise convolutions), including
dynamic batch/height/width, and needs no extra package; the dynamo exporter would add `onnxscript` as a
dependency for no gain on these models. Its deprecation warnings are silenced here (logged at debug).

Metadata (`metadata_props`, strings; lists and dicts as JSON) carries what a deployment needs to run the
model without nascli: encoding, class names, mean/std, input size, ignore index.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
EXPORTER = "torch.onnx.export(dynamo=False) (TorchScript exporter)"


@torch.no_grad()
def export_bytes(model: nn.Module, input_size: tuple[int, int], *, batch: int = 1, opset: int = DEFAULT_OPSET,
                 dynamic: bool = False, outputs: dict[str, dict[int, str]] | None = None) -> bytes:
    """The serialized ONNX model of `model` (eval mode, on the CPU) for NCHW float inputs.

    Static shapes are (batch, 3, H, W); `dynamic` makes batch, height and width symbolic. `outputs` names
    the graph's outputs in the order the model returns them, each with its symbolic axes (default: one
    `logits` output, N x C x H x W); a model returning a dict of tensors emits them in the dict's order.
    """
    model = model.cpu().eval()
    x = torch.zeros(batch, 3, *input_size)
    outputs = outputs or {OUTPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
    axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}, **outputs}
    buf = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=list(outputs), dynamic_axes=axes if dynamic else None,
                          do_constant_folding=True)
    for w in caught:
        log.debug("onnx exporter: %s", str(w.message).splitlines()[0])
    return buf.getvalue()


def with_metadata(data: bytes, metadata: dict[str, Any]) -> onnx.ModelProto:
    """Parse `data`, set `metadata` (values JSON-encoded unless str) as metadata_props, and check the model."""
    proto = onnx.load_from_string(data)
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def read_metadata(path: Path) -> dict[str, Any]:
    """The metadata of an ONNX file written by `with_metadata` (JSON values decoded)."""
    proto = onnx.load(str(path), load_external_data=False)
    return decode_metadata({p.key: p.value for p in proto.metadata_props})


def decode_metadata(props: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in props.items():
        try:
            out[key] = json.loads(value)
        except (json.JSONDecodeError, TypeError):
            out[key] = value
    return out


def session(model: bytes | str | Path, *, threads: int | None = None, device: str = "cpu"):
    """An onnxruntime InferenceSession (CPU, or CUDA where onnxruntime has it) with `threads` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeError("this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    src = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(src, sess_options=opts, providers=providers)


def static_input_size(sess) -> tuple[int, int] | None:
    """(H, W) of a session's input when both are fixed numbers, else None (a dynamic model)."""
    shape = sess.get_inputs()[0].shape
    h, w = shape[2], shape[3]
    return (h, w) if isinstance(h, int) and isinstance(w, int) else None


@torch.no_grad()
def compare(model: nn.Module, sess, x: torch.Tensor) -> dict[str, float]:
    """Max abs logit difference and argmax agreement of PyTorch vs onnxruntime on input `x`."""
    ref = model.cpu().eval()(x).numpy()
    got = sess.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    if got.shape != ref.shape:
        return {"max_abs_diff": float("inf"), "argmax_agreement": 0.0, "shape": list(got.shape)}
    return {"max_abs_diff": float(np.abs(got - ref).max()),
            "argmax_agreement": float((got.argmax(1) == ref.argmax(1)).mean()), "shape": list(got.shape)}


def seeded_input(input_size: tuple[int, int], batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A reproducible normalised-image-like input: N(0, 1), NCHW float32."""
    return torch.randn(batch, 3, *input_size, generator=torch.Generator().manual_seed(seed))
