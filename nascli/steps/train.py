"""`nascli train`: train one architecture fully, with checkpoints that rebuild their model and resume.

The architecture (see `resolve_source`): a zoo model (`--model`), an explicit `--encoding`, a member of
the Pareto front (`--pick`), else the search's best candidate by mIoU. Models on nascli's MobileNetV2
encoder start from the run's pretrained encoder (pretrain/encoder.pth, else search/encoder.pth).

`train` always trains end to end: `train.mode`, `train.cache_views` and `train.cache_memory_gb` (candidate
settings) are not used.

Files in RUN/train/: config.yaml (the resolved recipe, also saved as RUN/recipe.yaml for the later
steps), last.pth after every epoch, best.pth when the validation mIoU improves, and metrics.csv with one
row per finished epoch (rewritten from the history inside last.pth, so a resumed training lists every
epoch exactly once).

Resume (`--resume`): last.pth holds the weights, optimizer, scheduler, history and epoch. Epoch e's
shuffling, augmentation and dropout are seeded from (seed, e) alone, so a resumed training repeats the
epochs the killed one would have run.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
from torch.utils.data import DataLoader

from nascli.config import Recipe, first_difference, recipe_to_yaml
from nascli.engine.checkpoint import (
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from nascli.engine.loops import (
    make_optimizer,
    make_scheduler,
    recalibrate_bn,
    train_steps,
)
from nascli.engine.losses import with_min_steps
from nascli.pareto.front import flagged as degenerate_rows
from nascli.errors import (
    CheckpointError,
    EncodingError,
    NascliError,
    RunDirError,
    UsageError,
)
from nascli.rundir import RunDir, atomic_write_text
from nascli.seeding import derive_seed
from nascli.algorithms import encoded_input_size, encoded_model
from nascli.spaces.adelaide import AdelaideSpace
from nascli.spaces.adelaide import EncodingError as CodecError
from nascli.steps.common import (
    datasets,
    load_recipe,
    resolve_data,
    save_run_recipe,
    setup_torch,
    validate_lists,
)
from nascli.steps.trained import latest_label, model_label, set_latest, train_dir
from nascli.tasks import task_of
from nascli.zoo.backbones import encoder_state_dict, load_encoder_weights, takes_encoder_weights
from nascli.zoo.registry import NEEDS_ENCODING, OWN_ENCODER, check_name, create_model, model_task

log = logging.getLogger(__name__)

# Settings a resumed training may change: where and how fast it runs, not what it computes.
RESUMABLE_CHANGES = ("device", "threads", "data.workers")
BN_IMAGES = 256  # training images (augmented) used to re-estimate BN statistics before each evaluation


@dataclass
class ModelSource:
    """Which network to train: a registry name and its builder kwargs, and where the choice came from."""

    name: str
    kwargs: dict[str, Any]
    origin: str
    encoding: str | None = None


@dataclass
class TrainResult:
    run_dir: Path
    source: ModelSource
    history: list[dict]
    best: dict
    last_path: Path
    best_path: Path
    metrics_csv: Path
    encoder_origin: str | None = None
    resumed_from: int = 0
    seconds: float = 0.0
    task: Any = None  # the recipe's task (nascli.tasks): which columns the history holds


# --- the recipe -----------------------------------------------------------------------------------------
def load_train_recipe(run: RunDir, recipe_file: Path | None, options: dict[str, Any], flags: dict[str, str],
                      resume: bool) -> Recipe:
    """defaults <- RUN/recipe.yaml <- RUN/train/config.yaml (only with --resume) <- --recipe <- options."""
    return load_recipe(run, recipe_file, options, flags, run.file("train", "config.yaml") if resume else None)


def _check_resumable(config_path: Path, recipe: Recipe) -> None:
    diff = first_difference(config_path, recipe, ignore=RESUMABLE_CHANGES)
    if diff:
        key, old, new = diff
        raise UsageError(f"--resume: {config_path} was trained with {key}={old!r}; this command asks for {new!r}",
                         hint="resume with the same settings, or start over without --resume (delete RUN/train)")


# --- which model ------------------------------------------------------------------------------------------
def parse_encoding(text: str, op_names: list[str], flag: str = "--encoding") -> str:
    """The canonical form of an Adelaide encoding; nascli.errors.EncodingError (exit 3) if it does not parse."""
    try:
        return AdelaideSpace(op_names).canonical(text)
    except CodecError as e:
        raise EncodingError(f"option {flag}: {e}",
                            hint="an encoding is '_' + 19 base-36 digits, as in RUN/search/result.csv") from None


def adelaide_kwargs(recipe: Recipe, encoding: str, num_classes: int) -> dict[str, Any]:
    s = recipe.space
    sep = recipe.train.sep_repeats or s.sep_repeats
    return dict(encoding=encoding, num_classes=num_classes, op_names=list(s.op_names), agg_size=s.agg_size,
                agg_concat=s.agg_concat, sep_repeats=sep)


def read_results(path: Path) -> pd.DataFrame:
    """A search table (result.csv or a front) with the encoding kept as text."""
    try:
        return pd.read_csv(path, dtype={"encoding": str, "parent": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise RunDirError(f"{path} cannot be read ({type(e).__name__})",
                          hint="re-run `nascli search` on this run directory to rewrite it") from None


def front_file(run: RunDir) -> Path:
    """The front `--pick N` indexes: RUN/pareto/pareto.csv (what `nascli pareto` showed last) when it is
    not older than the search results, else RUN/search/pareto_front.csv."""
    shown, result = run.file("pareto", "pareto.csv"), run.file("search", "result.csv")
    if shown.is_file() and (not result.is_file() or shown.stat().st_mtime >= result.stat().st_mtime):
        return shown
    return run.require(run.file("search", "pareto_front.csv"), "search", "--encoding or --model")


def resolve_source(recipe: Recipe, run: RunDir, *, model: str | None = None, encoding: str | None = None,
                   pick: str | None = None, num_classes: int) -> ModelSource:
    """The network to train from the options, else the search's best by mIoU (validated, nothing written)."""
    given = [f for f, v in (("--model", model), ("--encoding", encoding), ("--pick", pick)) if v is not None]
    if len(given) > 1 and not (given == ["--model", "--encoding"] and model in NEEDS_ENCODING):
        raise UsageError(f"options {' and '.join(given)} both choose the model", hint="give only one of them")
    if model is not None:
        check_name(model)
        if model_task(model) != task_of(recipe).name:
            raise UsageError(f"option --model: {model} is a {model_task(model)} model, the data is for "
                             f"{task_of(recipe).name}", hint="`nascli models` lists the models of each task")
    if model is not None and model not in NEEDS_ENCODING:
        return ModelSource(model, {"num_classes": num_classes}, f"zoo model {model}")
    if model in NEEDS_ENCODING and encoding is None:
        raise UsageError(f"--model {model} needs --encoding", hint="or leave --model out to train the search's best")
    if encoding is not None:
        name, kwargs, code = encoded_model(recipe, encoding, num_classes)
        return ModelSource(name, kwargs, f"--encoding {code}", code)
    if pick is not None:
        return _picked(recipe, run, pick, num_classes)
    path = run.require(run.file("search", "result.csv"), "search", "--encoding or --model")
    table = read_results(path)
    task = task_of(recipe)
    column = task.column if task.column in table else "mIOU"  # a search of another task fails below, by name
    ok = table[(table["status"] == "ok") & table[column].notna()] if "status" in table else table
    if ok.empty:
        raise RunDirError(f"{path} has no successfully evaluated candidate",
                          hint="search longer, or pass --encoding/--model")
    flagged = degenerate_rows(ok["degenerate"]) if "degenerate" in ok else None
    note = ""
    if flagged is not None and flagged.any():
        if flagged.all():
            log.warning("every candidate in %s is degenerate (predicts one class, or misses a frequent one): "
                        "training the best of them by mIoU anyway", path)
            note = ", degenerate like every candidate"
        else:
            log.info("skipping %d degenerate candidates of %d for the best pick", int(flagged.sum()), len(ok))
            note = f", {int(flagged.sum())} degenerate candidates skipped"
            ok = ok[~flagged]
    row = ok.loc[ok[column].astype(float).idxmax()]
    name, kwargs, code = encoded_model(recipe, str(row["encoding"]), num_classes, flag=str(path))
    origin = (f"search best by {task.label}: candidate {row.get('index')} ({float(row[column]):.4f} in "
              f"search{note})")
    return ModelSource(name, kwargs, origin, code)


