"""Frozen-encoder feature cache (Fast-NAS stage 1): encode every (augmented) image once per search.

Each candidate then trains only its decoder on the cached taps, so the encoder's forward pass (most of
the MACs) and all data loading and augmentation are paid once per search instead of once per step per
candidate. Taps are stored in fp16 (half the memory; the decoder computes in fp32).

Training split: `views` augmented copies of every image (view v of image i is augmented with a seed
derived from (seed, v, i)); epoch e of a candidate reads view e mod views. Validation: the images at
evaluation scale, no augmentation.

Large sets: when the projected size exceeds `memory_limit` bytes, the taps go to memory-mapped files (CPU) in a
temporary folder under `spill_dir` (the search's run directory), so the OS pages them in and out instead
of the process running out of memory. The numbers are the same either way; the folder is removed when
the cache is.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from nascli.data.listfile import SegmentationDataset
from nascli.engine.loops import group_by_shape
from nascli.faults import fault_point

log = logging.getLogger(__name__)

SPILL_PREFIX = "feature-cache-"


def default_memory_limit(device: torch.device | str = "cpu") -> int | None:
    """Half of the memory free now where the cache would live: the GPU's, or RAM (None if the OS does not say)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 2
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return None


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
                 device: torch.device | str = "cpu", batch_size: int = 16, progress=None,
                 memory_limit: int | None = None, spill_dir: Path | None = None):
        self.views = views
        self.device = torch.device(device)
        self.memory_limit, self.spill_dir = memory_limit, spill_dir
        self.spilled_to: Path | None = None
        if spill_dir is not None:  # folders left by a killed process (the run directory is locked: none is in use)
            for stale in Path(spill_dir).glob(SPILL_PREFIX + "*"):
                shutil.rmtree(stale, ignore_errors=True)
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
            self.train_views.append(self._encode_train(encoder, train, batch_size, tick, total))
        self.val = self._encode(encoder, val, batch_size, tick)
        self.seconds = time.perf_counter() - started
        log.info("feature cache: %d train views x %d images + %d val images, %.0f MB%s, %.1f s",
                 views, len(train), len(val), self.nbytes() / 2**20,
                 f" on disk in {self.spilled_to}" if self.spilled_to else " in memory", self.seconds)

    # --- storage -----------------------------------------------------------------------------------
    def _plan(self, bytes_per_image: int, images: int) -> None:
        """Decide, once, whether the cache fits in memory; if not, open the spill folder."""
        projected = bytes_per_image * images
        if self.memory_limit is None or projected <= self.memory_limit:
            return
        if self.spill_dir is None:
            log.warning("feature cache needs ~%d MB, over the %d MB limit, and has no folder to spill to",
                        projected >> 20, self.memory_limit >> 20)
            return
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        self._tmp = tempfile.TemporaryDirectory(prefix=SPILL_PREFIX, dir=self.spill_dir)
        self.spilled_to = Path(self._tmp.name)
        self._files = 0
        log.info("feature cache needs ~%d MB, over the %d MB memory limit: spilling to %s",
                 projected >> 20, self.memory_limit >> 20, self.spilled_to)

    def _new(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        if self.spilled_to is None:
            return torch.empty(shape, dtype=dtype, device=self.device)  # on a GPU, the cache stays there
        path = self.spilled_to / f"{self._files}.bin"
        self._files += 1
        return torch.from_file(str(path), shared=True, size=math.prod(shape), dtype=dtype).view(shape)

    def _store(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        out = self._new(tuple(t.shape), dtype)
        out.copy_(t)
        return out

    def close(self) -> None:
        """Remove the spill folder (also done when the cache is garbage-collected)."""
        if self.spilled_to is not None:
            self.train_views, self.val = [], _Split()
            self._tmp.cleanup()
            self.spilled_to = None

    # --- encoding ----------------------------------------------------------------------------------
    @torch.no_grad()
    def _encode_train(self, encoder: nn.Module, data: SegmentationDataset, batch_size: int, tick,
                      total: int) -> _Split:
        """One view, written into one preallocated tensor per tap (training crops all have one size)."""
        taps_all: list[torch.Tensor | None] = []
        masks_all = None
        at = 0
        for images, masks in group_by_shape((data[i] for i in range(len(data))), batch_size):
            taps = encoder(images.to(self.device))
            if masks_all is None:
                if not self.train_views:
                    per_image = sum(t[0].numel() * 2 for t in taps if t is not None) + masks[0].numel()
                    self._plan(per_image, total)
                taps_all = [self._new((len(data), *t.shape[1:]), torch.float16) if t is not None else None
                            for t in taps]
                masks_all = self._new((len(data), *masks.shape[1:]), torch.uint8)
            if masks.shape[1:] != masks_all.shape[1:]:
                raise RuntimeError(f"training crops differ in size ({tuple(masks.shape[1:])} vs "
                                   f"{tuple(masks_all.shape[1:])}): the feature cache needs one crop size")
            n = len(images)
            for dst, t in zip(taps_all, taps):
                if dst is not None:
                    dst[at:at + n] = t.half()
            masks_all[at:at + n] = masks
            at += n
            tick(n)
            fault_point("cache_batch")
        return _Split([(taps_all, masks_all)] if masks_all is not None else [])

    @torch.no_grad()
    def _encode(self, encoder: nn.Module, data: SegmentationDataset, batch_size: int, tick) -> _Split:
        split = _Split()
        for images, masks in group_by_shape((data[i] for i in range(len(data))), batch_size):
            taps = encoder(images.to(self.device))
            split.groups.append(([self._store(t, torch.float16) if t is not None else None for t in taps],
                                 self._store(masks, torch.uint8)))
            tick(len(images))
            fault_point("cache_batch")
        return split

    # --- sharing with workers (nascli.executors) --------------------------------------------------
    def flat(self) -> tuple[dict, list[torch.Tensor]]:
        """(layout, tensors on the CPU): the layout is JSON-able and names tensors by position."""
        tensors: list[torch.Tensor] = []

        def ref(t: torch.Tensor | None) -> int | None:
            if t is None:
                return None
            tensors.append(t.cpu())
            return len(tensors) - 1

        def groups(split: _Split) -> list:
            return [[[ref(t) for t in taps], ref(m)] for taps, m in split.groups]

        return {"views": self.views, "train": [groups(s) for s in self.train_views], "val": groups(self.val)}, tensors

    @classmethod
    def from_flat(cls, layout: dict, tensors: list[torch.Tensor]) -> "FeatureCache":
        """A read-only cache over tensors another process built (`flat`): nothing is encoded again."""
        self = cls.__new__(cls)
        self.views, self.device, self.seconds = int(layout["views"]), torch.device("cpu"), 0.0
        self.memory_limit, self.spill_dir, self.spilled_to = None, None, None

        def split(groups: list) -> _Split:
            pick = lambda i: None if i is None else tensors[i]  # noqa: E731
            return _Split([([pick(i) for i in taps], pick(m)) for taps, m in groups])

        self.train_views = [split(g) for g in layout["train"]]
        self.val = split(layout["val"])
        return self

    # --- reading -----------------------------------------------------------------------------------
    def nbytes(self) -> int:
        return sum(s.nbytes() for s in self.train_views) + self.val.nbytes()

    @property
    def num_train(self) -> int:
        return self.train_views[0].num_images

    def train_batches(self, epoch: int, batch_size: int, generator: torch.Generator):
        """Shuffled batches of (taps fp32, masks long) from view `epoch mod views`."""
        taps_all, masks_all = self.train_views[epoch % self.views].groups[0]
        order = torch.randperm(len(masks_all), generator=generator)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            yield [t[idx].float() if t is not None else None for t in taps_all], masks_all[idx].long()

    def val_batches(self):
        for taps, masks in self.val.groups:
            yield [t.float() if t is not None else None for t in taps], masks.long()
