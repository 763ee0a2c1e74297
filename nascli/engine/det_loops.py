"""Detection training and evaluation loops (the detectors of `nascli.zoo.detectors`).

A batch is `(images [B, 3, H, W], targets)`, each target a dict with `boxes` (xyxy, input pixels),
`labels` (0..C-1), `difficult`, `orig_boxes` (the boxes in the original image), `orig_size` (h, w).
Evaluation decodes in the input frame, maps the detections to the original image with one scale per
axis (the data layer resizes without cropping at evaluation) and scores them against `orig_boxes`, so
COCO's small/medium/large ranges refer to the original pixels.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from nascli.engine.det_metrics import DetectionMetric
from nascli.engine.loops import train_steps

DEFAULT_CLIP_NORM = 10.0


def train_detector_steps(model: nn.Module, batches: Iterable, optimizer: torch.optim.Optimizer, scheduler=None,
                         device: str | torch.device = "cpu", on_step: Callable[[int, float], None] | None = None,
                         clip_norm: float | None = DEFAULT_CLIP_NORM) -> float:
    """One pass over `batches` (engine.loops.train_steps): loss = the sum of the model's losses, gradients
    clipped to `clip_norm` (None: no clipping). Returns the mean loss; a non-finite loss raises DivergedError
    before the step."""
    model.train()

    def loss(batch) -> torch.Tensor:
        images, targets = batch
        images = images.to(device)
        return sum(model.loss(model(images), targets, images.shape[-2:]).values())

    return train_steps(loss, batches, optimizer, scheduler, on_step=on_step, clip_norm=clip_norm)


def to_original_frame(boxes: torch.Tensor, input_size: Sequence[int], orig_size: Sequence[int]) -> torch.Tensor:
    """xyxy boxes in the network's input frame -> the original image's, one scale per axis."""
    sy, sx = float(orig_size[0]) / float(input_size[0]), float(orig_size[1]) / float(input_size[1])
    return boxes * boxes.new_tensor([sx, sy, sx, sy])


def _orig_target(t: Mapping) -> dict:
    return {"boxes": torch.as_tensor(t["orig_boxes"], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(t["labels"], dtype=torch.int64),
            "difficult": torch.as_tensor(t.get("difficult", torch.zeros(len(t["labels"]), dtype=torch.bool)))}


@torch.no_grad()
def evaluate_detector(model: nn.Module, loader: Iterable, device: str | torch.device, class_names: Sequence[str],
                      *, raw_fn: Callable[[torch.Tensor], object] | None = None, score_thresh: float = 0.05,
                      nms_thresh: float = 0.5, detections_per_img: int = 100, topk_candidates: int = 1000) -> dict:
    """COCO metrics (`nascli.engine.det_metrics`) of `model` on `loader`'s batches, in original pixels.

    `raw_fn(images)` gives the raw outputs (default: `model(images)` on `device`); pass an ONNX Runtime
    session's run to evaluate an exported model: decoding is `model.decode` in both cases.
    """
    model.eval()
    metric = DetectionMetric(class_names)
    for images, targets in loader:
        size = tuple(images.shape[-2:])
        raw = raw_fn(images) if raw_fn is not None else model(images.to(device))
        dets = model.decode(raw, size, score_thresh=score_thresh, nms_thresh=nms_thresh,
                            detections_per_img=detections_per_img, topk_candidates=topk_candidates)
        preds = [{**d, "boxes": to_original_frame(d["boxes"], size, t["orig_size"])} for d, t in zip(dets, targets)]
        metric.update(preds, [_orig_target(t) for t in targets])
    return metric.compute()
