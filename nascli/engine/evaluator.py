"""The candidate evaluator: an encoding in, a record out (cost, short training, validation metrics).

Two ways to train a candidate (`candidate.mode`):
- `cached` (default): the encoder is frozen and its taps for every augmented training view and every
  validation image are computed once per search (FeatureCache); a candidate trains only its decoder.
  Weights are saved decoder-only, pointing at the search's shared encoder file.
- `full`: the whole network is trained end to end from the same encoder weights (Vega's way).
A candidate's training is seeded from (search seed, encoding), so the same architecture gets the same
training wherever it falls in a search, and a resumed search repeats nothing.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader

from nascli.config import Recipe
from nascli.data.listfile import SegmentationDataset
from nascli.engine.checkpoint import save_checkpoint
from nascli.engine.feature_cache import FeatureCache, default_memory_limit
from nascli.engine.loops import (
    DivergedError,
    evaluate_logits,
    group_by_shape,
    make_optimizer,
    make_scheduler,
    recalibrate_bn,
    train_steps,
)
from nascli.engine.losses import SegLoss, resolve_class_weights, with_min_steps
from nascli.engine.metrics import DEGENERATE_SHARE, degeneracy, reward, share_text
from nascli.profile.cost import count_macs, count_params
from nascli.profile.latency import torch_latency
from nascli.profile.onnx_latency import onnxruntime_int8_latency, onnxruntime_latency
from nascli.seeding import derive_seed
from nascli.spaces.adelaide import DIGITS, AdelaideSpace
from nascli.zoo.adelaide import SegmentationNet, build_adelaide
from nascli.zoo.backbones import MobileNetV2Encoder, load_encoder_weights

log = logging.getLogger(__name__)

# Memory format of decoder training on cached taps; chosen by measurement (bench/speed_log.py, BENCHMARKS.md).
CHANNELS_LAST = True


def encoding_seed(seed: int, encoding: str) -> int:
    return derive_seed(seed, int(encoding.lstrip("_"), len(DIGITS)))


def size_str(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


class CandidateEvaluator:
    def __init__(self, *, recipe: Recipe, num_classes: int, train: SegmentationDataset, val: SegmentationDataset,
                 encoder_state: dict[str, torch.Tensor], encoder_file: Path | None = None,
                 progress: Callable[[dict], None] | None = None, cache_dir: Path | None = None):
        self.recipe = recipe
        self.space = AdelaideSpace(recipe.space.op_names)
        self.num_classes = num_classes
        self.train, self.val = train, val
        self.encoder_state = encoder_state
        self.encoder_file = encoder_file
        self.device = torch.device(recipe.device)
        self.cfg = with_min_steps(recipe.candidate, math.ceil(len(train) / recipe.candidate.batch_size),
                                  "candidate training")
        d = recipe.data
        weights = resolve_class_weights(self.cfg, train, num_classes, d.ignore_index, "candidate", d.class_names)
        self.loss = SegLoss(self.cfg.loss, d.ignore_index, weights)
        self.progress = progress or (lambda event: None)
        self.cache_dir = cache_dir  # where a feature cache too large for memory spills
        self._cache: FeatureCache | None = None

    def observe(self, record: dict) -> None:
        """Called by the search loop with every record, replayed ones included (stateful evaluators use it)."""

    # --- building and cost -----------------------------------------------------------------------
    def model_kwargs(self, encoding: str) -> dict:
        s = self.recipe.space
        return dict(encoding=self.space.canonical(encoding), num_classes=self.num_classes, op_names=list(s.op_names),
                    agg_size=s.agg_size, agg_concat=s.agg_concat, sep_repeats=s.sep_repeats)

    def build(self, encoding: str) -> SegmentationNet:
        return build_adelaide(**self.model_kwargs(encoding))

    def cost(self, encoding: str) -> dict:
        """MACs and parameters of the inference model at the recipe's input size (and latency if asked)."""
        return model_cost(self.build(encoding), tuple(self.recipe.data.input_size), self.recipe.search, self.device)

    # --- training --------------------------------------------------------------------------------
    @property
    def cache(self) -> FeatureCache:
        if self._cache is None:
            encoder = MobileNetV2Encoder()
            load_encoder_weights(encoder, self.encoder_state)
            gb = self.cfg.cache_memory_gb
            self._cache = FeatureCache(encoder, self.train, self.val, views=self.cfg.cache_views, device=self.device,
                                       batch_size=self.cfg.batch_size, progress=self.progress,
                                       memory_limit=int(gb * 2**30) if gb else default_memory_limit(self.device),
                                       spill_dir=self.cache_dir)
        return self._cache

    # --- what workers share (nascli.executors) ------------------------------------------------------
    def shared_cache(self) -> FeatureCache | None:
        """The feature cache every worker reads (built now, once, by the driver); None in full mode."""
        return self.cache if self.cfg.mode == "cached" else None

    def use_cache(self, cache: FeatureCache) -> None:
        """A worker's copy reads the driver's cache instead of encoding the images again."""
        self._cache = cache

    def observed_state(self) -> dict:
        """What `observe` has folded in, sent with each task so a worker's copy decides as the driver's
        would at submit time (stateless here)."""
        return {}

    def load_observed_state(self, state: dict) -> None:
        pass

    def __getstate__(self) -> dict:
        # A worker's copy: no progress callback (the driver's may hold a terminal), no cache (sent apart).
        state = dict(self.__dict__)
        state["progress"], state["_cache"] = _no_progress, None
        return state

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    def train_and_eval(self, encoding: str, seed: int, weights_path: Path | None) -> dict:
        """Train the candidate briefly, evaluate on the validation list, save its weights."""
        started = time.perf_counter()
        run_seed = encoding_seed(seed, encoding)
        torch.manual_seed(run_seed)
        model = self.build(encoding)
        load_encoder_weights(model.encoder, self.encoder_state)
        model.to(self.device)
        try:
            if self.cfg.mode == "cached":
                metrics = self._train_cached(model, run_seed)
            else:
                metrics = self._train_full(model, run_seed)
        except DivergedError as e:
            return {"status": "failed", "message": f"training diverged: {e}",
                    "train_seconds": round(time.perf_counter() - started, 2)}
        train_seconds = time.perf_counter() - started
        if weights_path is not None:
            self._save(model, encoding, weights_path)
        return {"status": "ok", **self.metric_fields(metrics), "train_seconds": round(train_seconds, 2)}

    def _train_cached(self, model: SegmentationNet, run_seed: int) -> dict:
        cache = self.cache  # built on first use, shared by every candidate
        decoder = model.decoder
        ignore = self.recipe.data.ignore_index
        opt = make_optimizer(decoder.parameters(), self.cfg)
        steps = math.ceil(cache.num_train / self.cfg.batch_size)
        sched = make_scheduler(opt, self.cfg, steps)
        gen = torch.Generator().manual_seed(run_seed)
        decoder.to(memory_format=torch.channels_last if CHANNELS_LAST else torch.contiguous_format).train()
        out_size = None if self.cfg.loss_at == "logits" else "label"
        forward = lambda b: decoder(b[0], None if out_size is None else b[1].shape[-2:])  # noqa: E731
        for epoch in range(self.cfg.epochs):
            batches = self._cached_train(cache, epoch, gen)
            train_steps(lambda b: self.loss(forward(b), b[1], self.cfg.loss_at), batches, opt, sched,
                        on_step=self._on_step(epoch, steps))
        if self.cfg.precise_bn:
            recalibrate_bn(decoder, self._cached_train(cache, self.cfg.epochs - 1, gen), forward)
        # Eval mode either way: in train mode validation batches would normalise with their own statistics
        # and leave validation statistics in the saved BN buffers.
        decoder.eval()
        # Logits go straight to the label's size (the cached images may have been scaled for evaluation).
        val = (((_device_taps(taps, self.device), m.shape[-2:]), m.to(self.device)) for taps, m in cache.val_batches())
        return evaluate_logits(lambda inp: decoder(*inp), val, self.num_classes, ignore)

    def _cached_train(self, cache: FeatureCache, epoch: int, gen: torch.Generator):
        return ((_device_taps(taps, self.device), masks.to(self.device))
                for taps, masks in cache.train_batches(epoch, self.cfg.batch_size, gen))

    def _train_full(self, model: SegmentationNet, run_seed: int) -> dict:
        ignore = self.recipe.data.ignore_index
        opt = make_optimizer(model.parameters(), self.cfg)
        gen = torch.Generator().manual_seed(run_seed)
        loader = DataLoader(self.train, batch_size=self.cfg.batch_size, shuffle=True, generator=gen, drop_last=False,
                            num_workers=self.recipe.data.workers)
        sched = make_scheduler(opt, self.cfg, len(loader))
        model.train()
        for epoch in range(self.cfg.epochs):
            self.train.set_epoch(epoch)
            batches = ((x.to(self.device), y.to(self.device)) for x, y in loader)
            train_steps(lambda b: self.loss(model(b[0]), b[1]), batches, opt, sched,
                        on_step=self._on_step(epoch, len(loader)))
        if self.cfg.precise_bn:
            recalibrate_bn(model, (x.to(self.device) for x, _ in loader))
        return evaluate_model(model, self.val, self.num_classes, ignore, self.cfg.batch_size, self.device)

    def metric_fields(self, metrics: dict) -> dict:
        d = self.recipe.data
        return metric_fields(metrics, d.class_names, d.degenerate_share)

    def _on_step(self, epoch: int, steps: int):
        return lambda step, loss: self.progress({"event": "step", "epoch": epoch, "epochs": self.cfg.epochs,
                                                 "step": step, "steps": steps, "loss": loss})

    def meta(self, encoding: str, **extra) -> dict:
        """What a checkpoint needs besides weights to be used on its own (classes, normalisation, size)."""
        d = self.recipe.data
        return {"num_classes": self.num_classes, "class_names": d.class_names, "mean": list(d.mean),
                "std": list(d.std), "input_size": list(d.input_size), "ignore_index": d.ignore_index,
                "encoding": self.space.canonical(encoding), **extra}

    def _save(self, model: SegmentationNet, encoding: str, path: Path, decoder_only: bool | None = None) -> None:
        meta = self.meta(encoding)
        spec = {"name": "adelaide", "kwargs": self.model_kwargs(encoding)}
        if decoder_only is None:
            decoder_only = self.cfg.mode == "cached" and self.encoder_file is not None
        if decoder_only:
            # Decoder only: every candidate shares the search's frozen encoder (saves ~9 MB a candidate).
            state = {f"decoder.{k}": v for k, v in model.decoder.state_dict().items()}
            encoder_file = os.path.relpath(self.encoder_file, path.parent)  # the run directory may move
            save_checkpoint(path, {"model": spec, "state_dict": state, "meta": meta, "encoder_file": encoder_file})
        else:
            save_checkpoint(path, {"model": spec, "state_dict": model.state_dict(), "meta": meta})