def _picked(recipe: Recipe, run: RunDir, pick: str, num_classes: int) -> ModelSource:
    path = front_file(run)
    front = read_results(path).reset_index(drop=True)
    if pick.strip().isdigit():
        n = int(pick)
        if n >= len(front):
            raise UsageError(f"option --pick: {n} is out of range; {path} has {len(front)} members (0..{len(front) - 1})",
                             hint=f"run `nascli pareto -r {run.path}` to see the front")
        name, kwargs, code = encoded_model(recipe, str(front.loc[n, "encoding"]), num_classes, flag=str(path))
        return ModelSource(name, kwargs, f"--pick {n}: member {n} of {path}", code)
    name, kwargs, code = encoded_model(recipe, pick, num_classes, flag="--pick")
    if code not in set(front["encoding"].astype(str)):
        raise UsageError(f"option --pick: {code} is not on the front in {path}",
                         hint="pick a row number or encoding from `nascli pareto`, or pass it as --encoding")
    return ModelSource(name, kwargs, f"--pick {code} from {path}", code)


def encoder_file(run: RunDir, explicit: Path | None) -> Path | None:
    """The encoder weights for models on our encoder: --encoder, else pretrain/encoder.pth, else search/encoder.pth."""
    if explicit is not None:
        if not Path(explicit).is_file():
            raise UsageError(f"option --encoder: {explicit} not found", hint="give an encoder.pth from pretrain-backbone")
        return Path(explicit)
    for step in ("pretrain", "search"):
        path = run.file(step, "encoder.pth")
        if path.is_file():
            return path
    return None


