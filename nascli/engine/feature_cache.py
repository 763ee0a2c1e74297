"""Frozen-encoder feature cache (Fast-NAS stage 1): encode every (augmented) image once per search.

Each candidate then trains only its decoder on the cached taps, so the encoder's forward pass (most of
the MACs) and all data loading and augmentation are paid once per search instead of once per step per
candidate. Taps are stored in fp16 (half the memory; the decoder computes in fp32).

Training split: `views` augmented copies of every image (view v of image i is augmented with a seed
derived from (seed, v, i)); epoch e of a candidate reads view e mod views. Validation: the images at
evaluation scale, no augmentation.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from nascli.data.listfile import SegmentationDataset
from nascli.engine.loops import group_by_shape
from nascli.faults import fault_point

log = logging.getLogger(__name__)


@dataclass
class _Split:
    """Cached taps per batch group: each entry is ([tap0, tap1, tap2, tap3] fp16 or None, masks uint8)."""

    groups: list[tuple[list[torch.Tensor | None], torch.Tensor]] = field(default_factory=list)

    @property
    def num_images(self) -> int:
        return sum(len(m) for _, m in self.groups)

    def nbytes(self) -> int:
        return sum(sum(t.numel() * t.element_size() for t in taps if t is not None) + m.numel() * m.element_size()
                   for taps, m in self.groups)


class FeatureCache:
    """Taps of a frozen encoder for the training views and the validation images."""

    def __init__(self, encoder: nn.Module, train: SegmentationDataset, val: SegmentationDataset, *, views: int,
                 device: torch.device | str = "cpu", batch_size: int = 16, progress=None):
        self.views = views
        self.device = torch.device(device)
        started = time.perf_counter()
        encoder = encoder.to(self.device).eval()
        self.train_views = []
        total = views * len(train) + len(val)
        done = 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            if progress:
                progress({"event": "cache", "done": done, "total": total})

        for v in range(views):
            train.set_epoch(v)
            self.train_views.append(self._encode(encoder, train, batch_size, tick))
        self.val = self._encode(encoder, val, batch_size, tick)
        self.seconds = time.perf_counter() - started
        log.info("feature cache: %d train views x %d images + %d val images, %.0f MB, %.1f s",
                 views, len(train), len(val), self.nbytes() / 2**20, self.seconds)

    @torch.no_grad()
    def _encode(self, encoder: nn.Module, data: SegmentationDataset, batch_size: int, tick) -> _Split:
        split = _Split()
        for images, masks in group_by_shape((data[i] for i in range(len(data))), batch_size):
            taps = encoder(images.to(self.device))
            split.groups.append(([t.half() if t is not None else None for t in taps], masks.to(torch.uint8)))
            tick(len(images))
            fault_point("cache_batch")
        return split

    def nbytes(self) -> int:
        return sum(s.nbytes() for s in self.train_views) + self.val.nbytes()

    @property
    def num_train(self) -> int:
        return self.train_views[0].num_images

    def train_batches(self, epoch: int, batch_size: int, generator: torch.Generator):
        """Shuffled batches of (taps fp32, masks long) from view `epoch mod views`."""
        split = self.train_views[epoch % self.views]
        taps_all, masks_all = _concat(split)
        order = torch.randperm(len(masks_all), generator=generator)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            yield [t[idx].float() if t is not None else None for t in taps_all], masks_all[idx].long()

    def val_batches(self):
        for taps, masks in self.val.groups:
            yield [t.float() if t is not None else None for t in taps], masks.long()


def _concat(split: _Split) -> tuple[list[torch.Tensor | None], torch.Tensor]:
    """All training groups share one crop size, so they concatenate into one tensor per tap."""
    if len(split.groups) == 1:
        return split.groups[0]
    taps = [torch.cat([g[0][k] for g in split.groups]) if split.groups[0][0][k] is not None else None
            for k in range(len(split.groups[0][0]))]
    masks = torch.cat([g[1] for g in split.groups])
    split.groups = [(taps, masks)]  # concatenate once, keep the single group
    return taps, masks
