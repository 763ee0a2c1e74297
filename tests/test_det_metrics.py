"""The mAP we report equals pycocotools' COCOeval on the same predictions and ground truth (acceptance 3)."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch

from nascli.engine.det_metrics import DetectionMetric

CLASSES = ["cat", "dog"]

# Per image: ground truth (box xyxy, label, difficult) and predictions (box, label, score). Image 2 has a
# difficult box with a confident detection on it; image 3 has no objects (and one false positive);
# boxes span COCO's small, medium and large ranges.
FIXTURE = [
    ([([10, 10, 60, 60], 0, False), ([70, 70, 120, 130], 1, False)],
     [([12, 11, 61, 58], 0, 0.9), ([100, 5, 140, 40], 0, 0.3), ([75, 80, 125, 135], 1, 0.8)]),
    ([([5, 5, 40, 40], 0, True), ([50, 50, 150, 150], 0, False)],
     [([6, 5, 41, 39], 0, 0.95), ([55, 48, 148, 152], 0, 0.7), ([0, 0, 30, 30], 1, 0.2)]),
    ([],
     [([20, 20, 80, 90], 1, 0.6)]),
    ([([0, 0, 20, 20], 1, False), ([30, 30, 60, 45], 1, False)],
     [([1, 2, 19, 21], 1, 0.5), ([40, 40, 90, 90], 0, 0.4), ([31, 29, 58, 46], 1, 0.45)]),
]


def _ours() -> dict[str, float]:
    metric = DetectionMetric(CLASSES)
    for gts, preds in FIXTURE:
        target = {"boxes": torch.tensor([g[0] for g in gts], dtype=torch.float32).reshape(-1, 4),
                  "labels": torch.tensor([g[1] for g in gts], dtype=torch.int64),
                  "difficult": torch.tensor([g[2] for g in gts], dtype=torch.bool)}
        pred = {"boxes": torch.tensor([p[0] for p in preds], dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor([p[1] for p in preds], dtype=torch.int64),
                "scores": torch.tensor([p[2] for p in preds], dtype=torch.float32)}
        metric.update([pred], [target])
    return metric.compute()


def _xywh(b):
    return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]


def _cocoeval():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, dets = [], [], []
    for i, (gts, preds) in enumerate(FIXTURE, start=1):
        images.append({"id": i, "width": 200, "height": 200})
        for box, label, difficult in gts:
            xywh = _xywh(box)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": label + 1, "bbox": xywh,
                         "area": xywh[2] * xywh[3], "iscrowd": int(difficult)})
        for box, label, score in preds:
            dets.append({"image_id": i, "category_id": label + 1, "bbox": _xywh(box), "score": score})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns,
                      "categories": [{"id": k + 1, "name": n} for k, n in enumerate(CLASSES)]}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def test_map_equals_pycocotools_cocoeval_with_difficult_box_and_empty_image():
    ours = _ours()
    ev = _cocoeval()
    expected = dict(zip(["map", "map_50", "map_75", "map_small", "map_medium", "map_large"], ev.stats[:6]))
    expected["mar_100"] = ev.stats[8]
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, abs=1e-4), key
    precision = ev.eval["precision"]  # [iou, recall, class, area, max dets]; area 0 = all, max dets 2 = 100
    for k, name in enumerate(CLASSES):
        p = precision[:, :, k, 0, 2]
        assert ours[f"ap_{name}"] == pytest.approx(float(np.mean(p[p > -1])), abs=1e-4), name
    # Not a degenerate fixture: the numbers are neither perfect nor zero, and the classes differ.
    assert 0.2 < ours["map"] < 0.9 and ours["ap_cat"] != ours["ap_dog"]


def test_difficult_box_detection_is_ignored_not_a_false_positive():
    """A detection on a difficult box is neither a true nor a false positive (COCO iscrowd)."""
    metric = DetectionMetric(CLASSES)
    gts, preds = FIXTURE[1]
    target = {"boxes": torch.tensor([g[0] for g in gts], dtype=torch.float32),
              "labels": torch.tensor([0, 0]), "difficult": torch.tensor([True, False])}
    keep = [p for p in preds if p[1] == 0]
    pred = {"boxes": torch.tensor([p[0] for p in keep], dtype=torch.float32), "labels": torch.tensor([0, 0]),
            "scores": torch.tensor([p[2] for p in keep])}
    metric.update([pred], [target])
    assert metric.compute()["map_50"] == pytest.approx(1.0)
    # The other half: a difficult box nobody detects costs no recall; the same box, not difficult, does.
    on_b = {k: v[1:] for k, v in pred.items()}
    metric.reset()
    metric.update([on_b], [target])
    assert metric.compute()["map_50"] == pytest.approx(1.0)
    metric.reset()
    metric.update([on_b], [{**target, "difficult": torch.tensor([False, False])}])
    assert metric.compute()["map_50"] == pytest.approx(0.5, abs=0.01)


def test_class_without_ground_truth_or_detections_is_minus_one():
    metric = DetectionMetric(["a", "b", "c"])
    metric.update([{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([0])}],
                  [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([0])}])
    out = metric.compute()
    assert out["ap_a"] == pytest.approx(1.0) and out["ap_b"] == -1.0 and out["ap_c"] == -1.0