def _load_encoder(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    ckpt = load_checkpoint(path)
    state = encoder_state_dict(ckpt["state_dict"])
    if not state:
        raise CheckpointError(f"{path} holds no MobileNetV2 encoder weights (no features.* entries)",
                              hint="give an encoder.pth written by `nascli pretrain-backbone`")
    source = ckpt["meta"].get("source", "unknown")
    return state, f"{path} ({source})"


def meta_for(recipe: Recipe, source: ModelSource) -> dict[str, Any]:
    d = recipe.data
    return {"num_classes": d.num_classes, "class_names": d.class_names, "mean": list(d.mean), "std": list(d.std),
            "input_size": list(d.input_size), "ignore_index": d.ignore_index, "encoding": source.encoding,
            "source": source.origin, "task": recipe.task}


# --- entry point -----------------------------------------------------------------------------------------
def run(recipe: Recipe, run_dir: RunDir, *, model: str | None = None, encoding: str | None = None,
        pick: str | None = None, encoder: Path | None = None, resume: bool = False,
        progress: Callable[[dict], None] | None = None) -> TrainResult:
    """Validate everything, then train into RUN/train/<model>/ (or continue that training with `resume`)."""
    recipe = resolve_data(recipe)
    device = setup_torch(recipe)
    chosen = any(v is not None for v in (model, encoding, pick))
    run_dir.check_free()
    if resume:
        if chosen:
            chosen_source = resolve_source(recipe, run_dir, model=model, encoding=encoding, pick=pick,
                                           num_classes=recipe.data.num_classes)
            label = model_label(chosen_source.name, chosen_source.encoding)
        else:
            label = latest_label(run_dir)
            if label is None:
                raise RunDirError(f"--resume: nothing to resume ({run_dir.sub('train')}/<model>/last.pth not found)",
                                  hint=f"run `nascli train -r {run_dir.path}` without --resume")
        tdir = train_dir(run_dir, label)
        last = tdir / "last.pth"
        source, net, state = _resumed(recipe, run_dir, last)
        enc_origin = None
        validate_lists(recipe)
    else:
        latest = latest_label(run_dir)
        if not chosen and latest is not None:  # `train -r RUN` after a kill most likely means "continue"
            _refuse_unfinished(train_dir(run_dir, latest) / "last.pth", run_dir, "")
        source = resolve_source(recipe, run_dir, model=model, encoding=encoding, pick=pick,
                                num_classes=recipe.data.num_classes)
        _fit_input_size(recipe, source.name, source.encoding)
        label = model_label(source.name, source.encoding)
        tdir = train_dir(run_dir, label)
        last = tdir / "last.pth"
        chosen_flags = f" --model {source.name}" if source.encoding is None else f" --encoding {source.encoding}"
        _refuse_unfinished(last, run_dir, chosen_flags if label != latest else "")
        enc_path = encoder_file(run_dir, encoder) if source.name in OWN_ENCODER else None
        enc = _load_encoder(enc_path) if enc_path is not None else None
        validate_lists(recipe)  # after the cheap checks: a wrong option fails before the data is read
        torch.manual_seed(recipe.seed)
        net, state = create_model(source.name, **source.kwargs), None
        enc_origin = _init_encoder(net, source, enc)
    progress = progress or (lambda event: None)
    again = f"nascli train -r {run_dir.path} --resume"

    def interrupted() -> tuple[str, str]:
        epochs = _epochs_done(last)
        if not epochs:
            return "training interrupted before its first epoch finished; nothing was saved", "run the same command again"
        return f"training interrupted after {epochs} finished epochs; {last} holds the last one", f"continue with `{again}`"

    with run_dir.step("train", interrupted=interrupted, model=source.name, encoding=source.encoding,
                      source=source.origin, folder=str(tdir)) as done:
        tdir.mkdir(parents=True, exist_ok=True)
        if state is None:
            _clear_previous(tdir)
        set_latest(run_dir, label)
        atomic_write_text(tdir / "config.yaml", recipe_to_yaml(recipe))
        save_run_recipe(run_dir, recipe)  # eval, export and profile on this run start from it
        result = _train(recipe, run_dir, tdir, source, net.to(device), device, state, progress)
        result.encoder_origin = enc_origin
        task = task_of(recipe)
        done.update(epochs=len(result.history), best_epoch=result.best.get("epoch"),
                    **{f"best_{task.metric}": result.best.get(task.epoch_metric)})
    return result


def _resumed(recipe: Recipe, run_dir: RunDir, last: Path) -> tuple[ModelSource, torch.nn.Module, dict]:
    """The model and training state in last.pth, after checking the settings match the original run."""
    if not last.is_file():
        raise RunDirError(f"--resume: {last} not found, nothing to resume",
                          hint=f"run `nascli train -r {run_dir.path}` without --resume")
    state = load_checkpoint(last)
    _fit_input_size(recipe, state.get("model", {}).get("name", ""), state.get("meta", {}).get("encoding"))
    _check_resumable(last.parent / "config.yaml", recipe)
    if "optimizer" not in state or "epoch" not in state:
        raise CheckpointError(f"{last} is not a resumable training checkpoint (no optimizer state)",
                              hint="start over without --resume")
    meta = state["meta"]
    source = ModelSource(state["model"]["name"], state["model"]["kwargs"], meta.get("source", str(last)),
                         meta.get("encoding"))
    return source, model_from_checkpoint(state, last), state


def _fit_input_size(recipe: Recipe, name: str, encoding: str | None) -> None:
    """A network whose encoding fixes its input size (efficientdet's compound scaling) trains at that size."""
    size = encoded_input_size(recipe, name, encoding)
    if size is not None and tuple(recipe.data.input_size) != size:
        log.info("input size %dx%d: what %s %s is scaled for (not data.input_size %dx%d)", *size, name, encoding,
                 *recipe.data.input_size)
        recipe.data.input_size = size


def _refuse_unfinished(last: Path, run_dir: RunDir, flags: str) -> None:
    """An unfinished training is continued with --resume (`flags` choose its model), never silently replaced."""
    if not last.is_file():
        return
    try:
        ckpt = load_checkpoint(last)
    except CheckpointError:
        return  # a corrupt last.pth is no training worth keeping
    done, total = int(ckpt.get("epoch", 0)), int(ckpt.get("epochs", 0))
    if done < total:
        raise UsageError(f"{last} holds an unfinished training ({done} of {total} epochs)",
                         hint=f"continue it with `nascli train -r {run_dir.path} --resume{flags}`, "
                              f"or delete {last.parent} to start over")


def _clear_previous(tdir: Path) -> None:
    """A new training replaces a finished one: its checkpoints go, so none can be mistaken for the new one's."""
    old = [tdir / n for n in ("last.pth", "best.pth", "metrics.csv") if (tdir / n).exists()]
    if old:
        log.warning("replacing the previous training in %s (%s)", tdir, ", ".join(p.name for p in old))
    for path in old:
        path.unlink()


def _init_encoder(net: torch.nn.Module, source: ModelSource, enc: tuple[dict, str] | None) -> str | None:
    if source.name not in OWN_ENCODER:
        log.warning("%s starts from random weights (no pretrained weights are downloaded)", source.name)
        return None
    if enc is None:
        log.warning("no encoder weights in the run directory: the encoder starts from random weights; "
                    "`nascli pretrain-backbone -r RUN` first (dense on segmentation masks, or --imagefolder / --weights) "
                    "gives a far better model")
        return None
    state, origin = enc
    if not takes_encoder_weights(net.encoder):
        log.warning("the backbone is MobileNetV2 at width %g: encoder weights (%s) exist only at width 1.0, so it "
                    "starts from random weights", net.encoder.width_mult, origin)
        return None
    try:
        load_encoder_weights(net.encoder, state)
    except KeyError as e:
        raise CheckpointError(f"encoder weights {origin} do not fit: {e.args[0]}",
                              hint="give an encoder.pth written by `nascli pretrain-backbone`") from None
    log.info("encoder initialised from %s", origin)
    return origin


def _epochs_done(last: Path) -> int:
    try:
        return int(load_checkpoint(last).get("epoch", 0))
    except NascliError:
        return 0


# --- the loop ------------------------------------------------------------------------------------------
def _loader(train_ds, cfg, seed: int, epoch: int, workers: int) -> DataLoader:
    """Epoch `epoch`'s batches: order and augmentation depend on (seed, epoch) only; a lone last sample is
    dropped (BatchNorm cannot train on a batch of one pooled value). A dataset whose samples do not stack
    (detection's boxes) brings its own `collate`."""
    train_ds.set_epoch(epoch)
    gen = torch.Generator().manual_seed(derive_seed(seed, 0x5EED, epoch))
    drop = len(train_ds) % cfg.batch_size == 1 and len(train_ds) > 1
    return DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, generator=gen, drop_last=drop,
                      num_workers=workers, collate_fn=getattr(train_ds, "collate", None))


