"""Albumentations (2.x) pipelines: random-scale-and-crop training augmentation, and evaluation as stored.

Both take `image=` (HxWx3 uint8 RGB) and `mask=` (HxW uint8 class ids) and return a normalised 3xHxW
float tensor and a HxW uint8 tensor (`augment` and the dataset turn it into int64). Masks are always
resized with nearest neighbour (albumentations' default `mask_interpolation`), and padded with the
ignore value, so no made-up class ids appear.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

from nascli.config import DataConfig
from nascli.data.listfile import apply_seeded, to_tensors


def train_transform(cfg: DataConfig) -> A.Compose:
    """Random scale (aspect kept) in [scale_min, scale_max], pad, random crop to `input_size` (H, W), flip,
    colour jitter, blur or sharpen, cutout; then normalise. Probabilities come from `cfg.augment`; a
    transform whose probability is 0 is left out."""
    aug = cfg.augment
    h, w = cfg.input_size
    lo, hi = sorted((aug.scale_min, aug.scale_max))
    steps: list[Any] = [
        A.RandomScale(scale_limit=(lo - 1.0, hi - 1.0), interpolation=cv2.INTER_LINEAR, p=1.0),
        A.PadIfNeeded(min_height=h, min_width=w, position="center", border_mode=cv2.BORDER_CONSTANT,
                      fill=0, fill_mask=cfg.ignore_index),
        A.RandomCrop(height=h, width=w),
    ]
    if aug.hflip > 0:
        steps.append(A.HorizontalFlip(p=aug.hflip))
    if aug.color_jitter > 0:
        steps.append(A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05, p=aug.color_jitter))
    if aug.blur_sharpen > 0:
        steps.append(A.OneOf([A.Blur(blur_limit=(3, 5)), A.Sharpen(alpha=(0.2, 0.5), lightness=(0.8, 1.0))],
                             p=aug.blur_sharpen))
    if aug.cutout > 0:
        steps.append(A.CoarseDropout(num_holes_range=(1, 3), hole_height_range=(0.1, 0.3),
                                     hole_width_range=(0.1, 0.3), fill=0, fill_mask=cfg.ignore_index, p=aug.cutout))
    return A.Compose(steps + _finish(cfg))


class _ScaleImage(A.ImageOnlyTransform):
    """Resize the image (not the mask) by a factor, keeping its aspect ratio; sides rounded half up, at least 1."""

    def __init__(self, scale: float, p: float = 1.0):
        super().__init__(p=p)
        self.scale = scale

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        h, w = img.shape[:2]
        size = (max(1, int(w * self.scale + 0.5)), max(1, int(h * self.scale + 0.5)))
        interp = cv2.INTER_AREA if self.scale < 1 else cv2.INTER_LINEAR
        return cv2.resize(img, size, interpolation=interp)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("scale",)


def eval_transform(cfg: DataConfig) -> A.Compose:
    """Normalise only; with `cfg.eval_scale` != 1 the IMAGE is resized by that factor and the mask is not.

    The caller resizes the model's logits to the mask's size (bilinear) before the argmax, so metrics are
    always computed at the label's own resolution.
    """
    steps: list[Any] = [] if cfg.eval_scale == 1 else [_ScaleImage(cfg.eval_scale)]
    return A.Compose(steps + _finish(cfg))


def _finish(cfg: DataConfig) -> list[Any]:
    return [A.Normalize(mean=cfg.mean, std=cfg.std, max_pixel_value=255.0), ToTensorV2()]


def augment(transform: A.Compose, image: np.ndarray, mask: np.ndarray, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`transform` applied to one pair, deterministic for `seed`: (3xHxW float image, HxW int64 mask).

    Derive per-view seeds with `nascli.data.listfile.derive_seed(seed, view, index)`. Sets the transform's
    random state, so do not share one transform object between threads.
    """
    return to_tensors(apply_seeded(transform, image, mask, seed))
