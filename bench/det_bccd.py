"""Issue 19's benchmark: detectors on BCCD from random weights, and the efficientdet search's front beside them.

With `recipes/bccd.yml` (one training recipe for every model):

    nascli data check                              (BCCD's train and val lists)
    train --model M, eval, profile                 for M in the zoo baselines and the FPN / BiFPN detectors
    search --algo efficientdet                     (recipes/bccd_efficientdet.yml: the same data and training)
    train --pick N, eval, profile                  the front's best-mAP members, trained like the baselines

Latency is ONNX Runtime's at each model's own training input size, `--threads` threads, re-timed side by side at the
end on the architectures with random weights (so rows kept from an earlier session are timed in this one); training images
per second are the training list's images over an epoch's wall time (validation included, so a lower
bound). Every step is skipped when its result is on disk, trainings resume (`train --resume`) and the
search resumes itself, so a stopped run continues with the same command. A finished model's row and the
finished search's tables are also kept in bench/results/det_bccd_partial.json (commit it): run
directories do not outlive a session on a fresh checkout, so a later session starts from those. Writes
bench/results/det_bccd.json, bench/results/det_bccd_front.png and the `det_bccd` section of BENCHMARKS.md.

    python bench/det_bccd.py [--out runs/det_bccd] [--threads 2] [--front 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, header, machine_line, nascli, save_json, shown, table, write_section  # noqa: E402

RECIPE = ROOT / "recipes" / "bccd.yml"
SEARCH_RECIPE = ROOT / "recipes" / "bccd_efficientdet.yml"
BASELINES = ["ssdlite320_mobilenet_v3_large", "mobilenetv2_fpn", "mobilenetv2_bifpn"]
GOAL_BASELINE = "ssdlite320_mobilenet_v3_large"


def step(name: str, done: Path, *args, log: list) -> None:
    """Run one nascli command unless `done` exists; record its wall time."""
    if done.exists():
        log.append(json.loads(done.read_text()))
        return
    t0 = time.perf_counter()
    r = nascli(*args, check=False)
    if r.returncode != 0:
        raise SystemExit(f"{name} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    log.append({"step": name, "seconds": round(time.perf_counter() - t0, 1)})
    print(f"{name}: {log[-1]['seconds']} s", flush=True)
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(log[-1]) + "\n")


def trained(run: Path, label: str, threads: list[str], marks: Path, log: list, *train_args) -> dict:
    """Train (resuming a stopped training), eval and profile one model; its benchmark row."""
    tag = label.replace("/", "-")
    resume = ["--resume"] if (run / "train" / label / "last.pth").is_file() else []
    step(f"train {label}", marks / f"train-{tag}", "train", "-r", run, *train_args, *resume, *threads, log=log)
    step(f"eval {label}", marks / f"eval-{tag}", "eval", "-r", run, "--checkpoint",
         run / "train" / label / "best.pth", *threads, log=log)
    metrics = json.loads((run / "eval" / f"train-{label}-best-val" / "metrics.json").read_text())
    load = round(os.getloadavg()[0], 2)  # the 1-minute load when timed: latencies taken at a high one read slow
    prof = json.loads(nascli("profile", "-r", run, "--checkpoint", run / "train" / label / "best.pth", "--json",
                             *threads).stdout)
    hist = pd.read_csv(run / "train" / label / "metrics.csv")
    n_train = len([ln for ln in (ROOT.parent / "shared/data/bccd/train.txt").read_text().splitlines() if ln.strip()])
    row = {"model": label, "val mAP": metrics["map"], "AP50": metrics["map_50"], "AP75": metrics["map_75"],
           **{f"AP {c['name']}": c["ap"] for c in metrics["classes"]},
           "input": "x".join(map(str, prof["input_size"])), "ORT ms": prof["onnxruntime"]["median_ms"],
           "GMACs": prof["gmacs"], "M params": round(prof["params"] / 1e6, 3), "epochs": len(hist),
           "train img/s": round(n_train / hist["seconds"].median(), 2), "load when timed": load}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "det_bccd")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--front", type=int, default=2, help="front members (best mAP first) trained like the baselines")
    ap.add_argument("--recipe", type=Path, default=RECIPE, help="the one training recipe (default recipes/bccd.yml)")
    ap.add_argument("--search-recipe", type=Path, default=SEARCH_RECIPE,
                    help="the search's recipe (default recipes/bccd_efficientdet.yml)")
    ap.add_argument("--name", default="det_bccd",
                    help="results bench/results/NAME*.json/png and BENCHMARKS.md section NAME (a smoke run: another name)")
    ap.add_argument("--baselines-from", metavar="NAME",
                    help="take the baselines' rows from bench/results/NAME_partial.json (trained there with the same "
                         "--recipe) instead of training them again: for a second search beside the same baselines")
    args = ap.parse_args()
    partial_file = RESULTS / f"{args.name}_partial.json"
    partial = _load_partial(partial_file)
    if args.baselines_from:
        other = _load_partial(RESULTS / f"{args.baselines_from}_partial.json")
        for model in BASELINES:
            if model not in partial["rows"] and model in other["rows"]:
                partial["rows"][model] = {**other["rows"][model], "from": args.baselines_from}
        _save_partial(partial_file, partial)
    out = args.out.resolve()
    marks, t, log = out / "done", ["--threads", str(args.threads)], []
    check = nascli("data", "check", "--data-root", ROOT.parent / "shared/data/bccd", "--list",
                   ROOT.parent / "shared/data/bccd/train.txt", "--list", ROOT.parent / "shared/data/bccd/val.txt",
                   check=False)
    rows = []
    for model in BASELINES:
        rows.append(_kept(partial, partial_file, model, lambda m=model: trained(out / m, m, t, marks, log, "--recipe", args.recipe,
                                                                  "--model", m)))
    run = out / "search"
    if "search" not in partial:
        step("search", marks / "search", "search", "-r", run, "--recipe", args.search_recipe, *t, log=log)
        partial["search"] = {name: pd.read_csv(run / "search" / f"{name}.csv", dtype={"encoding": str})
                             .to_dict(orient="records") for name in ("result", "pareto_front")}
        _save_partial(partial_file, partial)
    result = pd.DataFrame(partial["search"]["result"])
    front = pd.DataFrame(partial["search"]["pareto_front"])
    front = front.sort_values("mAP", ascending=False).reset_index(drop=True)
    for _, member in front.head(args.front).iterrows():
        label = f"efficientdet-{member['encoding']}"
        row = _kept(partial, partial_file, label, lambda lb=label, e=member["encoding"]: trained(
            run, lb, t, marks, log, "--recipe", args.recipe, "--encoding", e))
        rows.append({**row, "model": f"searched {member['encoding']}"})
    _retime(rows, out, args.recipe, args.search_recipe, t)
    _plot(result, front, rows, out, args.name)
    base = next(r for r in rows if r["model"] == GOAL_BASELINE)
    wins = [r for r in rows if r["model"].startswith("searched") and r["val mAP"] > base["val mAP"]
            and r["ORT ms"] <= base["ORT ms"]]
    doc = {**header(args.name), "data_check": check.stdout[-2000:], "steps": log, "models": rows,
           "search": {"candidates": len(result), "front": len(front)}}
    save_json(args.name, doc)
    cols = ["model", "val mAP", "AP50", "AP75"] + [c for c in rows[0] if c.startswith("AP ")] + [
        "input", "ORT ms", "ORT ms (after training)", "load when timed", "GMACs", "M params", "epochs", "train img/s"]
    md = f"""## Detection on BCCD (issue 19): baselines from random weights and the efficientdet search

