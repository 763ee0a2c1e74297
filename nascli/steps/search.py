"""`nascli search`: the loop that owns ask -> evaluate -> record -> tell -> save state.

Crash safety, in the order things are written for candidate i:
  1. search/candidates/NNNN/weights.pth, then record.json (both atomic) right after training;
  2. one line appended to search/records.jsonl (fsynced);
  3. search/strategy.pt (the strategy's state and how many records it has been told), result.csv,
     pareto_front.csv (all atomic).
Before a proposal is submitted it is appended to search/proposals.jsonl (fsynced), so with K =
`search.parallel` candidates in flight a crash loses no proposal: a re-run with the same settings tells the
records the state has not seen, then submits the logged proposals that have no record as they were logged
(asking again would draw them from a later strategy state), and only then asks for new ones. A candidate
whose record.json exists but never reached records.jsonl is recovered rather than trained again. The loop
asks, submits and tells in one fixed order for a given K (results are told back in index order, whatever
finishes first), so the records depend on (seed, K), not on the executor (nascli.executors) or its workers;
a resume with another K is refused. Proposal i draws from a random.Random seeded from (seed, i), and candidate training from
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
from nascli.executors import CandidateTask, Executor, TaskResult
from nascli.executors.local import SerialExecutor
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
from nascli.strategies.base import Proposal
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
                     "data.workers", "candidate.cache_memory_gb", "proxyless.front_samples", "proxyless.lut_file",
                     "proxyless.lut_calibrate")


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


# --- entry point -------------------------------------------------------------------------------------
def run(recipe: Recipe, run_dir: RunDir, *, encoder_weights: Path | None = None,
        progress: Callable[[dict], None] | None = None, executor: Executor | None = None,
        allow_runtime_change: bool = False) -> SearchResult:
    """Validate everything, then search (or resume the search already in `run_dir`).

    `executor` runs the candidates (default: serial, in this process); `recipe.search.parallel` (K) says how
    many are in flight.
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
    executor = executor or SerialExecutor()
    if algorithm.serial_only and (recipe.search.parallel > 1 or executor.name != "serial"):
        raise UsageError(f"option --parallel/--executor: --algo {algorithm.name} runs serially: {algorithm.serial_only}",
                         hint="drop --parallel and --executor")
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
        result = _search(recipe, run_dir, encoder_source, progress, executor)
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
    logged_proposals(sdir / PROPOSALS_FILE, read_jsonl(sdir / "records.jsonl"))
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
    if diff and diff[0] == "search.parallel":
        raise UsageError(f"{config_path.parent} holds a search run with --parallel {diff[1]}; this command asks for "
                         f"--parallel {diff[2]}, which would propose other candidates from the records so far",
                         hint=f"re-run with --parallel {diff[1]} (any --executor and --workers) to resume")
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
    proposals_path = sdir / PROPOSALS_FILE
    logged = logged_proposals(proposals_path, records)
    seen = {r["encoding"] for r in records} | {p["encoding"] for p in logged.values()}
    infeasible: dict[str, tuple[str, float]] = {}  # this session's rejected proposals: not measured twice
    pending: dict[int, tuple] = {}  # index -> (proposal, cost, a Pending, or the recovered record)
    recovered = 0
    executor_started = False
    _write_tables(sdir, records, recipe.search.objectives)
    try:
        while True:
            while len(pending) < recipe.search.parallel:
                index = len(records) + len(pending)
                if index in logged:  # proposed before a crash, never recorded: run it as logged, not asked again
                    proposal, cost = _logged(logged[index])
                else:
                    proposal, cost = _propose(strategy, space, evaluator, recipe, index, seen, stats, infeasible)
                    if proposal is None:
                        break
                    seen.add(proposal.encoding)
                    append_jsonl(proposals_path, {"index": index, "encoding": proposal.encoding, "phase": proposal.phase,
                                                  "parent": proposal.parent, "info": proposal.info, "cost": cost})
                progress({"event": "candidate", "index": index, "total": total, "encoding": proposal.encoding,
                          "phase": proposal.phase})
                prior = _recover(_cand_dir(sdir, index), proposal.encoding)
                if prior is not None:
                    recovered += 1
                    pending[index] = (proposal, cost, prior)
                    continue
                if not executor_started:  # the first candidate to train: workers get the evaluator (and cache) now
                    executor.start(evaluator, sdir)
                    executor_started = True
                task = CandidateTask(index, proposal.encoding, recipe.seed, evaluator.observed_state())
                pending[index] = (proposal, cost, executor.submit(task))
                fault_point("search_submitted")
            if not pending:
                break
            index = min(pending)  # tell in index order: the same order whatever finishes first
            proposal, cost, job = pending.pop(index)
            record = job if isinstance(job, dict) else _finish(job.result(), evaluator, recipe, proposal, cost, sdir)
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
        executor.close()  # a local cluster or pool this search started goes with it
        evaluator.close()  # a feature cache spilled to disk goes now, not at exit
    result_csv, front_csv = sdir / "result.csv", sdir / "pareto_front.csv"
    front = pareto_front(_table(records), recipe.search.objectives) if records else _table([])
    return SearchResult(run_dir.path, records, front, list(recipe.search.objectives), result_csv, front_csv,
                        resumed_from, recovered, stats, time.perf_counter() - started)


