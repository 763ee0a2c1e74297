"""Detector export: the raw-output graph through the project's exporter; ONNX Runtime parity on the raw
outputs and, through the one shared decode, on the final detections."""

from __future__ import annotations

import pytest
import torch

from nascli.export.det_onnx import compare_detector, export_detector_bytes, run_raw
from nascli.export.onnx import seeded_input, session, with_metadata
from nascli.spaces.efficientdet import efficientdet_kwargs
from nascli.zoo.registry import create_model


def _spread_scores(model: torch.nn.Module) -> None:
    """Random-init heads score every anchor about 0.01: widen the logits so the decoded detections have
    distinct scores and the comparison checks ranking and NMS, not ties."""
    g = torch.Generator().manual_seed(1)
    conv = model.head.classification_head.cls_logits
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.3)
        conv.bias.zero_()


def _model(name: str):
    torch.manual_seed(0)
    if name.startswith("efficientdet"):
        batch_norm = name == "efficientdet-batchnorm"
        kw = efficientdet_kwargs("phi0", base_size=64, head_norm="batch" if batch_norm else "group")
        model = create_model("efficientdet", num_classes=3, **kw["model"])
        if batch_norm:  # running statistics of their own per level, so the exported BatchNorms are not identities
            with torch.no_grad():
                model.train()(seeded_input(tuple(kw["input_size"]), batch=4) * 3 + 1)
        return model.eval(), tuple(kw["input_size"])
    return create_model(name, num_classes=3, width=32).eval(), (64, 64)


@pytest.mark.parametrize("name", ["mobilenetv2_fpn", "efficientdet", "efficientdet-batchnorm"])
def test_onnx_runtime_matches_pytorch_on_raw_outputs_and_detections(name):
    model, size = _model(name)
    _spread_scores(model)
    proto = with_metadata(export_detector_bytes(model, size, batch=2), {"model": name})  # onnx.checker runs in here
    assert [o.name for o in proto.graph.output] == list(model.raw_names)
    sess = session(proto.SerializeToString(), threads=1)
    x = seeded_input(size, batch=2)
    report = compare_detector(model, sess, x, score_thresh=0.05, detections_per_img=50)
    assert max(report["max_abs_diff"].values()) < 1e-4, report
    assert report["detections"] > 20 and report["detections_match"], report


def test_dynamic_export_runs_at_another_size_and_decodes_there():
    model, _ = _model("mobilenetv2_fpn")
    sess = session(export_detector_bytes(model, (64, 64), dynamic=True), threads=1)
    x = seeded_input((96, 128), batch=1)
    got = run_raw(sess, model, x)
    with torch.no_grad():
        ref = model(x)
    assert got[0].shape == tuple(ref["cls_logits"].shape)
    assert abs(got[1] - ref["bbox_regression"].numpy()).max() < 1e-4
    assert len(model.decode(got, (96, 128), score_thresh=0.0)) == 1