def model_cost(model: torch.nn.Module, size: tuple[int, int], search, device: torch.device) -> dict:
    """A candidate's cost columns: MACs and parameters at `size`, and its latency when the search asks for it
    (at `search.latency_size`, else `size`, by `search.latency_runtime`)."""
    out: dict = {"flops": count_macs(model, size), "parameters": count_params(model), "input_size": size_str(size)}
    if search.measure_latency or search.max_latency_ms or "latency" in (search.objectives or ()):
        # looked up here, not through profile.onnx_latency.latency_function, so tests can replace them
        measure = {"onnxruntime": onnxruntime_latency, "onnxruntime-int8": onnxruntime_int8_latency}.get(
            search.latency_runtime, torch_latency)
        at = tuple(search.latency_size or size)
        lat = measure(model, at, device=str(device), threads=search.latency_threads, warmup=3, runs=10)
        out.update(latency_ms=round(lat["median_ms"], 3), latency_runtime=search.latency_runtime,
                   latency_size=size_str(at))
    return out


def _no_progress(event: dict) -> None:
    pass


def metric_fields(metrics: dict, class_names: list[str] | None = None,
                  degenerate_share: float = DEGENERATE_SHARE) -> dict:
    """The record columns of a validation result (result.csv names), with the degenerate-model flag."""
    why = degeneracy(metrics, class_names, degenerate_share)
    return {"mIOU": round(metrics["miou"], 6), "fwIOU": round(metrics["fwiou"], 6),
            "mean_acc": round(metrics["mean_acc"], 6), "pixel_acc": round(metrics["pixel_acc"], 6),
            "reward": round(reward(metrics), 6), "pred_share": share_text(metrics.get("pred_share") or []),
            "degenerate": why is not None, "degenerate_reason": why or ""}


def _device_taps(taps: list[torch.Tensor | None], device: torch.device) -> list[torch.Tensor | None]:
    fmt = torch.channels_last if CHANNELS_LAST else torch.contiguous_format
    return [t.to(device).contiguous(memory_format=fmt) if t is not None else None for t in taps]


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, data: SegmentationDataset, num_classes: int, ignore_index: int,
                   batch_size: int, device: torch.device | str) -> dict:
    """Validation metrics of a whole model over a dataset (logits resized to each label's size)."""
    model.eval()
    device = torch.device(device)
    batches = ((x.to(device), y.to(device)) for x, y in group_by_shape((data[i] for i in range(len(data))), batch_size))
    return evaluate_logits(model, batches, num_classes, ignore_index)
