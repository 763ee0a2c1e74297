"""`nascli search`: the loop that owns ask -> evaluate -> record -> tell -> save state.

Crash safety, in the order things are written for candidate i:
  1. search/candidates/NNNN/weights.pth, then record.json (both atomic) right after training;
  2. one line appended to search/records.jsonl (fsynced);
  3. search/strategy.pt (the strategy's state and how many records it has been told), result.csv,
     pareto_front.csv (all atomic).
A re-run with the same settings replays from records.jsonl: records the state has not seen are told
again, and a candidate whose record.json exists but never reached records.jsonl is recovered rather than
trained again. Proposal i draws from a random.Random seeded from (seed, i), and candidate training from
(seed, encoding), so with the same seed, threads and device the resumed search asks and measures exactly
what the uninterrupted one would have. Threads and device change floating-point reductions (a candidate's
reward moves in the third decimal, and with it the strategy's later choices), so search/runtime.json
records them and a resume that changes them is refused unless `allow_runtime_change` is given.
"""

from __future__ import annotations

import io
import json
import logging
import math
import random
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from nascli.algorithms import ALGORITHMS, SPACES, get_algorithm
from nascli.tasks import TASKS, get_task, task_of
from nascli.config import Recipe, first_difference, recipe_to_yaml
from nascli.engine.checkpoint import load_checkpoint, safe_load, save_checkpoint
from nascli.engine.evaluator import CandidateEvaluator
from nascli.engine.loops import group_by_shape, recalibrate_bn
from nascli.errors import ConfigError, RunDirError, UsageError
from nascli.faults import fault_point
from nascli.pareto.front import OBJECTIVES, pareto_front
from nascli.rundir import (
    RunDir,
    append_jsonl,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
)
from nascli.seeding import derive_seed
from nascli.steps.common import (
    datasets,
    resolve_data,
    save_run_recipe,
    setup_torch,
    validate_lists,
)
from nascli.zoo.backbones import MobileNetV2Encoder, encoder_state_dict

log = logging.getLogger(__name__)

# result.csv's columns: these, with the task's metric columns (tasks' `result_columns`, the first after
# `status`), then anything else a record holds.
HEAD_COLUMNS = ["index", "encoding", "space", "task", "phase", "parent", "status"]
COST_COLUMNS = ["flops", "parameters", "input_size", "latency_ms", "latency_runtime", "latency_size"]
TAIL_COLUMNS = ["epochs", "mode", "train_seconds", "seconds", "mutated_position", "weights", "message"]
INT_COLUMNS = ["index", "flops", "parameters", "epochs", "mutated_position", "stage"]
# What a candidate's numbers depend on: a resumed search must match these. The budget, data loader
# workers and other steps' sections (train, pretrain) may change; threads and device are checked
# separately (search/runtime.json), since they hold effective values, not the recipe's.
SEARCH_KEYS = ("seed", "space.", "data.", "search.", "candidate.") + tuple(
    f"{a.section}." for a in ALGORITHMS.values() if a.section)
RESUMABLE_CHANGES = ("search.random_samples", "search.mutate_samples", "search.samples", "search.max_retries",
                     "data.workers", "candidate.cache_memory_gb", "proxyless.front_samples", "proxyless.lut_file")


@dataclass
class SearchResult:
    run_dir: Path
    records: list[dict]
    front: pd.DataFrame
    objectives: list[str]
    result_csv: Path
    front_csv: Path
    resumed_from: int = 0
    recovered: int = 0
    stats: dict = field(default_factory=dict)
    seconds: float = 0.0


