"""Issue 18's goal: a proxyless search on CamVid under LR-ASPP-MobileNetV3's ONNX Runtime latency, then the
derived model and LR-ASPP-MobileNetV3 trained from random weights with the same recipe and epochs (the Q3
rules), two seeds each, and both re-timed side by side.

1. the budget: LR-ASPP-MobileNetV3's ORT median at 360x480 (median of 3 `nascli profile` runs), timed here;
2. `nascli search --algo proxyless` with recipes/camvid_proxyless.yml and that budget (it builds and
   calibrates its latency table in the same sitting);
3. the derived architecture (proposal 0: the most probable under the budget) and LR-ASPP-MobileNetV3
   trained with `nascli train --recipe recipes/camvid_proxyless.yml` (65 epochs), seeds 0 and 1;
4. both architectures re-timed round-robin with `nascli profile` (latency does not depend on the weights,
   so this needs no run directory).

Resumable across sessions at the grain of a finished step: every finished step is written to
bench/results/proxyless_camvid.json at once (commit it), and a rerun skips what is there; an unfinished
search or training resumes from its run directory (`runs/proxyless_camvid/`) where one survives.

    python bench/proxyless_camvid.py            # about 1.7 h on a 2-core Xeon, 5+ h on the older AMD host
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "proxyless_camvid"
RECIPE = common.ROOT / "recipes" / "camvid_proxyless.yml"
REFERENCE = "lraspp_mobilenet_v3_large"
CLASSES = 11
SIZE = "360x480"
REPEATS = 3


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_state() -> dict:
    path = common.RESULTS / f"{NAME}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_state(state: dict) -> None:
    common.save_json(NAME, state)


def profile(kind: list[str], threads: int) -> dict:
    out = common.nascli("profile", "-r", common.ROOT / "runs" / NAME / "profile", *kind, "--recipe", RECIPE,
                        "--num-classes", CLASSES, "--input-size", SIZE, "--threads", threads, "--min-seconds", 5,
                        "--json", "--quiet")
    return json.loads(out.stdout)


def budget(threads: int) -> dict:
    log(f"timing {REFERENCE} for the budget")
    runs = [profile(["--model", REFERENCE], threads)["onnxruntime"]["median_ms"] for _ in range(REPEATS)]
    return {"lraspp_ort_ms": float(np.median(runs)), "runs_ms": runs}


def search(run: Path, budget_ms: float, seed: int) -> dict:
    log(f"proxyless search under {budget_ms:.2f} ms -> {run}")
    started = time.perf_counter()
    common.nascli("search", "-r", run, "--recipe", RECIPE, "--max-latency-ms", f"{budget_ms:.3f}", "--seed", seed,
                  "--quiet")
    df = pd.read_csv(run / "search" / "result.csv", dtype={"encoding": str})
    derived = df[df["phase"] == "derived"].iloc[0].to_dict()
    keep = [c for c in ("encoding", "phase", "status", "mIOU", "latency_ms", "latency_measured_ms", "degenerate")
            if c in df]
    return {"derived": derived["encoding"], "rows": df[keep].to_dict(orient="records"),
            "hours_this_session": (time.perf_counter() - started) / 3600}


def train(run: Path, kind: list[str], seed: int, epochs: int) -> dict:
    status = run / "status" / "train.json"
    started = time.perf_counter()
    if not (status.exists() and json.loads(status.read_text()).get("state") == "done"):
        log(f"train {' '.join(kind)} seed {seed} -> {run}")
        folder = common.trained_dir(run)
        if folder is not None and (folder / "last.pth").exists():  # a stopped training: its run holds the settings
            common.nascli("train", "-r", run, "--resume", "--quiet")
        else:
            common.nascli("train", "-r", run, "--recipe", RECIPE, *kind, "--epochs", epochs, "--seed", seed,
                          "--quiet")
    metrics = pd.read_csv(common.trained_dir(run) / "metrics.csv")
    best = metrics.loc[metrics["val_miou"].idxmax()]
    return {"trained mIoU": float(best["val_miou"]), "best epoch": int(best["epoch"]),
            "final mIoU": float(metrics["val_miou"].iloc[-1]), "epochs": int(metrics["epoch"].max()),
            "hours": (time.perf_counter() - started) / 3600}


def retime(models: dict[str, list[str]], threads: int) -> dict:
    """Each model's median over REPEATS profiles taken in turn, so the host's drift falls on all alike."""
    log("re-timing side by side")
    got: dict[str, list[dict]] = {m: [] for m in models}
    for _ in range(REPEATS):
        for m, kind in models.items():
            got[m].append(profile(kind, threads))
    return {m: {"params (M)": o[0]["params"] / 1e6, "GMACs @360x480": o[0]["macs"] / 1e9,
                "eager ms": float(np.median([x["eager"]["median_ms"] for x in o])),
                "ORT ms": float(np.median([x["onnxruntime"]["median_ms"] for x in o]))} for m, o in got.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--search-seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=65)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    runs = common.ROOT / "runs" / NAME
    state = load_state()
    state.setdefault("settings", {k: v for k, v in vars(args).items()})
    state.setdefault("sittings", []).append(common.header(NAME))
    if "budget" not in state:
        state["budget"] = budget(args.threads)
        save_state(state)
    if "search" not in state:
        state["search"] = search(runs / "search", state["budget"]["lraspp_ort_ms"], args.search_seed)
        save_state(state)
    derived = state["search"]["derived"]
    models = {"searched": ["--encoding", derived], REFERENCE: ["--model", REFERENCE]}
    trained = state.setdefault("trained", {})
    for seed in args.seeds:
        for label, kind in models.items():
            key = f"{label} seed {seed}"
            if key not in trained:
                trained[key] = {"model": label, "seed": seed,
                                **train(runs / f"{label}-s{seed}", kind, seed, args.epochs)}
                save_state(state)
    state["retimed"] = retime(models, args.threads)
    save_state(state)
    write_markdown(state, derived)


def write_markdown(state: dict, derived: str) -> None:
    b, s, rows = state["budget"], state["search"], list(state["trained"].values())
    derived_row = next(r for r in s["rows"] if r["phase"] == "derived")
    first, last = state["sittings"][0], state["sittings"][-1]
    means = {m: float(np.mean([r["trained mIoU"] for r in rows if r["model"] == m])) for m in state["retimed"]}
    table = [{"model": m if m != "searched" else f"searched {derived}", "mean best val mIoU": means[m],
              "seeds": ", ".join(f"{r['trained mIoU']:.4f}" for r in rows if r["model"] == m),
              **state["retimed"][m]} for m in state["retimed"]]
    ref, ours = state["retimed"][REFERENCE], state["retimed"]["searched"]
    met = means["searched"] > means[REFERENCE] and ours["ORT ms"] <= ref["ORT ms"]
    md = ["### Proxyless on CamVid against LR-ASPP-MobileNetV3 (issue 18)", "",
          f"`{last['command']}` — first sitting {first['date']}, last {last['date']} ({len(state['sittings'])} "
          f"sittings; finished steps are kept in bench/results/{NAME}.json and not re-run).  ",
          f"Machine: {common.machine_line(last['machine'])}", "",
          f"Budget: {REFERENCE}'s ORT median at {SIZE}, 2 threads, timed in the search's sitting: "
          f"**{b['lraspp_ort_ms']:.2f} ms** (runs {', '.join(f'{x:.2f}' for x in b['runs_ms'])}). "
          f"Search: `nascli search --recipe {RECIPE.relative_to(common.ROOT)} --max-latency-ms` that, seed "
          f"{state['settings']['search_seed']}. Derived (most probable under the budget): `{derived}`, "
          f"supernet mIoU {derived_row.get('mIOU', float('nan')):.4f}, table {derived_row.get('latency_ms', float('nan')):.2f} ms, "
          f"measured in the search {derived_row.get('latency_measured_ms', float('nan')):.2f} ms.", "",
          f"Trained from random weights, {state['settings']['epochs']} epochs, the same recipe, seeds "
          f"{', '.join(map(str, state['settings']['seeds']))} (best val mIoU of each run; latency re-timed side by side, "
          f"median of {REPEATS} `nascli profile` runs taken in turn):", "",
          common.table(table, list(table[0])), "",
          f"Goal (searched mean above {REFERENCE}'s at equal or lower ORT latency): "
          + ("**met**." if met else "**not met**.")]
    common.write_section(NAME, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
