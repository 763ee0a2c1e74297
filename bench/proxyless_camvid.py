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
    python bench/proxyless_camvid.py --recipe recipes/camvid_proxyless_wide.yml --name proxyless_camvid_wide \
        --reference-from proxyless_camvid       # the wide space; LR-ASPP's trainings taken from the first run

--reference-from NAME takes LR-ASPP-MobileNetV3's finished trainings from bench/results/NAME.json instead of
training it again, only when that run's recipe trained it with the same data, candidate, train and threads
settings as this one (the search space is all that differs); the budget and the re-timing are still measured
in this run's sittings.
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
SHARED_SECTIONS = ("data", "candidate", "train", "threads")  # what a reference training depends on
REFERENCE = "lraspp_mobilenet_v3_large"
CLASSES = 11
SIZE = "360x480"
REPEATS = 3


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_state(name: str) -> dict:
    path = common.RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def recipe_sections(recipe: Path) -> dict:
    import yaml

    doc = yaml.safe_load(recipe.read_text()) or {}
    return {k: doc.get(k) for k in SHARED_SECTIONS}


def borrowed_reference(name: str, recipe: Path) -> dict:
    """REFERENCE's finished trainings from bench/results/<name>.json, when its recipe trained them as `recipe` would."""
    other = load_state(name)
    theirs = common.ROOT / other.get("settings", {}).get("recipe", str(RECIPE.relative_to(common.ROOT)))
    if recipe_sections(theirs) != recipe_sections(recipe):
        sys.exit(f"--reference-from {name}: {theirs.name} and {recipe.name} differ in {', '.join(SHARED_SECTIONS)}; "
                 "train the reference here instead (drop --reference-from)")
    rows = {k: {**v, "trained in": name} for k, v in other.get("trained", {}).items() if v["model"] == REFERENCE}
    if not rows:
        sys.exit(f"--reference-from {name}: bench/results/{name}.json holds no finished {REFERENCE} training")
    return rows


def profile(kind: list[str], threads: int, recipe: Path, runs: Path) -> dict:
    out = common.nascli("profile", "-r", runs / "profile", *kind, "--recipe", recipe,
                        "--num-classes", CLASSES, "--input-size", SIZE, "--threads", threads, "--min-seconds", 5,
                        "--json", "--quiet")
    return json.loads(out.stdout)


def budget(threads: int, recipe: Path, runs: Path) -> dict:
    log(f"timing {REFERENCE} for the budget")
    ms = [profile(["--model", REFERENCE], threads, recipe, runs)["onnxruntime"]["median_ms"] for _ in range(REPEATS)]
    return {"lraspp_ort_ms": float(np.median(ms)), "runs_ms": ms}


def search(run: Path, budget_ms: float, seed: int, recipe: Path) -> dict:
    log(f"proxyless search under {budget_ms:.2f} ms -> {run}")
    started = time.perf_counter()
    common.nascli("search", "-r", run, "--recipe", recipe, "--max-latency-ms", f"{budget_ms:.3f}", "--seed", seed,
                  "--quiet")
    df = pd.read_csv(run / "search" / "result.csv", dtype={"encoding": str})
    derived = df[df["phase"] == "derived"].iloc[0].to_dict()
    keep = [c for c in ("encoding", "phase", "status", "mIOU", "latency_ms", "latency_measured_ms", "degenerate")
            if c in df]
    return {"derived": derived["encoding"], "rows": df[keep].to_dict(orient="records"),
            "hours_this_session": (time.perf_counter() - started) / 3600}


def train(run: Path, kind: list[str], seed: int, epochs: int, recipe: Path) -> dict:
    status = run / "status" / "train.json"
    started = time.perf_counter()
    if not (status.exists() and json.loads(status.read_text()).get("state") == "done"):
        log(f"train {' '.join(kind)} seed {seed} -> {run}")
        folder = common.trained_dir(run)
        if folder is not None and (folder / "last.pth").exists():  # a stopped training: its run holds the settings
            common.nascli("train", "-r", run, "--resume", "--quiet")
        else:
            common.nascli("train", "-r", run, "--recipe", recipe, *kind, "--epochs", epochs, "--seed", seed,
                          "--quiet")
    metrics = pd.read_csv(common.trained_dir(run) / "metrics.csv")
    best = metrics.loc[metrics["val_miou"].idxmax()]
    return {"trained mIoU": float(best["val_miou"]), "best epoch": int(best["epoch"]),
            "final mIoU": float(metrics["val_miou"].iloc[-1]), "epochs": int(metrics["epoch"].max()),
            "hours": (time.perf_counter() - started) / 3600}


