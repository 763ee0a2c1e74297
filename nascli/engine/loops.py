"""Training and evaluation loops shared by candidate training, `train` and `pretrain-backbone`."""

from __future__ import annotations

import math
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from nascli.config import TrainConfig
from nascli.engine.metrics import ConfusionMatrix
from nascli.faults import fault_point


class DivergedError(RuntimeError):
    """The loss became NaN or infinite: the candidate (or recipe) is recorded as failed, not retried."""


def make_optimizer(params: Iterable[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """Stepped once per optimiser step, so short candidate trainings still see the whole schedule."""
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    if cfg.scheduler == "step":
        period = max(1, cfg.step_epochs * steps_per_epoch)
        return torch.optim.lr_scheduler.StepLR(opt, step_size=period, gamma=cfg.step_gamma)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)


def train_steps(
    step_fn: Callable[[object], torch.Tensor],
    batches: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler=None,
    on_step: Callable[[int, float], None] | None = None,
    clip_norm: float | None = None,
) -> float:
    """Run one pass over `batches`; `step_fn(batch)` returns the loss. Returns the mean loss. With
    `clip_norm`, gradients are clipped to that total norm before each step."""
    total, n = 0.0, 0
    for batch in batches:
        loss = step_fn(batch)
        if not torch.isfinite(loss):
            raise DivergedError(f"loss became {loss.item()} at step {n}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item()
        n += 1
        if on_step:
            on_step(n, loss.item())
        fault_point("train_step")
    return total / max(n, 1)


@torch.no_grad()
def evaluate_logits(
    predict: Callable[[object], torch.Tensor],
    batches: Iterable[tuple[object, torch.Tensor]],
    num_classes: int,
    ignore_index: int = 255,
) -> dict:
    """Metrics over (input, label) batches; `predict(input)` gives logits, resized here to the label size."""
    cm = ConfusionMatrix(num_classes, ignore_index)
    for inputs, target in batches:
        logits = predict(inputs)
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        cm.update(logits.argmax(1), target)
    return cm.compute()


def group_by_shape(samples: Iterable[tuple[torch.Tensor, torch.Tensor]], batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Stack consecutive (image, mask) pairs of one shape into batches of up to `batch_size`."""
    imgs: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    for img, mask in samples:
        if imgs and (img.shape != imgs[0].shape or mask.shape != masks[0].shape or len(imgs) == batch_size):
            yield torch.stack(imgs), torch.stack(masks)
            imgs, masks = [], []
        imgs.append(img)
        masks.append(mask)
    if imgs:
        yield torch.stack(imgs), torch.stack(masks)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable, forward: Callable[[object], object] | None = None) -> int:
    """Re-estimate BatchNorm running statistics from data (a cumulative average, "precise BN"); returns
    the number of batches seen. `forward(batch)` runs the model (default: `model(batch)`).

    Running statistics kept with momentum lag behind weights that change fast, which is every short
    training (a search candidate's above all): measured in eval mode such a network can predict one class
    everywhere while its weights are fine. A randomly initialised encoder is the extreme case: with BN's
    default statistics (mean 0, variance 1) its deep activations collapse towards zero.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over all batches
    model.train()
    seen = 0
    for batch in batches:
        forward(batch) if forward else model(batch)
        seen += 1
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    model.eval()
    return seen
