"""`nascli search`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from nascli.cli import console, options
from nascli.config import parse_size
from nascli.errors import UsageError
from nascli.rundir import RunDir
from nascli.tasks import get_task

log = logging.getLogger("nascli")

FLAGS = {
    "candidate.loss": "--loss", "candidate.class_weights": "--class-weights", "candidate.min_steps": "--min-steps",
    "search.algo": "--algo", "search.random_samples": "--random-samples", "search.mutate_samples": "--mutate-samples",
    "search.samples": "--samples", "candidate.epochs": "--epochs", "candidate.batch_size": "--batch-size",
    "data.input_size": "--input-size", "seed": "--seed", "search.objectives": "--objectives",
    "search.max_macs": "--max-macs", "search.max_params": "--max-params", "search.max_latency_ms": "--max-latency-ms",
    "candidate.mode": "--candidate-training", "device": "--device", "data.num_classes": "--num-classes",
    "data.data_root": "--data-root", "task": "--task", "data.train_list": "--train-list", "data.val_list": "--val-list",
    "threads": "--threads", "search.measure_latency": "--measure-latency", "fast_nas.teacher": "--teacher",
    "search.latency_runtime": "--latency-runtime", "search.latency_size": "--latency-size",
    "search.parallel": "--parallel",
}


def search(
    algo: Annotated[Optional[str], typer.Option("--algo", help="adelaide-ea (default), random, fast-nas or proxyless (a latency-constrained backbone search).")] = None,
    run_dir: options.RunDir = Path("runs/default"),
    recipe: options.Recipe = None,
    data_root: options.DataRoot = None,
    task: options.Task = None,
    train_list: options.TrainList = None,
    val_list: options.ValList = None,
    num_classes: options.NumClasses = None,
    random_samples: Annotated[Optional[int], typer.Option("--random-samples", help="adelaide-ea/random: candidates sampled uniformly.")] = None,
    mutate_samples: Annotated[Optional[int], typer.Option("--mutate-samples", help="adelaide-ea: children mutated from the Pareto front.")] = None,
    samples: Annotated[Optional[int], typer.Option("--samples", help="fast-nas: candidates the controller samples.")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Training epochs per candidate.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Batch size of candidate training.")] = None,
    input_size: options.InputSize = None,
    objectives: Annotated[Optional[str], typer.Option("--objectives", help="Comma-separated: miou plus macs, params or latency.")] = None,
    max_macs: Annotated[Optional[int], typer.Option("--max-macs", help="Reject candidates over this many MACs before training.")] = None,
    max_params: Annotated[Optional[int], typer.Option("--max-params", help="Reject candidates over this many parameters.")] = None,
    max_latency_ms: Annotated[Optional[float], typer.Option("--max-latency-ms", help="Reject candidates slower than this (measured on --device by --latency-runtime).")] = None,
    measure_latency: Annotated[Optional[bool], typer.Option("--measure-latency/--no-measure-latency", help="Record each candidate's latency.")] = None,
    latency_runtime: Annotated[Optional[str], typer.Option("--latency-runtime", help="What measures latency: torch (eager, default), onnxruntime (the exported model, as deployed) or onnxruntime-int8 (the export --int8 model).")] = None,
    latency_size: Annotated[Optional[str], typer.Option("--latency-size", help="HxW latency is measured at (default: --input-size), e.g. 360x480.")] = None,
    candidate_training: Annotated[Optional[str], typer.Option("--candidate-training", help="cached (frozen encoder, features computed once) or full.")] = None,
    encoder: Annotated[Optional[Path], typer.Option("--encoder", help="Encoder weights (default: the run's pretrain/encoder.pth if any).")] = None,
    teacher: Annotated[Optional[Path], typer.Option("--teacher", help="fast-nas: checkpoint of a trained model to distil from (MSE on logits).")] = None,
    loss: options.Loss = None,
    class_weights: options.ClassWeights = None,
    min_steps: options.MinSteps = None,
    parallel: Annotated[Optional[int], typer.Option("--parallel", help="K, candidates in flight (default 1); the results depend on seed and K only, a resume keeps K.")] = None,
    executor: Annotated[str, typer.Option("--executor", help="Where candidates run: serial (this process, default), process (a local pool) or ray (a Ray cluster; pip install nascli[ray]).")] = "serial",
    address: Annotated[Optional[str], typer.Option("--address", help="ray: the cluster's head, host:port or auto (default: start a local cluster for this command).")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="process/ray-local: worker processes (default: K); each runs --threads torch threads.")] = None,
    gpus_per_task: Annotated[float, typer.Option("--gpus-per-task", help="ray: GPUs each candidate task reserves (default 0).")] = 0.0,
    allow_runtime_change: Annotated[bool, typer.Option("--allow-runtime-change", help="Resume on other --threads or --device than the search's records were made with (then not exactly what an uninterrupted search gives).")] = False,
    seed: options.Seed = None,
    device: options.Device = None,
    threads: options.Threads = None,
    json_out: options.Json = False,
    quiet: options.Quiet = False,
) -> None:
    """Search architectures (decoders; a backbone with --algo proxyless); re-running the same command resumes.

    Writes RUN/search/result.csv (every candidate), pareto_front.csv and each candidate's weights.

    Example:

    \b
      nascli data demo data/demo
      nascli search --algo adelaide-ea -r runs/demo --data-root data/demo \\
          --train-list data/demo/train.txt --val-list data/demo/val.txt \\
          --random-samples 4 --mutate-samples 4 --epochs 1

    Two candidates at once on a Ray cluster (the same records as --executor serial with --parallel 2):

    \b
      nascli search -r runs/demo --parallel 2 --executor ray --address HEAD:6379
    """
    from nascli.steps import common
    from nascli.steps import search as step

    console.set_quiet(quiet)
    values = {
        "candidate.loss": loss, "candidate.class_weights": options.class_weights(class_weights),
        "candidate.min_steps": min_steps,
        "search.algo": algo, "search.random_samples": random_samples, "search.mutate_samples": mutate_samples,
        "search.samples": samples, "candidate.epochs": epochs, "candidate.batch_size": batch_size,
        "data.input_size": parse_size(input_size) if input_size else None, "seed": seed,
        "search.objectives": [o.strip() for o in objectives.split(",") if o.strip()] if objectives else None,
        "search.max_macs": max_macs, "search.max_params": max_params, "search.max_latency_ms": max_latency_ms,
        "search.measure_latency": measure_latency, "search.latency_runtime": latency_runtime,
        "search.latency_size": parse_size(latency_size, "--latency-size") if latency_size else None,
        "candidate.mode": candidate_training, "device": device,
        "threads": threads, "data.num_classes": num_classes, "data.data_root": data_root,
        "task": task, "data.train_list": train_list, "data.val_list": val_list, "fast_nas.teacher": teacher.resolve() if teacher else None,
        "search.parallel": parallel,
    }
    run = RunDir(run_dir)
    cfg = common.load_recipe(run, recipe, values, FLAGS)
    if teacher is not None and cfg.search.algo != "fast-nas":
        raise UsageError(f"option --teacher: only --algo fast-nas distils from a teacher (this search is {cfg.search.algo})",
                         hint="drop --teacher, or use --algo fast-nas")
    if teacher is not None and not teacher.is_file():
        raise UsageError(f"option --teacher: {teacher} not found", hint="give a checkpoint written by `nascli train`")
    from nascli.executors import make_executor

    runner = make_executor(executor, parallel=cfg.search.parallel, workers=workers, address=address,
                           gpus_per_task=gpus_per_task)
    with SearchProgress(enabled=not quiet) as progress:
        result = step.run(cfg, run, encoder_weights=encoder, progress=progress, executor=runner,
                          allow_runtime_change=allow_runtime_change)
    _report(result, cfg, json_out)


def _report(result, cfg, json_out: bool) -> None:
    from nascli.pareto.front import flagged
    from nascli.steps.search import objective_columns

    front = result.front
    task = get_task(cfg.task)
    cols = ["encoding", task.column, "flops", "parameters", "input_size"] + [
        c for c in objective_columns(result.objectives) if c not in (task.column, "flops", "parameters")]
    if "degenerate" in front.columns:
        front = front.assign(degenerate=flagged(front["degenerate"]).map({True: "yes", False: ""}))
        cols.append("degenerate")
    ok = [r for r in result.records if r.get("status") == "ok"]
    flagged = [r for r in ok if r.get("degenerate")]
    if json_out:
        console.print_json({
            "run_dir": str(result.run_dir), "candidates": len(result.records), "objectives": result.objectives,
            "result_csv": str(result.result_csv), "pareto_front_csv": str(result.front_csv),
            "front": front[cols].to_dict(orient="records") if len(front) else [],
            "resumed_from": result.resumed_from, "recovered": result.recovered, "degenerate": len(flagged),
            **result.stats,
        })
    else:
        if len(front):
            console.print_table(front[cols].to_dict(orient="records"), cols,
                                title=f"Pareto front ({' vs '.join(result.objectives)}), {len(front)} of {len(result.records)} candidates")
        failed = sum(r.get("status") != "ok" for r in result.records)
        extra = f"; {failed} failed" if failed else ""
        extra += f"; {result.stats['rejected']} proposals rejected by constraints" if result.stats.get("rejected") else ""
        extra += f"; {len(flagged)} degenerate (skipped by train's default pick)" if flagged else ""
        extra += "; the space is exhausted (every network in it that meets the constraints was evaluated)" if result.stats.get("exhausted") else ""
        console.say(f"{len(result.records)} candidates in {result.result_csv}{extra} "
                    f"({result.seconds:.0f} s this session)")
    if ok and len(flagged) == len(ok):
        console.warn(f"every candidate is degenerate (e.g. {flagged[0].get('degenerate_reason')}): their mIoUs rank "
                     "noise. Hint: give candidates more optimiser steps (candidate.min_steps, a smaller --batch-size), "
                     "an imbalance-aware loss (--loss ce+dice, --class-weights median_frequency), or pretrain the "
                     "encoder first (`nascli pretrain-backbone`)")
    console.next_step(f"nascli pareto -r {result.run_dir}   then   nascli train -r {result.run_dir}")


class SearchProgress(console.LiveBar):
    """Progress on stderr: a live bar on a terminal, one log line per candidate otherwise."""

    def __call__(self, event: dict) -> None:
        if not self.enabled:
            return
        kind = event["event"]
        if kind == "cache":
            self.show("encoding features", event["done"], event["total"], "")
        elif kind == "supernet":
            phase = "warm-up" if event["warmup"] else "search"
            self.show(f"supernet epoch {event['epoch'] + 1}/{event['epochs']} ({phase})", event["step"], event["steps"],
                      f"loss {event['loss']:.3f}")
        elif kind == "candidate":
            self.show("search", event["index"], event["total"], f"{event['phase']} {event['encoding']}")
        elif kind == "record":
            r = event["record"]
            task = get_task(r.get("task"))
            best = event.get("best_miou")
            info = f"best {task.label} {best:.4f}" if best is not None else ""
            self.show("search", event["done"], event["total"], info)
            if not self.live:
                value = r.get(task.column)
                value_s = f"{value:.4f}" if isinstance(value, (int, float)) else "-"
                flag = f" DEGENERATE ({r['degenerate_reason']})" if r.get("degenerate") else ""
                log.info("candidate %d/%d %s %s: %s %s %s%s, %.3f GMACs, %.2f M params, %.1f s; %s",
                         event["done"], event["total"], r["phase"], r["encoding"], r["status"], task.label, value_s,
                         flag,
                         r.get("flops", 0) / 1e9, r.get("parameters", 0) / 1e6, r.get("seconds", 0), info)
