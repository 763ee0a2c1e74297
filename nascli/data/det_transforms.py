"""Albumentations (2.x) pipelines for detection: boxes move with the pixels (`A.BboxParams`).

Both pipelines take `image=` (HxWx3 uint8 RGB), `bboxes=` ((N, 4) pascal_voc xyxy pixels) and the label
fields `labels=`, `difficult=`, `box_ids=` (one value per box, so a box's class, difficult flag and index
stay with it when boxes are dropped), and return a normalised 3xHxW float tensor of exactly `size`
(H, W), so every batch stacks. Normalisation is the segmentation pipelines' own (`transforms._finish`).

- Evaluation: a plain resize to `size`, no letterbox: a box maps between the network input and the
  original image by a per-axis scale (`scale_boxes`). Every box is kept.
- Training: resize to `size`, then the segmentation recipe's random scale in [scale_min, scale_max]
  (aspect kept), pad to `size` if smaller, random crop of `size`, horizontal flip, colour jitter. A box
  that leaves the crop is clipped to it; one whose visible part is under `MIN_VISIBILITY` of its area
  before the crop is dropped (with its label fields), and so is one narrower or lower than `MIN_SIDE`
  pixels after clipping (a sliver along the crop edge is not an object a detector can find).
"""

from __future__ import annotations

import random
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch

from nascli.config import DataConfig
from nascli.data.transforms import _finish

LABEL_FIELDS = ["labels", "difficult", "box_ids"]
MIN_VISIBILITY = 0.3  # share of a box's area that must stay inside the training crop
MIN_SIDE = 2.0  # pixels: narrower boxes left after clipping to the crop are dropped


def _bbox_params(min_visibility: float = 0.0, min_side: float = 0.0) -> A.BboxParams:
    return A.BboxParams(format="pascal_voc", label_fields=LABEL_FIELDS, min_visibility=min_visibility,
                        min_width=min_side, min_height=min_side, clip=True)


def detection_eval_transform(data_cfg: DataConfig, size: tuple[int, int]) -> A.Compose:
    """Resize to `size` (H, W), no letterbox, then normalise; every box kept, scaled per axis."""
    h, w = size
    return A.Compose([A.Resize(height=h, width=w, interpolation=cv2.INTER_LINEAR), *_finish(data_cfg)],
                     bbox_params=_bbox_params())


def detection_train_transform(data_cfg: DataConfig, size: tuple[int, int]) -> A.Compose:
    """Resize to `size`, random scale, pad, random crop to `size`, flip, colour jitter, normalise (module doc)."""
    aug = data_cfg.augment
    h, w = size
    lo, hi = sorted((aug.scale_min, aug.scale_max))
    steps: list[Any] = [
        A.Resize(height=h, width=w, interpolation=cv2.INTER_LINEAR),
        A.RandomScale(scale_limit=(lo - 1.0, hi - 1.0), interpolation=cv2.INTER_LINEAR, p=1.0),
        A.PadIfNeeded(min_height=h, min_width=w, position="center", border_mode=cv2.BORDER_CONSTANT, fill=0),
        A.RandomCrop(height=h, width=w),
    ]
    if aug.hflip > 0:
        steps.append(A.HorizontalFlip(p=aug.hflip))
    if aug.color_jitter > 0:
        steps.append(A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05, p=aug.color_jitter))
    return A.Compose(steps + _finish(data_cfg), bbox_params=_bbox_params(MIN_VISIBILITY, MIN_SIDE))


def apply_seeded_boxes(transform: A.Compose, seed: int | None, **data: Any) -> dict:
    """`transform(**data)` with its random state set from `seed`, as `listfile.apply_seeded` does for masks."""
    if seed is not None:
        transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
    return transform(**data)


def scale_boxes(boxes: torch.Tensor | np.ndarray, from_size: tuple[int, int],
                to_size: tuple[int, int]) -> torch.Tensor | np.ndarray:
    """xyxy boxes from an image of `from_size` (H, W) to one of `to_size` (H, W), e.g. predictions on the
    resized network input back to the original image. Returns the same type as `boxes`; (N, 4) or (4,)."""
    (fh, fw), (th, tw) = from_size, to_size
    factors = [tw / fw, th / fh, tw / fw, th / fh]
    if isinstance(boxes, torch.Tensor):
        return boxes * torch.tensor(factors, dtype=boxes.dtype, device=boxes.device)
    return np.asarray(boxes) * np.asarray(factors, dtype=np.asarray(boxes).dtype if np.asarray(boxes).dtype.kind == "f"
                                          else np.float64)