`{doc['command']}` ({doc['date']}; {machine_line(doc['machine'])}; {args.threads} threads).
Every model trained from random weights with `{shown(args.recipe)}`; the search with
`{shown(args.search_recipe)}` ({len(result)} candidates, front {len(front)}), then its best-mAP front
members trained like the baselines.{f" The baselines were trained for `{args.baselines_from}` (same recipe) and re-timed here." if args.baselines_from else ""} ORT ms: ONNX Runtime median at each model's training input size,
re-timed side by side at the end (median of 3 `nascli profile` runs per model, taken in turn, on the
architecture with random weights); "after training" is the figure taken right after each training.

{table(rows, cols)}

Front and baselines: `bench/results/{args.name}_front.png`. Goal (a searched model above
`{GOAL_BASELINE}`'s val mAP at equal or lower ORT latency): **{'met' if wins else 'not met'}**.
"""
    write_section(args.name, md)
    print(md)


def _retime(rows: list[dict], out: Path, recipe: Path, search_recipe: Path, threads: list[str], rounds: int = 3) -> None:
    """Time every model's ONNX Runtime latency again, in turn, so the goal's comparison sees one machine state.

    The architectures are rebuilt with random weights (latency does not depend on them), so this works
    when the trained run directories are gone (a later session, another host: rows kept in the partial
    file were timed there). Each row keeps its after-training figure as `ORT ms (after training)`.
    """
    times: list[list[float]] = [[] for _ in rows]
    for _ in range(rounds):
        for i, row in enumerate(rows):
            searched = row["model"].startswith("searched ")  # its encoding means what the search recipe's space says
            arch = ["--encoding", row["model"].split(" ", 1)[1]] if searched else ["--model", row["model"]]
            classes = sum(k.startswith("AP ") for k in row)  # one per-class AP column per class
            prof = json.loads(nascli("profile", "-r", out / ("retime-searched" if searched else "retime"),
                                     "--recipe", search_recipe if searched else recipe, *arch, "--num-classes",
                                     classes, "--input-size", row["input"], "--json", *threads).stdout)
            times[i].append(prof["onnxruntime"]["median_ms"])
    for row, ms in zip(rows, times):
        row.setdefault("ORT ms (after training)", row["ORT ms"])
        row["ORT ms"] = round(sorted(ms)[len(ms) // 2], 3)


def _load_partial(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"rows": {}}


def _save_partial(path: Path, partial: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(partial, indent=2, default=str) + "\n")


def _kept(partial: dict, path: Path, key: str, compute) -> dict:
    """A model's row from an earlier session, else computed now and kept at once."""
    if key not in partial["rows"]:
        partial["rows"][key] = compute()
        _save_partial(path, partial)
    return dict(partial["rows"][key])


def _plot(result: pd.DataFrame, front: pd.DataFrame, rows: list[dict], out: Path, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    x = "latency_ms" if "latency_ms" in result and result["latency_ms"].notna().any() else "flops"
    ax.scatter(result[x], result["mAP"], s=14, c="0.7", label="search candidates (proxy training)")
    ax.plot(front.sort_values(x)[x], front.sort_values(x)["mAP"], "o-", c="C0", ms=4, label="search front (proxy)")
    for r in rows:
        ax.scatter(r["ORT ms"] if x == "latency_ms" else r["GMACs"] * 1e9, r["val mAP"], marker="*", s=90,
                   label=f"{r['model']} (trained)")
    ax.set_xlabel("ONNX Runtime latency (ms)" if x == "latency_ms" else "MACs")
    ax.set_ylabel("val mAP@[.5:.95]")
    ax.set_title("BCCD: efficientdet search front and baselines")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}_front.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
