"""COCO-style detection metrics: torchmetrics' `MeanAveragePrecision` on the faster-coco-eval backend.

`DetectionMetric.compute()` gives a flat dict of floats:

- `map` (mAP@[.5:.95]), `map_50`, `map_75`, `map_small`, `map_medium`, `map_large`, `mar_100`;
- `ap_<class name>`: per-class AP@[.5:.95] for every name in `class_names`.

Conventions (COCO's, as pycocotools computes them; `tests/test_det_metrics.py` checks the figures
against `COCOeval` to 1e-4):

- -1 means "undefined": no ground truth of that class or size range (and no detection matched).
- small / medium / large are COCO's absolute areas (< 32^2, < 96^2, larger), measured on the boxes as
  given: pass boxes in the original image frame so that the ranges mean what COCO means.
- VOC `difficult` boxes are passed as COCO `iscrowd`: a detection matched to one is ignored (neither
  true nor false positive) and the box is not counted in recall. COCO matches crowd regions by
  intersection over the detection's area rather than IoU, and lets several detections match one, so
  this is COCO's handling of ignored regions, not VOC devkit's; it is the one the library implements.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torchmetrics.detection import MeanAveragePrecision

SUMMARY_KEYS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100")


class DetectionMetric:
    """Accumulate (predictions, targets) per image; `compute()` the flat dict above."""

    def __init__(self, class_names: Sequence[str]):
        self.class_names = list(class_names)
        self.metric = MeanAveragePrecision(backend="faster_coco_eval", iou_type="bbox", class_metrics=True)

    def update(self, preds: Sequence[Mapping[str, torch.Tensor]], targets: Sequence[Mapping[str, torch.Tensor]]) -> None:
        """`preds`: boxes xyxy, scores, labels; `targets`: boxes, labels and optional `difficult`."""
        p = [{"boxes": d["boxes"].detach().float().cpu().reshape(-1, 4), "scores": d["scores"].detach().float().cpu(),
              "labels": d["labels"].detach().long().cpu()} for d in preds]
        t = []
        for g in targets:
            boxes = g["boxes"].detach().float().cpu().reshape(-1, 4)
            difficult = g.get("difficult")
            crowd = (torch.zeros(len(boxes), dtype=torch.long) if difficult is None
                     else torch.as_tensor(difficult).bool().long().cpu())
            t.append({"boxes": boxes, "labels": g["labels"].detach().long().cpu(), "iscrowd": crowd})
        self.metric.update(p, t)

    def compute(self) -> dict[str, float]:
        r = self.metric.compute()
        out = {k: float(r[k]) for k in SUMMARY_KEYS}
        per_class = {int(c): float(v) for c, v in zip(r["classes"].reshape(-1), r["map_per_class"].reshape(-1))}
        for i, name in enumerate(self.class_names):
            out[f"ap_{name}"] = per_class.get(i, -1.0)
        return out

    def reset(self) -> None:
        self.metric.reset()
