"""Segmentation losses and the budget rules that make short trainings mean something on small data.

- `SegLoss`: cross-entropy, soft Dice, or both, with optional class weights (`train.loss`,
  `train.class_weights`; the same keys in `candidate` and `pretrain`).
- `median_frequency`: class weights from a training list's pixel histogram (Eigen & Fergus, ICCV 2015):
  freq(c) = pixels of c / pixels of the images that contain c; weight(c) = median(freq) / freq(c).
- `with_min_steps`: a training's epochs raised so it takes at least `min_steps` optimiser steps.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F

from nascli.config import TrainConfig
from nascli.errors import ConfigError

log = logging.getLogger(__name__)

TINY_STEPS = 50  # fewer optimiser steps than this in a whole training: warn
_DICE_EPS = 1.0  # smoothing of the Dice ratio (per class, in pixels)


def median_frequency(pixels: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Median-frequency class weights from per-class labelled pixel counts and the labelled pixel count of
    the images each class appears in (nascli.data.check.PixelHistogram's pixels and present_pixels).
    Classes absent from the training masks get weight 1 (cross-entropy never sees them as a target, so the
    value does not matter)."""
    pixels, images = np.asarray(pixels, dtype=np.float64), np.asarray(images, dtype=np.float64)
    present = (pixels > 0) & (images > 0)
    weights = np.ones_like(pixels)
    if present.any():
        freq = pixels[present] / images[present]
        weights[present] = np.median(freq) / freq
    return weights


def check_class_weights(spec: str | list[float], num_classes: int, section: str) -> None:
    """ConfigError for given weights that do not fit the classes (cheap: steps call it before writing)."""
    if not isinstance(spec, list):
        return
    if len(spec) != num_classes:
        raise ConfigError(f"{section}.class_weights has {len(spec)} weights for {num_classes} classes",
                          hint="give one weight per class in classes.txt order, or median_frequency")
    if any(w < 0 for w in spec) or not any(w > 0 for w in spec):
        raise ConfigError(f"{section}.class_weights must be non-negative with at least one positive",
                          hint="e.g. [1.0, 4.0]")


def resolve_class_weights(cfg: TrainConfig, dataset, num_classes: int, ignore_index: int,
                          section: str, class_names: list[str] | None = None) -> torch.Tensor | None:
    """The weights `cfg.class_weights` asks for (None for unweighted), logged with the class names."""
    spec = cfg.class_weights
    if spec == "none":
        return None
    if isinstance(spec, list):
        check_class_weights(spec, num_classes, section)
        weights = np.asarray(spec, dtype=np.float64)
        origin = "given"
    else:
        from nascli.data.check import mask_histogram

        hist = mask_histogram(dataset.samples, num_classes, ignore_index)
        weights = median_frequency(hist.pixels, hist.present_pixels)
        origin = f"median frequency over {len(dataset)} training masks"
    names = class_names or [str(i) for i in range(num_classes)]
    log.info("%s class weights (%s): %s", section, origin, ", ".join(f"{n} {w:.3g}" for n, w in zip(names, weights)))
    return torch.tensor(weights, dtype=torch.float32)


class SegLoss:
    """loss(logits, target, at): `at="label"` resizes the logits to the label (bilinear); `at="logits"`
    samples the label nearest-exact at the logits' grid (each output cell takes the label at its centre;
    far cheaper when the decoder predicts at stride 4)."""

    def __init__(self, kind: str = "ce", ignore_index: int = 255, weight: torch.Tensor | None = None):
        self.kind, self.ignore_index, self.weight = kind, ignore_index, weight

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, at: str = "label") -> torch.Tensor:
        if logits.shape[-2:] != target.shape[-2:]:
            if at == "logits":
                target = F.interpolate(target[:, None].float(), size=logits.shape[-2:],
                                       mode="nearest-exact")[:, 0].long()
            else:
                logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        weight = None if self.weight is None else self.weight.to(logits.device)
        loss = logits.new_zeros(())
        if self.kind in ("ce", "ce+dice"):
            loss = loss + F.cross_entropy(logits, target, weight=weight, ignore_index=self.ignore_index)
        if self.kind in ("dice", "ce+dice"):
            loss = loss + soft_dice(logits, target, self.ignore_index, weight)
        return loss


def soft_dice(logits: torch.Tensor, target: torch.Tensor, ignore_index: int,
              weight: torch.Tensor | None = None) -> torch.Tensor:
    """1 - mean over the classes present in the batch's labels of the soft Dice ratio (ignored pixels
    left out), weighted per class when `weight` is given. Classes absent from the batch are left out: a
    ratio of 0/0 would reward predicting nothing."""
    num_classes = logits.shape[1]
    valid = (target != ignore_index) & (target >= 0) & (target < num_classes)
    probs = logits.float().softmax(1) * valid[:, None]
    onehot = F.one_hot(target.clamp(0, num_classes - 1) * valid, num_classes).permute(0, 3, 1, 2) * valid[:, None]
    dims = (0, 2, 3)
    inter, total = (probs * onehot).sum(dims), probs.sum(dims) + onehot.sum(dims)
    present = onehot.sum(dims) > 0
    if not present.any():
        return logits.sum() * 0.0
    dice = 1 - (2 * inter + _DICE_EPS) / (total + _DICE_EPS)
    w = present.float() if weight is None else weight.to(dice.device) * present
    return (dice * w).sum() / w.sum().clamp_min(1e-12)


def with_min_steps(cfg: TrainConfig, steps_per_epoch: int, what: str) -> TrainConfig:
    """`cfg` with its epochs raised to reach `cfg.min_steps` optimiser steps; a warning when the training
    still has fewer than TINY_STEPS steps (the user's settings are kept, but they should know)."""
    steps_per_epoch = max(1, steps_per_epoch)
    epochs = cfg.epochs
    if cfg.min_steps and epochs * steps_per_epoch < cfg.min_steps:
        epochs = math.ceil(cfg.min_steps / steps_per_epoch)
        log.info("%s: %d epochs of %d steps are under min_steps %d: training %d epochs (%d steps)", what, cfg.epochs,
                 steps_per_epoch, cfg.min_steps, epochs, epochs * steps_per_epoch)
    total = epochs * steps_per_epoch
    if total < TINY_STEPS:
        log.warning("%s trains only %d optimiser steps (%d epochs x %d); on a small training list that is too few "
                    "to learn anything: raise min_steps or the epochs, or lower the batch size", what, total, epochs,
                    steps_per_epoch)
    return cfg if epochs == cfg.epochs else cfg.model_copy(update={"epochs": epochs})
