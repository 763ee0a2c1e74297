"""Fast-NAS progressive candidate training (SPEC 3.2): two stages with early termination between them.

Nekrasov et al., "Fast Neural Architecture Search of Compact Semantic Segmentation Models via Auxiliary
Cells", CVPR 2019 (arXiv 1810.10804).

- Stage 1: the decoder trains on the search's cached frozen-encoder features (candidate.lr/epochs), with
  an auxiliary cell on every merge block (loss weight fast_nas.aux_weight) and Polyak averaging of the
  decoder's weights (decay polyak_stage1); it is evaluated with the averaged weights after precise BN.
- Early termination: with m the running average (decay termination_decay, bias-corrected) of the
  stage-1 rewards of earlier candidates, a candidate with stage-1 reward r < m stops with probability
  min(1, (1 - r/m) / delta). The coin is seeded from (search seed, encoding), and m is rebuilt from the
  records in `observe`, so a resumed search takes the same decisions.
- Stage 2 (survivors, stage2_epochs > 0): the whole network is fine-tuned end to end on the full-image
  training set (the same images as stage 1: candidate.max_train_images), at stage2_lr, auxiliary cells
  still on, Polyak decay polyak_stage2, plus knowledge distillation (MSE between student and teacher
  logits, distill_weight) when fast_nas.teacher is set. Distillation is not applied in stage 1: the cache
  holds encoder taps, not images, and caching the teacher's logits for every view would cost
  num_classes x H x W per image, far more than the taps.

The record carries the final metrics and `reward` (of the last stage reached), `reward_stage1`, `stage`
(1 or 2) and `stop_prob`. The saved weights are the plain inference model (auxiliary cells are never
part of it): decoder-only after stage 1 (sharing the search's encoder file), the whole network after
stage 2, whose encoder is the candidate's own.
"""

from __future__ import annotations

import logging
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from nascli.engine.checkpoint import load_checkpoint, model_from_checkpoint
from nascli.engine.evaluator import (
    CandidateEvaluator,
    encoding_seed,
    evaluate_model,
)
from nascli.engine.loops import (
    DivergedError,
    evaluate_logits,
    make_optimizer,
    make_scheduler,
    recalibrate_bn,
    train_steps,
)
from nascli.engine.metrics import reward
from nascli.errors import ConfigError
from nascli.seeding import derive_seed
from nascli.zoo.adelaide import SegmentationNet
from nascli.zoo.auxiliary import AuxiliaryDecoder
from nascli.zoo.backbones import load_encoder_weights

log = logging.getLogger(__name__)

STOP_SALT = 0x570B  # separates the termination coin's stream from the candidate's training seed
STAGE2_SALT = 0x5742


def stop_probability(r: float, m: float | None, delta: float) -> float:
    """Probability of stopping after stage 1: min(1, (1 - r/m) / delta) if r < m, else 0 (0 without m)."""
    if m is None or m <= 0 or r >= m:
        return 0.0
    return min(1.0, (1.0 - r / m) / delta)


class RunningMean:
    """Exponential moving average with bias correction (its first value is the first sample)."""

    def __init__(self, decay: float):
        self.decay = decay
        self.ema = 0.0
        self.count = 0

    def update(self, x: float) -> None:
        self.ema = self.decay * self.ema + (1 - self.decay) * x
        self.count += 1

    @property
    def value(self) -> float | None:
        return self.ema / (1 - self.decay ** self.count) if self.count else None


class Polyak:
    """Polyak (exponential) averaging of a module's parameters; `copy_to` writes the average back.

    avg <- decay * avg + (1 - decay) * weights after every optimiser step, starting from the weights the
    training starts from, at SPEC's decays as given (no warm-up ramp: issue 23 measured a ramp as no
    better, see recipes/fast_nas.yml). So after n steps the starting weights still count decay**n: a short
    stage 2 at 0.99 stays close to its stage-1 start. Buffers (BN statistics) are not averaged:
    recalibrate them after `copy_to`.
    """

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.avg = [p.detach().clone() for p in self.params]
        self.steps = 0

    @torch.no_grad()
    def update(self) -> None:
        for a, p in zip(self.avg, self.params):
            a.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)
        self.steps += 1

    @torch.no_grad()
    def copy_to(self) -> None:
        for a, p in zip(self.avg, self.params):
            p.copy_(a)


def load_teacher(path: Path, num_classes: int) -> tuple[nn.Module, dict]:
    """The distillation teacher (eval mode, frozen, on the CPU) and its checkpoint; CheckpointError if the file
    is corrupt, unsafe or does not fit its model, ConfigError if it predicts other classes than the data has."""
    ckpt = load_checkpoint(path)
    meta = ckpt["meta"]
    if meta.get("num_classes") not in (None, num_classes):
        raise ConfigError(f"teacher {path} predicts {meta['num_classes']} classes, the data has {num_classes}",
                          hint="give a teacher trained on the same classes")
    teacher = model_from_checkpoint(ckpt, path).eval()
    teacher.requires_grad_(False)
    return teacher, ckpt