def _train(recipe: Recipe, run_dir: RunDir, tdir: Path, source: ModelSource, net: torch.nn.Module,
           device: torch.device, state: dict | None, progress: Callable[[dict], None]) -> TrainResult:
    started = time.perf_counter()
    cfg, seed, task = recipe.train, recipe.seed, task_of(recipe)
    train_ds, val_ds = datasets(recipe, augment_seed=seed, max_train=cfg.max_train_images, max_val=cfg.max_val_images)
    steps = len(_loader(train_ds, cfg, seed, 0, 0))
    cfg = with_min_steps(cfg, steps, "training")
    recipe = recipe.model_copy(update={"train": cfg})
    loss_fn = task.loss(cfg, recipe, train_ds, "train")
    opt = make_optimizer(net.parameters(), cfg)
    sched = make_scheduler(opt, cfg, steps)
    history: list[dict] = []
    start = 0
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history, start = list(state["history"]), int(state["epoch"])
        log.info("resuming from %s: %d of %d epochs done", tdir / "last.pth", start, cfg.epochs)
    spec = {"name": source.name, "kwargs": source.kwargs}
    meta = meta_for(recipe, source)
    _write_metrics(tdir / "metrics.csv", history, task)
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        torch.manual_seed(derive_seed(seed, 0xD12, epoch))  # dropout and anything else drawing from torch
        loader = _loader(train_ds, cfg, seed, epoch, recipe.data.workers)
        lr = opt.param_groups[0]["lr"]
        net.train()
        loss = train_steps(lambda b: loss_fn(net, b, device), loader, opt, sched,
                           on_step=_on_step(progress, epoch, cfg.epochs, steps), clip_norm=task.grad_clip)
        metrics = _evaluate(net, recipe, train_ds, val_ds, epoch, device)
        row = _row(epoch, loss, lr, task.epoch_fields(metrics, recipe.data), task.epoch_metric, history,
                   time.perf_counter() - t0)
        history.append(row)
        ckpt = {"model": spec, "state_dict": net.state_dict(), "meta": meta, "epoch": epoch + 1, "epochs": cfg.epochs,
                "history": history, "train_config": cfg.model_dump(mode="json"), "seed": seed}
        save_checkpoint(tdir / "last.pth", {**ckpt, "optimizer": opt.state_dict(), "scheduler": sched.state_dict()})
        if row["best"]:
            save_checkpoint(tdir / "best.pth", ckpt)
        _write_metrics(tdir / "metrics.csv", history, task)
        log.info("epoch %d/%d: loss %.4f, %s%s (%.1f s)", epoch + 1, cfg.epochs, loss, task.epoch_text(row),
                 ", best so far" if row["best"] else "", row["seconds"])
        progress({"event": "epoch", "row": row, "epochs": cfg.epochs})
    key = task.epoch_metric
    best = max((r for r in history if not math.isnan(r[key])), key=lambda r: r[key], default={})
    return TrainResult(run_dir.path, source, history, best, tdir / "last.pth", tdir / "best.pth", tdir / "metrics.csv",
                       resumed_from=start, seconds=time.perf_counter() - started, task=task)


