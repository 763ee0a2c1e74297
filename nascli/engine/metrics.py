"""Segmentation metrics from one confusion matrix, accumulated with a single `bincount` per batch."""

from __future__ import annotations

import math

import numpy as np
import torch


class ConfusionMatrix:
    """Rows are labels, columns predictions; pixels labelled `ignore_index` are skipped."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred, target: integer tensors of the same shape (class ids)."""
        pred, target = pred.reshape(-1).to(torch.int64).cpu(), target.reshape(-1).to(torch.int64).cpu()
        keep = (target != self.ignore_index) & (target >= 0) & (target < self.num_classes)
        n = self.num_classes
        self.mat += torch.bincount(target[keep] * n + pred[keep], minlength=n * n).reshape(n, n)

    def compute(self) -> dict:
        """mIoU over classes present in labels or predictions (absent ones are NaN, listed, and excluded),
        frequency-weighted IoU, pixel accuracy, mean class accuracy (over classes present in labels)."""
        m = self.mat.to(torch.float64).numpy()
        tp = np.diag(m)
        label_count = m.sum(1)
        pred_count = m.sum(0)
        union = label_count + pred_count - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            acc = np.where(label_count > 0, tp / label_count, np.nan)
        total = label_count.sum()
        freq = label_count / total if total else np.zeros_like(label_count)
        present = union > 0
        return {
            "miou": _nanmean(iou),
            "fwiou": float(np.nansum(freq * np.nan_to_num(iou))) if total else math.nan,
            "pixel_acc": float(tp.sum() / total) if total else math.nan,
            "mean_acc": _nanmean(acc),
            "iou": [None if math.isnan(v) else float(v) for v in iou],
            "acc": [None if math.isnan(v) else float(v) for v in acc],
            "absent_classes": [int(i) for i in np.flatnonzero(~present)],
            "pixels": int(total),
            # shares of the labelled (not ignored) pixels: what the labels hold and what the model predicts
            "label_share": [float(v) for v in (label_count / total if total else label_count)],
            "pred_share": [float(v) for v in (pred_count / total if total else pred_count)],
        }


# A class counts as predicted when it gets at least this share of the predicted pixels.
PREDICTED_SHARE = 1e-3
# A class covering at least this share of the labelled pixels must be predicted (data.degenerate_share).
DEGENERATE_SHARE = 0.02


def degeneracy(metrics: dict, class_names: list[str] | None = None,
               min_label_share: float = DEGENERATE_SHARE) -> str | None:
    """Why a model's predictions are degenerate, or None when they are not.

    Degenerate: one class takes all but PREDICTED_SHARE of the predictions, or a class that covers at
    least `min_label_share` of the labelled pixels gets under PREDICTED_SHARE of them. Such a model's mIoU
    says little (a briefly trained network that predicts the majority class everywhere scores the
    majority's IoU over the number of classes), so its ranking against others is noise.
    """
    pred, label = metrics.get("pred_share"), metrics.get("label_share")
    if not pred or not label or not sum(label):
        return None
    names = class_names if class_names and len(class_names) == len(pred) else [str(i) for i in range(len(pred))]
    top = int(np.argmax(pred))
    if pred[top] >= 1 - PREDICTED_SHARE:
        return f"predicts only {names[top]!r} ({pred[top]:.1%} of pixels)"
    missing = [i for i, (p, s) in enumerate(zip(pred, label)) if s >= min_label_share and p < PREDICTED_SHARE]
    if missing:
        shown = ", ".join(f"{names[i]!r} ({label[i]:.1%} of labels)" for i in missing[:3])
        return f"never predicts {shown}" + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else "")
    return None


def share_text(shares: list[float]) -> str:
    """Per-class shares as compact text for a CSV cell: '0.781 0.219'."""
    return " ".join(f"{v:.3f}" for v in shares)


def _nanmean(v: np.ndarray) -> float:
    return float(np.nanmean(v)) if np.isfinite(v).any() else math.nan


def reward(metrics: dict) -> float:
    """Fast-NAS reward: geometric mean of mIoU, frequency-weighted IoU and mean class accuracy."""
    vals = [metrics["miou"], metrics["fwiou"], metrics["mean_acc"]]
    if any(math.isnan(v) or v <= 0 for v in vals):
        return 0.0
    return float(np.prod(vals) ** (1 / 3))