def retime(models: dict[str, list[str]], threads: int, recipe: Path, runs: Path) -> dict:
    """Each model's median over REPEATS profiles taken in turn, so the host's drift falls on all alike."""
    log("re-timing side by side")
    got: dict[str, list[dict]] = {m: [] for m in models}
    for _ in range(REPEATS):
        for m, kind in models.items():
            got[m].append(profile(kind, threads, recipe, runs))
    return {m: {"params (M)": o[0]["params"] / 1e6, "GMACs @360x480": o[0]["macs"] / 1e9,
                "eager ms": float(np.median([x["eager"]["median_ms"] for x in o])),
                "ORT ms": float(np.median([x["onnxruntime"]["median_ms"] for x in o]))} for m, o in got.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--search-seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=65)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--recipe", type=Path, default=RECIPE)
    p.add_argument("--name", default=NAME, help="the results file, run folder and BENCHMARKS.md section")
    p.add_argument("--reference-from", metavar="NAME", help=f"take {REFERENCE}'s trainings from that run's results")
    args = p.parse_args()
    recipe, name = args.recipe.resolve(), args.name
    runs = common.ROOT / "runs" / name
    state = load_state(name)
    state.setdefault("settings", {**{k: v for k, v in vars(args).items() if k not in ("recipe",)},
                                  "recipe": str(recipe.relative_to(common.ROOT))})
    made_with = state["settings"].setdefault("recipe", str(RECIPE.relative_to(common.ROOT)))  # older files: the default
    if made_with != str(recipe.relative_to(common.ROOT)):
        sys.exit(f"bench/results/{name}.json was made with {made_with}: pass that --recipe, "
                 "or another --name")
    state.setdefault("sittings", []).append(common.header(name))

    def save() -> None:
        common.save_json(name, state)

    if "budget" not in state:
        state["budget"] = budget(args.threads, recipe, runs)
        save()
    if "search" not in state:
        state["search"] = search(runs / "search", state["budget"]["lraspp_ort_ms"], args.search_seed, recipe)
        save()
    derived = state["search"]["derived"]
    models = {"searched": ["--encoding", derived], REFERENCE: ["--model", REFERENCE]}
    trained = state.setdefault("trained", {})
    if args.reference_from:
        for key, row in borrowed_reference(args.reference_from, recipe).items():
            trained.setdefault(key, row)
    for seed in args.seeds:
        for label, kind in models.items():
            key = f"{label} seed {seed}"
            if key not in trained:
                trained[key] = {"model": label, "seed": seed,
                                **train(runs / f"{label}-s{seed}", kind, seed, args.epochs, recipe)}
                save()
    state["retimed"] = retime(models, args.threads, recipe, runs)
    save()
    write_markdown(state, derived, name)


def write_markdown(state: dict, derived: str, name: str) -> None:
    b, s, rows = state["budget"], state["search"], list(state["trained"].values())
    derived_row = next(r for r in s["rows"] if r["phase"] == "derived")
    first, last = state["sittings"][0], state["sittings"][-1]
    means = {m: float(np.mean([r["trained mIoU"] for r in rows if r["model"] == m])) for m in state["retimed"]}
    table = [{"model": m if m != "searched" else f"searched {derived}", "mean best val mIoU": means[m],
              "seeds": ", ".join(f"{r['trained mIoU']:.4f}" for r in rows if r["model"] == m),
              **state["retimed"][m]} for m in state["retimed"]]
    ref, ours = state["retimed"][REFERENCE], state["retimed"]["searched"]
    met = means["searched"] > means[REFERENCE] and ours["ORT ms"] <= ref["ORT ms"]
    borrowed = sorted({r["trained in"] for r in rows if "trained in" in r})
    note = (f" {REFERENCE}'s trainings were taken from bench/results/{', '.join(borrowed)}.json (same data, "
            "candidate, train and threads settings; only the search space differs)." if borrowed else "")
    md = [f"### Proxyless on CamVid against LR-ASPP-MobileNetV3 (issue 18): {state['settings']['recipe']}", "",
          f"`{last['command']}` — first sitting {first['date']}, last {last['date']} ({len(state['sittings'])} "
          f"sittings; finished steps are kept in bench/results/{name}.json and not re-run).  ",
          f"Machine: {common.machine_line(last['machine'])}", "",
          f"Budget: {REFERENCE}'s ORT median at {SIZE}, 2 threads, timed in the search's sitting: "
          f"**{b['lraspp_ort_ms']:.2f} ms** (runs {', '.join(f'{x:.2f}' for x in b['runs_ms'])}). "
          f"Search: `nascli search --recipe {state['settings']['recipe']} --max-latency-ms` that, seed "
          f"{state['settings']['search_seed']}. Derived (most probable under the budget): `{derived}`, "
          f"supernet mIoU {derived_row.get('mIOU', float('nan')):.4f}, table {derived_row.get('latency_ms', float('nan')):.2f} ms, "
          f"measured in the search {derived_row.get('latency_measured_ms', float('nan')):.2f} ms.", "",
          f"Trained from random weights, {state['settings']['epochs']} epochs, the same recipe, seeds "
          f"{', '.join(map(str, state['settings']['seeds']))} (best val mIoU of each run; latency re-timed side by side, "
          f"median of {REPEATS} `nascli profile` runs taken in turn).{note}", "",
          common.table(table, list(table[0])), "",
          f"Goal (searched mean above {REFERENCE}'s at equal or lower ORT latency): "
          + ("**met**." if met else "**not met**.")]
    common.write_section(name, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