def _on_step(progress: Callable[[dict], None], epoch: int, epochs: int, steps: int) -> Callable[[int, float], None]:
    return lambda step, loss: progress({"event": "step", "epoch": epoch + 1, "epochs": epochs, "step": step,
                                        "steps": steps, "loss": loss})


def _evaluate(net, recipe: Recipe, train_ds, val_ds, epoch: int, device: torch.device) -> dict:
    """Precise BN on this epoch's training views, then the task's validation metrics (eval mode)."""
    cfg = recipe.train
    loader = _loader(train_ds, cfg, recipe.seed, epoch, recipe.data.workers)
    limit = max(1, BN_IMAGES // cfg.batch_size)
    batches = (b[0].to(device) for i, b in zip(range(limit), loader))
    recalibrate_bn(net, batches)
    return task_of(recipe).evaluate(net, val_ds, recipe, cfg.batch_size, device)


def _row(epoch: int, loss: float, lr: float, fields: dict, key: str, history: list[dict], seconds: float) -> dict:
    """metrics.csv's row of one epoch; `best` when the task's metric `key` beats every earlier epoch."""
    best_before = max((r[key] for r in history if not math.isnan(r[key])), default=-math.inf)
    value = float(fields[key])
    return {"epoch": epoch + 1, "train_loss": round(loss, 6), "lr": lr, **fields,
            "best": bool(not math.isnan(value) and value > best_before), "seconds": round(seconds, 2)}


def _write_metrics(path: Path, history: list[dict], task) -> None:
    columns = ["epoch", "train_loss", "lr", *task.epoch_columns, "best", "seconds"]
    atomic_write_text(path, pd.DataFrame(history, columns=columns).to_csv(index=False))
