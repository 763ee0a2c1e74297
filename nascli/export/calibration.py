"""Calibration images for int8 export: training images preprocessed exactly as `nascli eval` does.

Preprocessing: the evaluation transform (`eval_transform`: the data's `eval_scale`, then normalisation
with the model's mean/std), then, for an ONNX model with a fixed input size, a bilinear resize to that
size, which is what `eval --onnx` does to each image (nascli.steps.eval.load_onnx). The images are a
seeded sample (without replacement) of the list, so the same seed picks the same images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn.functional as F

from nascli.config import DataConfig
from nascli.data.listfile import SegmentationDataset, read_list
from nascli.data.transforms import eval_transform
from nascli.errors import DataError, UsageError

DEFAULT_IMAGES = 64
MIN_IMAGES = 8  # below this the activation ranges are a handful of images' extremes


@dataclass
class Calibration:
    inputs: list[np.ndarray]  # 1x3xHxW float32, in the order used
    record: dict[str, Any]  # what the metadata and export.json say about them


def check_count(n: int) -> None:
    if n < MIN_IMAGES:
        raise UsageError(f"option --calibration-images: {n} is too few to calibrate int8 ranges",
                         hint=f"use at least {MIN_IMAGES} (default {DEFAULT_IMAGES})")


def calibration_set(data: DataConfig, list_file: Path, n: int, input_size: tuple[int, int], *,
                    seed: int = 0, make_dataset=None) -> Calibration:
    """`n` images of `list_file` (seeded sample), preprocessed as eval does, at `input_size`.

    `make_dataset(samples)` is the task's evaluation dataset of the picked samples (default segmentation's);
    only its images are used."""
    check_count(n)
    samples = read_list(list_file, data.data_root)
    if len(samples) < n:
        raise DataError(f"calibration list {list_file} has {len(samples)} images, fewer than the "
                        f"{n} --calibration-images asked for",
                        hint=f"use --calibration-images {len(samples)}" if len(samples) >= MIN_IMAGES
                        else f"calibrate on a list of at least {MIN_IMAGES} images (--calibration-list FILE)")
    picked = sorted(np.random.default_rng(seed).choice(len(samples), size=n, replace=False).tolist())
    chosen = [samples[i] for i in picked]
    ds = (make_dataset(chosen) if make_dataset is not None else
          SegmentationDataset(chosen, eval_transform(data), num_classes=data.num_classes, ignore_index=data.ignore_index))
    inputs = []
    for i in range(len(ds)):
        x = ds[i][0][None].float()
        if tuple(x.shape[-2:]) != tuple(input_size):
            x = F.interpolate(x, size=tuple(input_size), mode="bilinear", align_corners=False)
        inputs.append(x.numpy())
    root = Path(data.data_root) if data.data_root else None
    images = [_rel(samples[i].image, root) for i in picked]
    record = {"list": str(list_file), "images": n, "list_images": len(samples), "seed": seed,
              "sample": "seeded, without replacement", "files": images,
              "preprocessing": f"eval's: eval_scale {data.eval_scale}, normalise mean {list(data.mean)} std "
                               f"{list(data.std)}, bilinear resize to {input_size[0]}x{input_size[1]}"}
    return Calibration(inputs, record)


def _rel(path: Path, root: Path | None) -> str:
    try:
        return str(Path(path).relative_to(root)) if root else str(path)
    except ValueError:
        return str(path)


def argmax_agreement(fp32_sess, int8_sess, inputs: list[np.ndarray]) -> float:
    """Share of pixels where the int8 and fp32 models' argmax agree, over `inputs`."""
    same = total = 0
    for x in inputs:
        a = fp32_sess.run(None, {fp32_sess.get_inputs()[0].name: x})[0].argmax(1)
        b = int8_sess.run(None, {int8_sess.get_inputs()[0].name: x})[0].argmax(1)
        same += int((a == b).sum())
        total += a.size
    return same / max(total, 1)
