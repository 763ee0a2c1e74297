"""Detection train and eval loops: mean loss, clipping, divergence, and scoring in the original frame."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nascli.engine.det_loops import evaluate_detector, to_original_frame, train_detector_steps
from nascli.engine.loops import DivergedError
from nascli.zoo.registry import create_model

CLASSES = ["circle", "square"]


def _batch(seed: int, size=(64, 64), n=2):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, *size, generator=g)
    targets = []
    for _ in range(n):
        boxes = torch.tensor([[4.0, 6.0, 30.0, 40.0], [34.0, 20.0, 60.0, 50.0]])
        targets.append({"boxes": boxes, "labels": torch.tensor([0, 1]), "difficult": torch.tensor([False, False]),
                        "orig_boxes": boxes * 2, "orig_size": (size[0] * 2, size[1] * 2), "image_id": "x"})
    return images, targets


def test_train_steps_return_mean_loss_and_clip_gradients():
    torch.manual_seed(0)
    model = create_model("mobilenetv2_fpn", num_classes=2, width=16)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the step changes nothing, losses are comparable
    seen = []
    mean = train_detector_steps(model, [_batch(0), _batch(1)], opt, device="cpu",
                                on_step=lambda i, loss: seen.append(loss), clip_norm=1e-3)
    assert len(seen) == 2 and mean == pytest.approx(sum(seen) / 2)
    total = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters() if p.grad is not None))
    assert total <= 1e-3 * 1.01  # clipped


def test_non_finite_loss_raises_diverged():
    torch.manual_seed(0)
    model = create_model("mobilenetv2_fpn", num_classes=2, width=16)
    images, targets = _batch(0)
    images[0, 0, 0, 0] = float("nan")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(DivergedError, match="at step 0"):
        train_detector_steps(model, [(images, targets)], opt)


def test_to_original_frame_scales_each_axis():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    assert torch.equal(to_original_frame(boxes, (100, 50), (200, 25)), torch.tensor([[5.0, 40.0, 15.0, 80.0]]))


class _Oracle(nn.Module):
    """Stands in for a detector whose decode returns the input-frame ground truth (remembered per call)."""

    raw_names = ("cls_logits",)

    def __init__(self, batches):
        super().__init__()
        self.answers = [t for _, targets in batches for t in targets]
        self.calls = 0

    def forward(self, images):
        return {"cls_logits": torch.zeros(images.shape[0], 1, 1)}

    def decode(self, raw, image_size, **kw):
        n = raw["cls_logits"].shape[0]
        out = [{"boxes": t["boxes"], "scores": torch.ones(len(t["boxes"])), "labels": t["labels"]}
               for t in self.answers[self.calls:self.calls + n]]
        self.calls += n
        return out


def test_evaluate_maps_detections_back_to_orig_boxes():
    """Perfect input-frame detections score 1.0 only if they are scaled to the original frame."""
    batches = [_batch(0), _batch(1)]
    metrics = evaluate_detector(_Oracle(batches), batches, "cpu", CLASSES)
    assert metrics["map"] == pytest.approx(1.0) and metrics["ap_circle"] == pytest.approx(1.0)
    unscaled = [(x, [{**t, "orig_size": tuple(x.shape[-2:])} for t in ts]) for x, ts in batches]
    assert evaluate_detector(_Oracle(unscaled), unscaled, "cpu", CLASSES)["map"] < 0.5


def test_evaluate_real_detector_and_raw_fn_path_agree():
    torch.manual_seed(0)
    model = create_model("mobilenetv2_fpn", num_classes=2, width=16).eval()
    batches = [_batch(0)]
    a = evaluate_detector(model, batches, "cpu", CLASSES, score_thresh=0.0)
    b = evaluate_detector(model, batches, "cpu", CLASSES, score_thresh=0.0,
                          raw_fn=lambda x: [v.numpy() for v in model(x).values()])
    assert a == b and set(a) >= {"map", "map_50", "map_75", "mar_100", "ap_circle", "ap_square"}