def _propose(strategy, space, evaluator: CandidateEvaluator, recipe: Recipe, index: int,
             seen: set[str], stats: dict, infeasible: dict | None = None):
    """The next new, feasible proposal (or None when the budget is spent or the space has no feasible
    network left to propose); bounded retries.

    A space that can enumerate itself (EfficientDet's: tens of networks) is swept in order when the
    strategy's retries find nothing new and feasible, so a tight budget that leaves a few networks
    still gets them evaluated, and the search ends ("exhausted") when none is left.
    """
    s = recipe.search
    infeasible = {} if infeasible is None else infeasible
    order = space.enumerate() if hasattr(space, "enumerate") else None  # the sweep's order, smallest phi first
    if order is not None and seen and seen | set(infeasible) >= set(order):
        stats["exhausted"] = True
        return None, None
    rng = random.Random(derive_seed(recipe.seed, index))
    smallest: dict[str, float] = {}

    def feasible(code: str):
        if code not in infeasible:
            cost = evaluator.cost(code)
            violated = _violation(cost, s)
            if violated is None:
                return cost
            infeasible[code] = violated
        stats["rejected"] += 1
        key, value = infeasible[code]
        smallest[key] = min(smallest.get(key, math.inf), value)
        return None

    for _ in range(s.max_retries):
        proposal = strategy.ask(index, rng)
        if proposal is None:
            return None, None
        proposal.encoding = space.canonical(proposal.encoding)
        if proposal.encoding in seen:
            stats["duplicates"] += 1
            continue
        cost = feasible(proposal.encoding)
        if cost is not None:
            return proposal, cost
    if order is not None:
        for code in order:
            if code not in seen and code not in infeasible:
                cost = feasible(code)
                if cost is not None:
                    return Proposal(code, "sweep"), cost
        if seen:  # something was evaluated: the search ends with it; with nothing, the error below
            stats["exhausted"] = True
            return None, None
    detail = ", ".join(f"smallest {k} seen {v:.4g}" for k, v in smallest.items())
    raise ConfigError(f"no new candidate satisfying the constraints after {s.max_retries} tries for candidate {index}"
                      + (f" ({detail})" if detail else " (every proposal was a duplicate)"),
                      hint="relax --max-macs/--max-params/--max-latency-ms, or enlarge the space (op_names)")


def _violation(cost: dict, s) -> tuple[str, float] | None:
    for key, limit in (("flops", s.max_macs), ("parameters", s.max_params), ("latency_ms", s.max_latency_ms)):
        if limit is not None and cost.get(key) is not None and cost[key] > limit:
            return key, cost[key]
    return None


PROPOSALS_FILE = "proposals.jsonl"


def _cand_dir(sdir: Path, index: int) -> Path:
    return sdir / "candidates" / f"{index:04d}"


def logged_proposals(path: Path, records: list[dict]) -> dict[int, dict]:
    """The proposal log by index, checked against the records (a search from before the log has none)."""
    logged: dict[int, dict] = {}
    for line, entry in enumerate(read_jsonl(path), 1):
        if not isinstance(entry, dict) or not isinstance(entry.get("index"), int) or "encoding" not in entry:
            raise RunDirError(f"{path}:{line}: not a proposal nascli wrote",
                              hint="restore the file, or delete it: the proposals in flight are then asked again")
        logged[entry["index"]] = entry
    for r in records:
        entry = logged.get(r.get("index"))
        if entry is not None and entry["encoding"] != r.get("encoding"):
            raise RunDirError(f"{path}: proposal {r['index']} is {entry['encoding']} but records.jsonl holds "
                              f"{r.get('encoding')} for it",
                              hint="restore the file, or delete it: the proposals in flight are then asked again")
    return logged


def _logged(entry: dict) -> tuple[Proposal, dict]:
    return (Proposal(entry["encoding"], entry.get("phase", ""), entry.get("parent"), dict(entry.get("info") or {})),
            dict(entry.get("cost") or {}))


def _finish(out: TaskResult, evaluator, recipe: Recipe, proposal, cost: dict, sdir: Path) -> dict:
    """The driver's part of a candidate: its weights (bytes from a worker) and record.json, written here."""
    cand_dir = _cand_dir(sdir, out.index)
    weights = cand_dir / "weights.pth"
    if out.weights is not None:
        atomic_write(weights, lambda f: f.write(out.weights))
    fault_point("search_trained")
    record = {
        "index": out.index, "encoding": proposal.encoding, "space": evaluator.space.name, "task": recipe.task,
        "phase": proposal.phase, "parent": proposal.parent or "", **cost, **out.result, "epochs": evaluator.cfg.epochs,
        "mode": getattr(evaluator, "mode", recipe.candidate.mode), "seconds": out.seconds,
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
        # images only (a detection target does not stack); consecutive same-shape images batched as before
        images = ((train_ds[i][0], torch.zeros(0)) for i in range(min(len(train_ds), 256)))
        recalibrate_bn(encoder, (x for x, _ in group_by_shape(images, batch_size)))
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
