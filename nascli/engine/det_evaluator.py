"""The detection candidate evaluator: an encoding in, a record out (cost, short training, COCO mAP).

The search space fixes each candidate's input size (EfficientDet's compound scaling scales resolution
with the network), so a candidate is trained and validated on the lists at its own size; cost (MACs,
parameters, latency) is measured there too. Candidates train end to end (nothing is frozen or cached:
the neck and head are most of a small detector) from the search's shared MobileNetV2 encoder (the run's
`pretrain-backbone` encoder or `--encoder`; else a random one, BN statistics measured on the training
images) and a random neck and head, seeded from (search seed, encoding) as segmentation candidates are,
so the same architecture gets the same training wherever it falls in a search and a resumed search
repeats nothing.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader

from nascli.config import Recipe
from nascli.engine.checkpoint import save_checkpoint
from nascli.engine.evaluator import model_cost
from nascli.engine.loops import DivergedError, make_optimizer, make_scheduler, recalibrate_bn, train_steps
from nascli.engine.losses import with_min_steps
from nascli.seeding import derive_seed
from nascli.tasks import get_task
from nascli.zoo.backbones import load_encoder_weights, takes_encoder_weights
from nascli.zoo.registry import create_model

BN_BATCHES = 16  # training batches (augmented) that re-estimate BN statistics before validation


class DetectionCandidateEvaluator:
    mode = "full"  # what records say: candidates train end to end, whatever candidate.mode says

    def __init__(self, *, recipe: Recipe, space, train, val, progress: Callable[[dict], None] | None = None,
                 cache_dir: Path | None = None, encoder_state: dict | None = None, **_unused):
        self.recipe, self.space = recipe, space
        self.encoder_state = encoder_state  # the search's MobileNetV2 encoder (pretrain-backbone's, if any)
        self.task = get_task("detection")
        self.num_classes = recipe.data.num_classes
        self.device = torch.device(recipe.device)
        self.cfg = with_min_steps(recipe.candidate, math.ceil(len(train) / recipe.candidate.batch_size),
                                  "candidate training")
        self.loss = self.task.loss(self.cfg, recipe, train, "candidate")
        self.progress = progress or (lambda event: None)

    def observe(self, record: dict) -> None:
        """Stateless: nothing to learn from earlier records."""

    def close(self) -> None:
        """Nothing held between candidates."""

    # --- what the executors (nascli.executors) ask of an evaluator -------------------------------
    def shared_cache(self) -> None:
        return None  # nothing is cached: every candidate trains end to end at its own size

    def use_cache(self, cache) -> None:
        pass

    def observed_state(self) -> dict:
        return {}

    def load_observed_state(self, state: dict) -> None:
        pass

    def __getstate__(self) -> dict:
        # A worker's copy: no progress callback (the driver's may hold a terminal); the loss is a closure,
        # rebuilt from the task on arrival.
        state = dict(self.__dict__)
        state.pop("progress"), state.pop("loss")
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.progress = lambda event: None
        self.loss = self.task.loss(self.cfg, self.recipe, None, "candidate")

    # --- building and cost -----------------------------------------------------------------------
    def spec(self, encoding: str) -> tuple[dict, tuple[int, int]]:
        """(registry spec {"name", "kwargs"}, input size) of an encoding."""
        from nascli.algorithms import SPACES

        space = SPACES[self.space.name]
        code = self.space.canonical(encoding)
        return ({"name": space.model, "kwargs": space.kwargs(self.recipe, code, self.num_classes)},
                tuple(space.input_size(self.recipe, code)))

    def build(self, encoding: str) -> torch.nn.Module:
        spec, _ = self.spec(encoding)
        return create_model(spec["name"], **spec["kwargs"])

    def cost(self, encoding: str) -> dict:
        _, size = self.spec(encoding)
        return model_cost(self.build(encoding), size, self.recipe.search, self.device)

    # --- training --------------------------------------------------------------------------------
    def train_and_eval(self, encoding: str, seed: int, weights_path: Path | None) -> dict:
        """Train the candidate briefly at its input size, validate (COCO mAP), save its weights."""
        started = time.perf_counter()
        spec, size = self.spec(encoding)
        run_seed = derive_seed(seed, *map(ord, self.space.canonical(encoding)))
        recipe = self.recipe.model_copy(deep=True)
        recipe.data.input_size = size
        train_ds, val_ds = self.task.datasets(recipe, augment_seed=run_seed, max_train=self.cfg.max_train_images,
                                              max_val=self.cfg.max_val_images)
        torch.manual_seed(run_seed)
        model = create_model(spec["name"], **spec["kwargs"])
        if self.encoder_state is not None and hasattr(model, "encoder") and takes_encoder_weights(model.encoder):
            load_encoder_weights(model.encoder, self.encoder_state)  # other backbone widths start from random weights
        model.to(self.device)
        try:
            metrics = self._train(model, train_ds, val_ds, recipe, run_seed)
        except DivergedError as e:
            return {"status": "failed", "message": f"training diverged: {e}",
                    "train_seconds": round(time.perf_counter() - started, 2)}
        if weights_path is not None:
            meta = {"num_classes": self.num_classes, "class_names": recipe.data.class_names,
                    "mean": list(recipe.data.mean), "std": list(recipe.data.std), "input_size": list(size),
                    "encoding": self.space.canonical(encoding), "task": "detection"}
            save_checkpoint(weights_path, {"model": spec, "state_dict": model.state_dict(), "meta": meta})
        return {"status": "ok", **result_fields(metrics), "train_seconds": round(time.perf_counter() - started, 2)}

    def _train(self, model: torch.nn.Module, train_ds, val_ds, recipe: Recipe, run_seed: int) -> dict:
        gen = torch.Generator().manual_seed(run_seed)
        loader = DataLoader(train_ds, batch_size=self.cfg.batch_size, shuffle=True, generator=gen,
                            drop_last=len(train_ds) % self.cfg.batch_size == 1, collate_fn=train_ds.collate,
                            num_workers=recipe.data.workers)
        opt = make_optimizer(model.parameters(), self.cfg)
        sched = make_scheduler(opt, self.cfg, len(loader))
        for epoch in range(self.cfg.epochs):
            train_ds.set_epoch(epoch)
            model.train()
            train_steps(lambda b: self.loss(model, b, self.device), loader, opt, sched,
                        on_step=self._on_step(epoch, len(loader)), clip_norm=self.task.grad_clip)
        if self.cfg.precise_bn:
            recalibrate_bn(model, (b[0].to(self.device) for _, b in zip(range(BN_BATCHES), loader)))
        return self.task.evaluate(model, val_ds, recipe, self.cfg.batch_size, self.device)

    def _on_step(self, epoch: int, steps: int):
        return lambda step, loss: self.progress({"event": "step", "epoch": epoch, "epochs": self.cfg.epochs,
                                                 "step": step, "steps": steps, "loss": loss})


def result_fields(metrics: dict) -> dict:
    """result.csv's detection columns (DetectionTask.result_columns); -1 (COCO: no such boxes) as empty."""
    names = {"mAP": "map", "AP50": "map_50", "AP75": "map_75", "AP_small": "map_small", "AP_medium": "map_medium",
             "AP_large": "map_large", "AR100": "mar_100"}
    return {col: (round(metrics[key], 6) if metrics[key] >= 0 else None) for col, key in names.items()}
