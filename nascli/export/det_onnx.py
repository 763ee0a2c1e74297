"""Detectors to ONNX: the network with its raw outputs; decoding and NMS stay outside the graph.

The graph ends at the head (`model.raw_names`: `cls_logits [N, A, C]`, `bbox_regression [N, A, 4]`,
FCOS's `bbox_ctrness [N, A, 1]`, A the anchors of the input size); `nascli.zoo.detectors.decode_detections`
turns ONNX Runtime's outputs into boxes exactly as it does PyTorch's. SPEC 3.6: decode + `batched_nms`
inside the graph exports only at a fixed size (TorchScript exporter) or not at all (`torch.export`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from nascli.export.onnx import DEFAULT_OPSET, INPUT_NAME, export_bytes


def raw_outputs(model: nn.Module) -> dict[str, dict[int, str]]:
    """The graph's outputs in order, with their symbolic axes (batch, anchors)."""
    return {name: {0: "batch", 1: "anchors"} for name in model.raw_names}


def export_detector_bytes(model: nn.Module, input_size: tuple[int, int], *, batch: int = 1,
                          opset: int = DEFAULT_OPSET, dynamic: bool = False) -> bytes:
    return export_bytes(model, input_size, batch=batch, opset=opset, dynamic=dynamic, outputs=raw_outputs(model))


def run_raw(sess, model: nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    """ONNX Runtime's raw outputs for input `x`, in `model.raw_names` order."""
    return sess.run(list(model.raw_names), {INPUT_NAME: x.numpy()})


@torch.no_grad()
def compare_detector(model: nn.Module, sess, x: torch.Tensor, **decode_kwargs) -> dict:
    """PyTorch vs ONNX Runtime: max abs difference per raw output, and whether the decoded detections agree
    (same count, labels, and boxes/scores within 1e-3 / 1e-4)."""
    model = model.cpu().eval()
    ref = model(x)
    got = run_raw(sess, model, x)
    diffs = {name: float(np.abs(g - ref[name].numpy()).max()) if g.shape == tuple(ref[name].shape) else float("inf")
             for name, g in zip(model.raw_names, got)}
    size = tuple(x.shape[-2:])
    a, b = model.decode(ref, size, **decode_kwargs), model.decode(got, size, **decode_kwargs)
    same = all(len(p["boxes"]) == len(q["boxes"]) and torch.equal(p["labels"], q["labels"])
               and torch.allclose(p["boxes"], q["boxes"], atol=1e-3) and torch.allclose(p["scores"], q["scores"], atol=1e-4)
               for p, q in zip(a, b))
    return {"max_abs_diff": diffs, "detections_match": same, "detections": sum(len(p["boxes"]) for p in a)}