class SerialExecutor:
    """Evaluates one candidate at a time in this process; the loop is written for several in flight."""

    max_in_flight = 1

    def submit(self, fn: Callable, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as e:  # KeyboardInterrupt passes through: Ctrl-C stops the search
            future.set_exception(e)
        return future


# --- entry point -------------------------------------------------------------------------------------
def run(recipe: Recipe, run_dir: RunDir, *, encoder_weights: Path | None = None,
        progress: Callable[[dict], None] | None = None, executor=None,
        allow_runtime_change: bool = False) -> SearchResult:
    """Validate everything, then search (or resume the search already in `run_dir`).

    `allow_runtime_change` lets a resume run on other threads or another device than the records were
    made with (its later candidates then differ slightly from an uninterrupted search's)."""
    recipe = resolve_data(recipe)
    resolve_objectives(recipe)
    device = setup_torch(recipe)
    runtime = {"threads": torch.get_num_threads(), "device": str(device)}
    if "latency" in recipe.search.objectives:
        recipe.search.measure_latency = True
    run_dir.check_free()  # the cheap checks first: a busy run directory or a wrong option fails at once
    encoder_source = _encoder_source(run_dir, encoder_weights)
    algorithm = get_algorithm(recipe.search.algo)
    _check_task(algorithm, recipe)
    if encoder_weights is not None and not algorithm.shared_encoder:
        raise UsageError(f"option --encoder: --algo {algorithm.name} searches its own backbone; it takes no encoder",
                         hint="drop --encoder")
    if algorithm.check is not None:
        algorithm.check(recipe)
    progress = progress or (lambda event: None)
    sdir = run_dir.sub("search")
    _check_resumable(sdir / "config.yaml", recipe)
    _check_state_files(sdir)
    runtime = _check_runtime(sdir, runtime, allow_runtime_change)
    if encoder_weights is not None:
        _check_same_encoder(sdir / "encoder.pth", Path(encoder_weights))
    validate_lists(recipe)

    def interrupted() -> tuple[str, str]:
        done = len(read_jsonl(sdir / "records.jsonl"))
        return (f"search interrupted after {done} candidates; everything evaluated is saved",
                "run the same command again to resume")

    with run_dir.step("search", interrupted=interrupted) as done:
        sdir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(sdir / "config.yaml", recipe_to_yaml(recipe))
        atomic_write_json(sdir / RUNTIME_FILE, runtime)
        save_run_recipe(run_dir, recipe)
        result = _search(recipe, run_dir, encoder_source, progress, executor or SerialExecutor())
        done.update(candidates=len(result.records), seconds=round(result.seconds, 1))
    return result


RUNTIME_FILE = "runtime.json"


def resolve_objectives(recipe: Recipe) -> None:
    """The search's objectives as given, else the task's metric and MACs; another task's metric is an error."""
    task = task_of(recipe)
    s = recipe.search
    if s.objectives is None:
        s.objectives = [task.metric, "macs"]
    others = {get_task(t).metric for t in TASKS} - {task.metric}
    wrong = [o for o in s.objectives if o in others]
    if wrong:
        raise UsageError(f"option --objectives: {wrong[0]} is not a {task.name} metric",
                         hint=f"use {task.metric}, e.g. --objectives {task.metric},macs")


def _check_task(algorithm, recipe: Recipe) -> None:
    """An algorithm searches models of one task; data of another is a usage error naming the ones that fit."""
    if algorithm.task != recipe.task:
        fits = [a.name for a in ALGORITHMS.values() if a.task == recipe.task]
        raise UsageError(f"option --algo: {algorithm.name} searches {algorithm.task} models, but the data is for "
                         f"{recipe.task}", hint=f"use --algo {' or '.join(fits)}" if fits else
                         f"no algorithm searches {recipe.task} models yet")


def _check_runtime(sdir: Path, runtime: dict, allow_change: bool) -> dict:
    """What runtime.json should say after this run: refuses a resume on other threads or another device
    (its numbers would not be the uninterrupted search's), or, if allowed, notes the change in the file."""
    records = read_jsonl(sdir / "records.jsonl")
    path = sdir / RUNTIME_FILE
    if not records:
        return {**runtime, "since_candidate": 0}
    if not path.exists():  # a search from before runtime.json: nothing to compare with
        log.warning("%s has no %s: cannot check that this resume uses the threads and device of its %d records",
                    sdir, RUNTIME_FILE, len(records))
        return {**runtime, "since_candidate": len(records)}
    try:
        saved = json.loads(path.read_text())
        old = {"threads": int(saved["threads"]), "device": str(saved["device"])}
    except (OSError, ValueError, KeyError, TypeError):
        raise RunDirError(f"{path} is not one nascli wrote",
                          hint="delete it to resume without the threads and device check") from None
    if old == runtime:
        return saved
    said = f"--threads {old['threads']} --device {old['device']}"
    if not allow_change:
        raise UsageError(f"{sdir} holds {len(records)} candidates evaluated with {said}; this command runs with "
                         f"--threads {runtime['threads']} --device {runtime['device']}, so the rest of the search "
                         "would not be what an uninterrupted search gives",
                         hint=f"re-run with {said} to resume exactly, or add --allow-runtime-change to continue anyway")
    log.warning("resuming on --threads %s --device %s after %d candidates evaluated with %s: the remaining candidates "
                "differ slightly from an uninterrupted search's", runtime["threads"], runtime["device"], len(records),
                said)
    earlier = list(saved.get("earlier", [])) + [{k: v for k, v in saved.items() if k != "earlier"}]
    return {**runtime, "since_candidate": len(records), "earlier": earlier}


def _check_state_files(sdir: Path) -> None:
    """Read what a resumed search will read, before anything is written: a damaged file fails here."""
    read_jsonl(sdir / "records.jsonl")
    if (sdir / "strategy.pt").exists():
        load_checkpoint_state(sdir / "strategy.pt")
    if (sdir / "encoder.pth").exists():
        load_checkpoint(sdir / "encoder.pth")


def _check_same_encoder(saved: Path, given: Path) -> None:
    """A resumed search keeps the encoder its candidates were trained on: another one given is refused, not
    silently ignored (its candidates' numbers would not be comparable)."""
    if not saved.exists():
        return
    ckpt = load_checkpoint(saved)
    old, new = ckpt["state_dict"], encoder_state_dict(load_checkpoint(given)["state_dict"])
    if old.keys() != new.keys() or any(not torch.equal(old[k], new[k]) for k in old):
        raise UsageError(f"option --encoder: {saved.parent} holds a search whose candidates used another encoder "
                         f"({ckpt['meta'].get('source', 'unknown source')}), not {given}",
                         hint="drop --encoder to resume with the search's own, or use a new --run-dir")


def _encoder_source(run_dir: RunDir, explicit: Path | None) -> Path | None:
    if explicit is not None:
        if not Path(explicit).is_file():
            raise UsageError(f"option --encoder: {explicit} not found", hint="give an encoder.pth from pretrain-backbone")
        load_checkpoint(explicit)  # fail now, not after the lock, on a corrupt or unsafe file
        return Path(explicit)
    pre = run_dir.file("pretrain", "encoder.pth")
    return pre if pre.is_file() else None


def _check_resumable(config_path: Path, recipe: Recipe) -> None:
    """A re-run continues a search only with the settings that produced its records."""
    diff = first_difference(config_path, recipe, compare=SEARCH_KEYS, ignore=RESUMABLE_CHANGES)
    if diff:
        key, old, new = diff
        raise UsageError(f"{config_path.parent} holds a search with {key}={old!r}; this command asks for {new!r}",
                         hint="re-run with the same settings to resume, or use a new --run-dir for a new search")


# --- the loop ------------------------------------------------------------------------------------------
def _search(recipe: Recipe, run_dir: RunDir, encoder_source: Path | None, progress, executor) -> SearchResult:
    started = time.perf_counter()
    sdir = run_dir.sub("search")
    algorithm = get_algorithm(recipe.search.algo)
    space = SPACES[algorithm.space].codec(recipe)
    seed = recipe.seed
    records_path, state_path = sdir / "records.jsonl", sdir / "strategy.pt"
    records = read_jsonl(records_path)
    resumed_from = len(records)
    if resumed_from:
        log.info("resuming: %d candidates already evaluated in %s", resumed_from, records_path)

    cfg = recipe.candidate
    train_ds, val_ds = datasets(recipe, augment_seed=seed, max_train=cfg.max_train_images, max_val=cfg.max_val_images)
    context: dict = {}
    if algorithm.shared_encoder:
        encoder_state, encoder_file = _prepare_encoder(sdir, encoder_source, seed, train_ds, cfg.batch_size)
        context = {"encoder_state": encoder_state, "encoder_file": encoder_file}
    evaluator = algorithm.evaluator(recipe, space, train=train_ds, val=val_ds, progress=progress, cache_dir=sdir,
                                    **context)
    strategy = algorithm.strategy(recipe, space, evaluator)
    told = 0
    if state_path.exists():
        saved = load_checkpoint_state(state_path)
        strategy.load_state_dict(saved["state"])
        told = int(saved["told"])
    for record in records[told:]:
        strategy.tell(record)
    for record in records:
        evaluator.observe(record)
    total = algorithm.budget(recipe)
    stats = {"duplicates": 0, "rejected": 0}
    seen = {r["encoding"] for r in records}
    pending: dict[int, tuple] = {}
    recovered = 0
    _write_tables(sdir, records, recipe.search.objectives)
    try:
        while True:
            while len(pending) < executor.max_in_flight:
                index = len(records) + len(pending)
                proposal, cost = _propose(strategy, space, evaluator, recipe, index, seen, stats)
                if proposal is None:
                    break
                seen.add(proposal.encoding)
                progress({"event": "candidate", "index": index, "total": total, "encoding": proposal.encoding,
                          "phase": proposal.phase})
                cand_dir = sdir / "candidates" / f"{index:04d}"
                prior = _recover(cand_dir, proposal.encoding)
                if prior is not None:
                    recovered += 1
                    future: Future = Future()
                    future.set_result(prior)
                else:
                    future = executor.submit(_evaluate, evaluator, recipe, index, proposal, cost, cand_dir, sdir)
                pending[index] = (proposal, future)
            if not pending:
                break
            index = min(pending)  # tell in index order: the same order whatever finishes first
            proposal, future = pending.pop(index)
            record = future.result()
            fault_point("search_recorded")
            append_jsonl(records_path, record)
            fault_point("search_appended")
            records.append(record)
            evaluator.observe(record)
            strategy.tell(record)
            _save_state(state_path, strategy, len(records))
            _write_tables(sdir, records, recipe.search.objectives)
            progress({"event": "record", "record": record, "done": len(records), "total": total,
                      "best_miou": _best(records)})
    finally:
        evaluator.close()  # a feature cache spilled to disk goes now, not at exit
    result_csv, front_csv = sdir / "result.csv", sdir / "pareto_front.csv"
    front = pareto_front(_table(records), recipe.search.objectives) if records else _table([])
    return SearchResult(run_dir.path, records, front, list(recipe.search.objectives), result_csv, front_csv,
                        resumed_from, recovered, stats, time.perf_counter() - started)


def _propose(strategy, space, evaluator: CandidateEvaluator, recipe: Recipe, index: int,
             seen: set[str], stats: dict):
    """The next new, feasible proposal (or None when the budget is spent); bounded retries."""
    s = recipe.search
    rng = random.Random(derive_seed(recipe.seed, index))
    smallest: dict[str, float] = {}
    for _ in range(s.max_retries):
        proposal = strategy.ask(index, rng)
        if proposal is None:
            return None, None
        proposal.encoding = space.canonical(proposal.encoding)
        if proposal.encoding in seen:
            stats["duplicates"] += 1
            continue
        cost = evaluator.cost(proposal.encoding)
        violated = _violation(cost, s)
        if violated is None:
            return proposal, cost
        stats["rejected"] += 1
        key, value = violated
        smallest[key] = min(smallest.get(key, math.inf), value)
    detail = ", ".join(f"smallest {k} seen {v:.4g}" for k, v in smallest.items())
    raise ConfigError(f"no new candidate satisfying the constraints after {s.max_retries} tries for candidate {index}"
                      + (f" ({detail})" if detail else " (every proposal was a duplicate)"),
                      hint="relax --max-macs/--max-params/--max-latency-ms, or enlarge the space (op_names)")


def _violation(cost: dict, s) -> tuple[str, float] | None:
    for key, limit in (("flops", s.max_macs), ("parameters", s.max_params), ("latency_ms", s.max_latency_ms)):
        if limit is not None and cost.get(key) is not None and cost[key] > limit:
            return key, cost[key]
    return None


def _evaluate(evaluator: CandidateEvaluator, recipe: Recipe, index: int, proposal, cost: dict, cand_dir: Path,
              sdir: Path) -> dict:
    started = time.perf_counter()
    weights = cand_dir / "weights.pth"
    result = evaluator.train_and_eval(proposal.encoding, recipe.seed, weights)
    fault_point("search_trained")
    record = {
        "index": index, "encoding": proposal.encoding, "space": evaluator.space.name, "task": recipe.task,
        "phase": proposal.phase,
        "parent": proposal.parent or "", **cost, **result, "epochs": evaluator.cfg.epochs,
        "mode": getattr(evaluator, "mode", recipe.candidate.mode),
        "seconds": round(time.perf_counter() - started, 2),
        "weights": str(weights.relative_to(sdir)) if weights.exists() else "",
        **proposal.info,
    }
    atomic_write_json(cand_dir / "record.json", record)
    return record


def _recover(cand_dir: Path, encoding: str) -> dict | None:
    """A record finished before a crash but not yet appended (so the candidate is not trained twice)."""
    path = cand_dir / "record.json"
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("encoding") != encoding:
        return None
    log.info("recovered candidate %s from %s", encoding, path)
    return record


def _prepare_encoder(sdir: Path, source: Path | None, seed: int, train_ds, batch_size: int) -> tuple[dict, Path]:
    """The frozen (cached mode) or starting (full mode) encoder every candidate shares, fixed per search."""
    path = sdir / "encoder.pth"
    if path.exists():
        return load_checkpoint(path)["state_dict"], path
    if source is not None:
        state = encoder_state_dict(load_checkpoint(source)["state_dict"])
        origin = str(source)
        log.info("encoder weights: %s", source)
    else:
        torch.manual_seed(derive_seed(seed, 0xE1C0DE))
        encoder = MobileNetV2Encoder()
        recalibrate_bn(encoder, (x for x, _ in group_by_shape((train_ds[i] for i in range(min(len(train_ds), 256))),
                                                              batch_size)))
        state = encoder.state_dict()
        origin = f"random initialisation (seed {seed}), BN statistics measured on the training images"
        log.warning("no pretrained encoder in the run directory: candidates use a randomly initialised encoder; "
                    "`nascli pretrain-backbone -r RUN` first gives the search a far better signal")
    save_checkpoint(path, {"model": {"name": "encoder", "kwargs": {"backbone": "mobilenet_v2"}}, "state_dict": state,
                           "meta": {"source": origin}})
    return state, path


def load_checkpoint_state(path: Path) -> dict:
    state = safe_load(path, "search state", corrupt_hint="delete it: the search state is rebuilt from records.jsonl")
    if not isinstance(state, dict) or "state" not in state or "told" not in state:
        raise RunDirError(f"search state {path} is not one nascli wrote",
                          hint="delete it: the search state is rebuilt from records.jsonl")
    return state


def _save_state(path: Path, strategy, told: int) -> None:
    buf = io.BytesIO()
    torch.save({"state": strategy.state_dict(), "told": told}, buf)
    atomic_write(path, lambda f: f.write(buf.getbuffer()))


# --- tables -------------------------------------------------------------------------------------------
def _table(records: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(records)
    tasks = df["task"].dropna() if "task" in df else []
    metric, *rest = get_task(str(tasks.iloc[0]) if len(tasks) else None).result_columns
    columns = HEAD_COLUMNS + [metric] + COST_COLUMNS + rest + TAIL_COLUMNS
    df = df.reindex(columns=columns + [c for c in df.columns if c not in columns])
    for c in (c for c in INT_COLUMNS if c in df):
        df[c] = pd.to_numeric(df[c], errors="coerce").round().astype("Int64")
    return df


def _write_tables(sdir: Path, records: list[dict], objectives: list[str]) -> None:
    df = _table(records)
    atomic_write_text(sdir / "result.csv", df.to_csv(index=False))
    front = pareto_front(df, objectives) if len(df) else df
    atomic_write_text(sdir / "pareto_front.csv", front.to_csv(index=False))


def _best(records: list[dict]) -> float | None:
    """The best task metric (mIoU, mAP) among the candidates that are not degenerate."""
    column = get_task(records[0].get("task") if records else None).column
    ok = [r[column] for r in records if r.get("status") == "ok" and r.get(column) is not None
          and not r.get("degenerate")]
    return max(ok) if ok else None


def objective_columns(objectives: list[str]) -> list[str]:
    return [OBJECTIVES[o][0] for o in objectives]
