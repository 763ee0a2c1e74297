"""`nascli pretrain-backbone`: encoder weights for the searched models, written to RUN/pretrain/encoder.pth.

Three sources (no ImageNet weights exist on these machines and nothing is downloaded):
- dense (default): train the registry model `mobilenetv2_lraspp` (our MobileNetV2 encoder + LR-ASPP head)
  end to end on the segmentation data itself; the head is thrown away, the encoder kept;
- `--imagefolder DIR`: a torchvision ImageFolder classification set; the encoder plus a linear head on
  globally pooled stride-32 features;
- `--weights FILE`: import a torchvision MobileNetV2 state dict (its sha256 is recorded).

The encoder file is a nascli checkpoint {"model": {"name": "encoder", ...}, "state_dict": features.N.*,
"meta": {"source", "sha256" or "epochs", ...}}; `search` and `train` on the run pick it up. BN statistics
are re-estimated ("precise BN") before every evaluation and before saving: after short trainings the
running statistics lag and eval-mode predictions collapse to one class otherwise.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from nascli.config import Recipe
from nascli.engine.checkpoint import FORMAT, safe_load, save_checkpoint
from nascli.engine.evaluator import evaluate_model
from nascli.engine.losses import SegLoss, resolve_class_weights, with_min_steps
from nascli.engine.loops import (
    make_optimizer,
    make_scheduler,
    recalibrate_bn,
    train_steps,
)
from nascli.errors import CheckpointError, DataError, UsageError
from nascli.rundir import RunDir, atomic_write_text
from nascli.seeding import derive_seed
from nascli.steps.common import (
    datasets,
    resolve_data,
    save_run_recipe,
    setup_torch,
    validate_lists,
)
from nascli.zoo.backbones import (
    MobileNetV2Encoder,
    encoder_state_dict,
    load_encoder_weights,
)
from nascli.zoo.registry import create_model

log = logging.getLogger(__name__)

ENCODER_SPEC = {"name": "encoder", "kwargs": {"backbone": "mobilenet_v2"}}
BN_IMAGES = 256


@dataclass
class PretrainResult:
    run_dir: Path
    mode: str
    encoder_path: Path
    meta: dict
    history: list[dict] = field(default_factory=list)
    metrics_csv: Path | None = None
    seconds: float = 0.0


def run(recipe: Recipe, run_dir: RunDir, *, weights: Path | None = None, imagefolder: Path | None = None,
        progress: Callable[[dict], None] | None = None) -> PretrainResult:
    """Validate the source, then write RUN/pretrain/encoder.pth (+ metrics.csv when training)."""
    if weights is not None and imagefolder is not None:
        raise UsageError("options --weights and --imagefolder both give the encoder's source", hint="give one of them")
    device = setup_torch(recipe)
    run_dir.check_free()
    progress = progress or (lambda event: None)
    if weights is not None:
        state, meta = _read_weights(Path(weights))
        if _has_data(recipe):
            resolve_data(recipe)
        return _write(run_dir, recipe, "weights", lambda: (state, meta, []))
    if imagefolder is not None:
        folder = _image_folder(Path(imagefolder), recipe)
        if _has_data(recipe):
            resolve_data(recipe)
        return _write(run_dir, recipe, "imagefolder", lambda: _train_classifier(recipe, folder, device, progress))
    recipe = resolve_data(recipe)
    if recipe.task != "segmentation":  # dense pretraining learns per-pixel classes: it needs masks
        raise UsageError(f"pretrain-backbone trains the encoder densely on segmentation masks; the data is for "
                         f"{recipe.task}", hint="pretrain from classification data (--imagefolder DIR) or import "
                                               "torchvision MobileNetV2 weights (--weights FILE)")
    validate_lists(recipe)
    return _write(run_dir, recipe, "dense", lambda: _train_dense(recipe, device, progress))


def _has_data(recipe: Recipe) -> bool:
    d = recipe.data
    return any(v is not None for v in (d.data_root, d.train_list, d.val_list))


def _write(run_dir: RunDir, recipe: Recipe, mode: str, make: Callable[[], tuple[dict, dict, list[dict]]]) -> PretrainResult:
    started = time.perf_counter()
    pdir = run_dir.sub("pretrain")
    interrupted = ("pretraining interrupted; no encoder was written",
                   "run the same command again (pretraining starts over)")
    with run_dir.step("pretrain", interrupted=lambda: interrupted, mode=mode) as done:
        pdir.mkdir(parents=True, exist_ok=True)
        save_run_recipe(run_dir, recipe)  # later steps on this run inherit the data settings
        state, meta, history = make()
        path = pdir / "encoder.pth"
        save_checkpoint(path, {"model": ENCODER_SPEC, "state_dict": state, "meta": meta})
        metrics_csv = None
        if history:
            metrics_csv = pdir / "metrics.csv"
            atomic_write_text(metrics_csv, pd.DataFrame(history).to_csv(index=False))
        done.update(mode=mode, source=meta["source"])
    return PretrainResult(run_dir.path, mode, path, meta, history, metrics_csv, time.perf_counter() - started)


# --- --weights ---------------------------------------------------------------------------------------------
def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """A torchvision MobileNetV2 state dict (or a nascli checkpoint holding one), checked against the encoder."""
    if not path.is_file():
        raise UsageError(f"option --weights: {path} not found", hint="give a torchvision MobileNetV2 .pth file")
    obj = safe_load(path, "--weights", corrupt_hint="give a .pth written by torch.save(model.state_dict(), FILE)")
    if isinstance(obj, dict) and (obj.get("format") == FORMAT or isinstance(obj.get("state_dict"), dict)):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"--weights {path} is not a state dict (a mapping of names to tensors)",
                              hint="give a torchvision MobileNetV2 state dict")
    state = encoder_state_dict(obj)
    try:
        load_encoder_weights(MobileNetV2Encoder(), state)
    except KeyError as e:
        raise CheckpointError(f"--weights {path} does not fit MobileNetV2 (width 1.0): {e.args[0]}",
                              hint="give torchvision's mobilenet_v2 weights "
                                   "(e.g. MobileNet_V2_Weights.IMAGENET1K_V1)") from None
    digest = sha256(path)
    log.info("imported %d encoder tensors from %s (sha256 %s)", len(state), path, digest)
    return state, {"source": f"torchvision weights {path.resolve()}", "sha256": digest, "file": str(path.resolve())}


# --- dense pretraining on the segmentation data -------------------------------------------------------------------
def _loader(ds, batch_size: int, seed: int, epoch: int, workers: int) -> DataLoader:
    if hasattr(ds, "set_epoch"):
        ds.set_epoch(epoch)
    gen = torch.Generator().manual_seed(derive_seed(seed, 0x9E7, epoch))
    drop = len(ds) % batch_size == 1 and len(ds) > 1  # BatchNorm cannot train on a batch of one
    return DataLoader(ds, batch_size=batch_size, shuffle=True, generator=gen, drop_last=drop, num_workers=workers)


def _train_dense(recipe: Recipe, device: torch.device,
                 progress: Callable[[dict], None]) -> tuple[dict, dict, list[dict]]:
    """Train our encoder + an LR-ASPP head on the segmentation data; keep the encoder of the best epoch by
    validation mIoU (as `train` keeps best.pth), not of the last."""
    cfg, seed, d = recipe.pretrain, recipe.seed, recipe.data
    ignore = d.ignore_index
    torch.manual_seed(seed)
    model = create_model("mobilenetv2_lraspp", num_classes=d.num_classes).to(device)
    train_ds, val_ds = datasets(recipe, augment_seed=seed, max_train=cfg.max_train_images, max_val=cfg.max_val_images)
    steps = len(_loader(train_ds, cfg.batch_size, seed, 0, 0))
    cfg = with_min_steps(cfg, steps, "pretraining")
    loss_fn = SegLoss(cfg.loss, ignore, resolve_class_weights(cfg, train_ds, d.num_classes, ignore, "pretrain",
                                                              d.class_names))
    opt = make_optimizer(model.parameters(), cfg)
    sched = make_scheduler(opt, cfg, steps)
    history: list[dict] = []
    best_state, best = None, None
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        torch.manual_seed(derive_seed(seed, 0xD12, epoch))
        model.train()
        loss = train_steps(lambda b: loss_fn(model(b[0].to(device)), b[1].to(device)),
                           _loader(train_ds, cfg.batch_size, seed, epoch, d.workers), opt, sched,
                           on_step=_on_step(progress, epoch, cfg.epochs, steps))
        _precise_bn(model, _loader(train_ds, cfg.batch_size, seed, epoch, d.workers), cfg.batch_size, device)
        m = evaluate_model(model, val_ds, d.num_classes, ignore, cfg.batch_size, device)
        row = {"epoch": epoch + 1, "train_loss": round(loss, 6), "val_miou": round(m["miou"], 6),
               "val_pixel_acc": round(m["pixel_acc"], 6), "seconds": round(time.perf_counter() - t0, 2)}
        history.append(row)
        improved = best is None or (not math.isnan(row["val_miou"]) and row["val_miou"] > best["val_miou"])
        if improved:
            best, best_state = row, _cpu(model.encoder.state_dict())
        log.info("pretrain epoch %d/%d: loss %.4f, val mIoU %.4f (LR-ASPP head)%s", epoch + 1, cfg.epochs, loss,
                 row["val_miou"], ", best so far" if improved else "")
        progress({"event": "epoch", "row": row, "epochs": cfg.epochs})
    log.info("keeping the encoder of epoch %d of %d (best val mIoU %.4f)", best["epoch"], cfg.epochs, best["val_miou"])
    meta = {"source": f"dense pretraining on {d.train_list} with an LR-ASPP head (epoch {best['epoch']} of "
                      f"{cfg.epochs}, the best by val mIoU {best['val_miou']:.4f})",
            "task": "segmentation", "epochs": cfg.epochs, "best_epoch": best["epoch"], "val_miou": best["val_miou"],
            "train_list": str(d.train_list), "num_classes": d.num_classes}
    return best_state, meta, history


def _on_step(progress: Callable[[dict], None], epoch: int, epochs: int, steps: int) -> Callable[[int, float], None]:
    return lambda step, loss: progress({"event": "step", "epoch": epoch + 1, "epochs": epochs, "step": step,
                                        "steps": steps, "loss": loss})


def _precise_bn(model: nn.Module, loader: DataLoader, batch_size: int, device: torch.device) -> None:
    limit = max(1, BN_IMAGES // batch_size)
    recalibrate_bn(model, (x.to(device) for _, (x, _) in zip(range(limit), loader)))


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in encoder_state_dict(state).items()}


# --- --imagefolder --------------------------------------------------------------------------------------------
class _Classifier(nn.Module):
    """The encoder's stride-32 tap, global average pool, linear layer."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.encoder = MobileNetV2Encoder(taps=(3,))
        self.fc = nn.Linear(MobileNetV2Encoder.feature_info[3].channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.encoder(x)[3].mean((2, 3)))