class ProgressiveEvaluator(CandidateEvaluator):
    """CandidateEvaluator with Fast-NAS training: stage 1, early termination, stage 2."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.cfg.mode != "cached":
            raise ConfigError("fast-nas trains stage 1 on cached frozen-encoder features; candidate.mode is "
                              f"{self.cfg.mode!r}",
                              hint="drop --candidate-training full: stage 2 (fast_nas.stage2_epochs) fine-tunes "
                                   "end to end")
        self.fn = self.recipe.fast_nas
        self.running = RunningMean(self.fn.termination_decay)
        self.teacher = self._load_teacher(self.fn.teacher)

    def observe(self, record: dict) -> None:
        """Fold a record's stage-1 reward into the running average the termination test uses."""
        r1 = record.get("reward_stage1")
        if record.get("status") == "ok" and isinstance(r1, (int, float)) and not math.isnan(r1):
            self.running.update(float(r1))

    def observed_state(self) -> dict:
        return {"ema": self.running.ema, "count": self.running.count}

    def load_observed_state(self, state: dict) -> None:
        self.running.ema, self.running.count = float(state["ema"]), int(state["count"])

    def _load_teacher(self, path: Path | None) -> nn.Module | None:
        if path is None:
            return None
        teacher, ckpt = load_teacher(path, self.num_classes)
        meta = ckpt["meta"]
        for key in ("mean", "std"):
            if meta.get(key) is not None and list(meta[key]) != list(getattr(self.recipe.data, key)):
                log.warning("teacher %s was trained with %s %s, the search uses %s", path, key, meta[key],
                            list(getattr(self.recipe.data, key)))
        log.info("distilling from teacher %s (%s), weight %g", path, ckpt["model"]["name"], self.fn.distill_weight)
        return teacher.to(self.device)

    # --- one candidate -----------------------------------------------------------------------------
    def train_and_eval(self, encoding: str, seed: int, weights_path: Path | None) -> dict:
        """Stage 1, the termination test, stage 2 for survivors; save the inference model."""
        started = time.perf_counter()
        _ = self.cache  # built before seeding: building it draws from torch's global RNG
        run_seed = encoding_seed(seed, encoding)
        torch.manual_seed(run_seed)
        model = self.build(encoding)
        load_encoder_weights(model.encoder, self.encoder_state)
        net = self._with_auxiliary(model, encoding)
        net.to(self.device)  # the model's decoder is inside the wrapper
        model.to(self.device)
        try:
            metrics = self._stage1(model, net, run_seed)
        except DivergedError as e:
            return {"status": "failed", "message": f"stage 1 diverged: {e}", "stage": 1,
                    "train_seconds": round(time.perf_counter() - started, 2)}
        r1 = reward(metrics)
        p_stop = stop_probability(r1, self.running.value, self.fn.termination_delta)
        stop = random.Random(derive_seed(run_seed, STOP_SALT)).random() < p_stop
        stage, message = 1, ""
        if self.fn.stage2_epochs and not stop:
            stage1_state = {k: v.clone() for k, v in model.state_dict().items()}
            try:
                metrics, stage = self._stage2(model, net, run_seed), 2
            except DivergedError as e:
                model.load_state_dict(stage1_state)
                message = f"stage 2 diverged ({e}); the stage-1 model and metrics are kept"
        log.info("%s: stage-1 reward %.4f (running mean %s, stop probability %.3f) -> %s, reward %.4f", encoding, r1,
                 "-" if self.running.value is None else f"{self.running.value:.4f}", p_stop,
                 "stopped after stage 1" if stage == 1 else "stage 2", reward(metrics))
        if weights_path is not None:
            self._save_stage(model, encoding, weights_path, stage)
        return {
            "status": "ok",
            **self.metric_fields(metrics),
            "reward_stage1": round(r1, 6),
            "stage": stage,
            "stop_prob": round(p_stop, 4),
            "train_seconds": round(time.perf_counter() - started, 2),
            **({"message": message} if message else {}),
        }

    def _with_auxiliary(self, model: SegmentationNet, encoding: str) -> AuxiliaryDecoder:
        s = self.recipe.space
        return AuxiliaryDecoder(model.decoder, self.space.decode(encoding), s.op_names, s.agg_size, self.num_classes,
                                s.sep_repeats, auxiliary=self.fn.aux_weight > 0)

    def _loss(self, out: tuple[torch.Tensor, list[torch.Tensor]], target: torch.Tensor,
              teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
        """The candidate loss (candidate.loss, class weights) + aux_weight x the same on each auxiliary head
        (+ distill_weight x MSE to the teacher)."""
        logits, aux = out
        loss = self.loss(logits, target)
        for a in aux:
            loss = loss + self.fn.aux_weight * self.loss(a, target)
        if teacher_logits is not None:
            if teacher_logits.shape[-2:] != logits.shape[-2:]:
                teacher_logits = F.interpolate(teacher_logits, size=logits.shape[-2:], mode="bilinear",
                                               align_corners=False)
            loss = loss + self.fn.distill_weight * F.mse_loss(logits, teacher_logits)
        return loss

    def _stage1(self, model: SegmentationNet, net: AuxiliaryDecoder, run_seed: int) -> dict:
        """Decoder (+ auxiliary cells) on cached features; metrics of the Polyak-averaged decoder."""
        cache, decoder = self.cache, model.decoder
        opt = make_optimizer(net.parameters(), self.cfg)
        steps = math.ceil(cache.num_train / self.cfg.batch_size)
        sched = make_scheduler(opt, self.cfg, steps)
        gen = torch.Generator().manual_seed(run_seed)
        average = Polyak(decoder, self.fn.polyak_stage1)
        net.train()
        for epoch in range(self.cfg.epochs):
            train_steps(lambda b: self._loss(net(b[0], b[1].shape[-2:]), b[1]), self._cached_train(cache, epoch, gen),
                        opt, sched, on_step=self._after_step(average, epoch, self.cfg.epochs, steps, 1))
        average.copy_to()
        recalibrate_bn(decoder, self._cached_train(cache, self.cfg.epochs - 1, gen),
                       lambda b: decoder(b[0], b[1].shape[-2:]))
        decoder.eval()  # recalibrate_bn leaves it so; said here because the metrics depend on it
        val = ((([t.to(self.device) if t is not None else None for t in taps], m.shape[-2:]), m.to(self.device))
               for taps, m in cache.val_batches())
        return evaluate_logits(lambda inp: decoder(*inp), val, self.num_classes, self.recipe.data.ignore_index)

    def _stage2(self, model: SegmentationNet, net: AuxiliaryDecoder, run_seed: int) -> dict:
        """End-to-end fine-tuning on full images; metrics of the Polyak-averaged network."""
        cfg2 = self.cfg.model_copy(update={"lr": self.fn.stage2_lr, "epochs": self.fn.stage2_epochs})
        gen = torch.Generator().manual_seed(derive_seed(run_seed, STAGE2_SALT))
        loader = DataLoader(self.train, batch_size=self.cfg.batch_size, shuffle=True, generator=gen,
                            num_workers=self.recipe.data.workers)
        opt = make_optimizer(list(model.encoder.parameters()) + list(net.parameters()), cfg2)
        sched = make_scheduler(opt, cfg2, len(loader))
        average = Polyak(model, self.fn.polyak_stage2)
        model.train()
        net.train()

        def step(batch) -> torch.Tensor:
            x, y = batch
            return self._loss(net(model.encoder(x), x.shape[-2:]), y, self._teacher_logits(x))

        for epoch in range(cfg2.epochs):
            self.train.set_epoch(self.cfg.cache_views + epoch)  # views the cache did not use
            batches = ((x.to(self.device), y.to(self.device)) for x, y in loader)
            on_step = self._after_step(average, epoch, cfg2.epochs, len(loader), 2)
            train_steps(step, batches, opt, sched, on_step=on_step)
        average.copy_to()
        recalibrate_bn(model, (x.to(self.device) for x, _ in loader))
        return evaluate_model(model, self.val, self.num_classes, self.recipe.data.ignore_index, self.cfg.batch_size,
                              self.device)

    @torch.no_grad()
    def _teacher_logits(self, x: torch.Tensor) -> torch.Tensor | None:
        return self.teacher(x) if self.teacher is not None else None

    def _after_step(self, average: Polyak, epoch: int, epochs: int, steps: int, stage: int):
        def on_step(step: int, loss: float) -> None:
            average.update()
            self.progress({"event": "step", "stage": stage, "epoch": epoch, "epochs": epochs, "step": step,
                           "steps": steps, "loss": loss})
        return on_step

    # --- saving ------------------------------------------------------------------------------------
    def _save_stage(self, model: SegmentationNet, encoding: str, path: Path, stage: int) -> None:
        """Stage 1: as CandidateEvaluator (decoder-only, shared encoder); stage 2: the whole network."""
        self._save(model, encoding, path, decoder_only=stage == 1)