def _image_folder(folder: Path, recipe: Recipe):
    """torchvision ImageFolder with random-resized-crop augmentation at the recipe's input size."""
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    if not folder.is_dir():
        raise UsageError(f"option --imagefolder: {folder} is not a folder",
                         hint="give a folder with one sub-folder of images per class")
    d = recipe.data
    tf = T.Compose([T.RandomResizedCrop(tuple(d.input_size), scale=(0.35, 1.0)), T.RandomHorizontalFlip(),
                    T.ToTensor(), T.Normalize(d.mean, d.std)])
    try:
        ds = ImageFolder(str(folder), transform=tf)
    except (FileNotFoundError, OSError) as e:
        raise DataError(f"--imagefolder {folder}: {e}", hint="one sub-folder of .jpg/.png images per class") from None
    if len(ds.classes) < 2:
        raise DataError(f"--imagefolder {folder} has {len(ds.classes)} class folder(s); a classifier needs 2 or more",
                        hint="one sub-folder of images per class")
    return ds


def _train_classifier(recipe: Recipe, ds, device: torch.device,
                      progress: Callable[[dict], None]) -> tuple[dict, dict, list[dict]]:
    cfg, seed = recipe.pretrain, recipe.seed
    torch.manual_seed(seed)
    model = _Classifier(len(ds.classes)).to(device)
    steps = len(_loader(ds, cfg.batch_size, seed, 0, 0))
    opt = make_optimizer(model.parameters(), cfg)
    sched = make_scheduler(opt, cfg, steps)
    history = []
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        torch.manual_seed(derive_seed(seed, 0xD12, epoch))  # the transforms draw from torch's RNG
        correct, seen = [0], [0]

        def step(batch):
            x, y = batch[0].to(device), batch[1].to(device)
            logits = model(x)
            correct[0] += int((logits.argmax(1) == y).sum())
            seen[0] += len(y)
            return nn.functional.cross_entropy(logits, y)

        model.train()
        loss = train_steps(step, _loader(ds, cfg.batch_size, seed, epoch, recipe.data.workers), opt, sched,
                           on_step=_on_step(progress, epoch, cfg.epochs, steps))
        row = {"epoch": epoch + 1, "train_loss": round(loss, 6), "train_acc": round(correct[0] / max(seen[0], 1), 6),
               "seconds": round(time.perf_counter() - t0, 2)}
        history.append(row)
        log.info("pretrain epoch %d/%d: loss %.4f, train accuracy %.4f", epoch + 1, cfg.epochs, loss, row["train_acc"])
        progress({"event": "epoch", "row": row, "epochs": cfg.epochs})
    _precise_bn(model, _loader(ds, cfg.batch_size, seed, cfg.epochs, recipe.data.workers), cfg.batch_size, device)
    acc = history[-1]["train_acc"] if history else math.nan
    meta = {"source": f"classification pretraining on {ds.root} ({len(ds.classes)} classes, {len(ds)} images, "
                      f"{cfg.epochs} epochs, train accuracy {acc:.4f})",
            "task": "classification", "epochs": cfg.epochs, "classes": list(ds.classes), "images": len(ds)}
    return _cpu(model.encoder.state_dict()), meta, history
