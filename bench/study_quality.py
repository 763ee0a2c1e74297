"""Search quality on CamVid (issue 7): does the search beat random search and hand-designed models?

Q1  adelaide-ea vs random search, same budget and seeds: best mIoU, hypervolume over (mIoU, MACs).
Q2  proxy fidelity: search-time mIoU vs mIoU after `nascli train`, for architectures spread over the
    front; Kendall tau and a scatter plot.
Q3  the found model vs torchvision's LR-ASPP MobileNetV3-Large and MobileNetV2 + LR-ASPP on our
    encoder, trained with the same recipe: mIoU, params, MACs, eager and ONNX Runtime latency; then once
    more on equal footing, every model trained from random weights (see q3_scratch).

Every step runs the CLI in a fresh process and is skipped when its output exists, so the study resumes
where it stopped. The random search of seed s starts from a copy of the adelaide-ea run's random phase
for seed s: with the same seed both draw exactly the same first candidates (proposal i is seeded from
(seed, i) alone) and train them identically, so copying those records changes no number and saves
their training time; the copy is checked encoding by encoding.

    python bench/study_quality.py                       # hours on 2 cores; see BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

RECIPE = common.ROOT / "recipes" / "camvid_adelaide_ea.yml"
BASELINES = ["lraspp_mobilenet_v3_large", "mobilenetv2_lraspp"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def results(run: Path) -> pd.DataFrame:
    df = pd.read_csv(run / "search" / "result.csv", dtype={"encoding": str, "parent": str})
    return df[df["status"] == "ok"]


# --- Q1 ------------------------------------------------------------------------------------------------
def search(run: Path, algo: str, seed: int, n_random: int, n_mutate: int, encoder: Path) -> None:
    log(f"search {algo} seed {seed} -> {run}")
    common.nascli("search", "--algo", algo, "-r", run, "--recipe", RECIPE, "--seed", seed, "--encoder", encoder,
                  "--random-samples", n_random, "--mutate-samples", n_mutate, "--quiet")


def seed_random_from_ea(ea: Path, rnd: Path, n_random: int) -> None:
    """Start the random run with the EA run's first `n_random` records (identical by construction)."""
    if (rnd / "search" / "records.jsonl").exists():
        return
    src = ea / "search"
    lines = (src / "records.jsonl").read_text().splitlines()[:n_random]
    assert all(json.loads(line)["phase"] == "random" for line in lines) and len(lines) == n_random
    dst = rnd / "search"
    (dst / "candidates").mkdir(parents=True)
    shutil.copy2(src / "encoder.pth", dst / "encoder.pth")
    for i in range(n_random):
        shutil.copytree(src / "candidates" / f"{i:04d}", dst / "candidates" / f"{i:04d}")
    (dst / "records.jsonl").write_text("\n".join(lines) + "\n")


def q1(args, encoder: Path) -> dict:
    runs = {}
    for seed in args.seeds:
        ea, rnd = args.out / f"ea-s{seed}", args.out / f"random-s{seed}"
        search(ea, "adelaide-ea", seed, args.random, args.mutate, encoder)
        seed_random_from_ea(ea, rnd, args.random)
        search(rnd, "random", seed, args.random, args.mutate, encoder)
        shared = results(ea)["encoding"].tolist()[:args.random]
        assert results(rnd)["encoding"].tolist()[:args.random] == shared, "random phase differs from EA's"
        runs[seed] = {"adelaide-ea": results(ea), "random": results(rnd)}
    from nascli.pareto.front import hypervolume_2d, pareto_front

    max_macs = max(df["flops"].max() for r in runs.values() for df in r.values())
    ref = (0.0, -1.05 * max_macs)  # (mIoU 0, 5% above the costliest candidate seen)
    # Hypervolume after every 10 candidates from the end of the shared random phase: how the gap evolves.
    checkpoints = list(range(args.random, args.random + args.mutate + 1, 10))
    checkpoints += [] if checkpoints[-1] == args.random + args.mutate else [args.random + args.mutate]
    rows = []
    for seed, r in runs.items():
        for algo, df in r.items():
            row = {"seed": seed, "algo": algo, "candidates": len(df), "best mIoU": df["mIOU"].max(),
                   "front size": len(pareto_front(df, ["miou", "macs"]))}
            for k in checkpoints:
                first = df[df["index"] < k]
                pts = np.stack([first["mIOU"].to_numpy(float), -first["flops"].to_numpy(float)], axis=1)
                row[f"HV after {k}"] = hypervolume_2d(pts, ref) / 1e9
            rows.append(row)
    plot_fronts(runs, common.RESULTS / f"{args.section}_q1_fronts.png")
    return {"rows": rows, "reference_point": {"miou": 0.0, "macs": 1.05 * max_macs}}


def plot_fronts(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nascli.pareto.front import pareto_front

    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 4), squeeze=False)
    for ax, (seed, r) in zip(axes[0], runs.items()):
        for algo, colour in (("random", "tab:grey"), ("adelaide-ea", "tab:red")):
            df = r[algo]
            ax.scatter(df["flops"] / 1e9, df["mIOU"], s=12, color=colour, alpha=0.35)
            front = pareto_front(df, ["miou", "macs"]).sort_values("flops")
            ax.step(front["flops"] / 1e9, front["mIOU"], where="post", color=colour, label=f"{algo} front")
            ax.scatter(front["flops"] / 1e9, front["mIOU"], s=24, color=colour)
        ax.set(title=f"seed {seed}", xlabel="GMACs at 180x240", ylabel="search mIoU (proxy)")
        ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- Q2 ------------------------------------------------------------------------------------------------
def spread(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """k candidates spread over cost, taken front first, then the next non-dominated layers."""
    from nascli.pareto.front import pareto_front

    chosen, rest = [], df.copy()
    while len(chosen) < k and len(rest):
        layer = pareto_front(rest, ["miou", "macs"])
        chosen.append(layer)
        rest = rest.drop(layer.index)
    pool = pd.concat(chosen).sort_values("flops")
    idx = np.unique(np.linspace(0, len(pool) - 1, min(k, len(pool))).round().astype(int))
    return pool.iloc[idx]


def train(run: Path, encoder: Path, epochs: int, *, encoding: str | None = None, model: str | None = None,
          recipe: Path = RECIPE) -> dict:
    status = run / "status" / "train.json"
    if not (status.exists() and json.loads(status.read_text()).get("state") == "done"):
        log(f"train {encoding or model} -> {run}")
        folder = common.trained_dir(run)
        if folder is not None and (folder / "last.pth").exists():  # a stopped training: its run holds the settings
            common.nascli("train", "-r", run, "--resume", "--quiet")
        else:
            args = ["train", "-r", run, "--recipe", recipe, "--epochs", epochs, "--quiet"]
            args += ["--encoding", encoding] if encoding else ["--model", model]
            common.nascli(*args, *(["--encoder", encoder] if encoder is not None else []))
    metrics = pd.read_csv(common.trained_dir(run) / "metrics.csv")
    return {"trained mIoU": float(metrics["val_miou"].max()), "epochs": int(metrics["epoch"].max())}


def q2(args, encoder: Path) -> dict:
    df = results(args.out / f"ea-s{args.seeds[0]}")
    picks = spread(df, args.q2_models)
    rows = []
    for r in picks.itertuples():
        t = train(args.out / "q2" / r.encoding, encoder, args.train_epochs, encoding=r.encoding)
        rows.append({"encoding": r.encoding, "GMACs": r.flops / 1e9, "proxy mIoU": r.mIOU, **t})
    from scipy.stats import kendalltau

    tau = float(kendalltau([r["proxy mIoU"] for r in rows], [r["trained mIoU"] for r in rows]).statistic)
    plot_scatter(rows, tau, common.RESULTS / f"{args.section}_q2_proxy.png")
    return {"rows": rows, "kendall_tau": tau}


def plot_scatter(rows: list[dict], tau: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter([r["proxy mIoU"] for r in rows], [r["trained mIoU"] for r in rows])
    for r in rows:
        ax.annotate(r["encoding"][:8] + "…", (r["proxy mIoU"], r["trained mIoU"]), fontsize=7)
    ax.set(title=f"proxy vs trained mIoU (Kendall tau {tau:.2f})", xlabel="search mIoU (proxy)",
           ylabel="mIoU after nascli train")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- Q3 ------------------------------------------------------------------------------------------------
PROFILE_REPEATS = 3  # this machine's speed drifts 10-20% between runs: the median of 3 profiles


def profile(runs: list[Path], threads: int) -> list[dict]:
    """Params, MACs, and the median over PROFILE_REPEATS `nascli profile` runs of eager and ORT median ms, the
    models taken in turn (round-robin) so that the machine's drift over minutes falls on all of them alike."""
    outs: list[list[dict]] = [[] for _ in runs]
    for _ in range(PROFILE_REPEATS):
        for run, out in zip(runs, outs):
            # no --checkpoint: `profile -r RUN` times the run's latest trained model (its best.pth)
            out.append(json.loads(common.nascli("profile", "-r", run, "--input-size", "360x480", "--threads", threads,
                                                "--min-seconds", 5, "--json", "--quiet").stdout))
    return [{"params": o[0]["params"], "macs": o[0]["macs"],
             "eager_ms": float(np.median([x["eager"]["median_ms"] for x in o])),
             "ort_ms": float(np.median([x["onnxruntime"]["median_ms"] for x in o]))} for o in outs]


def q3(args, encoder: Path, q2_rows: list[dict]) -> dict:
    rows = []
    for name in BASELINES:
        own = name == "mobilenetv2_lraspp"
        # Equal budgets: our encoder got `pretrain.epochs` of dense pretraining, so a model that cannot use it
        # trains that many epochs more from scratch.
        epochs = args.train_epochs + (0 if own else args.pretrain_epochs)
        t = train(args.out / "q3" / name, encoder if own else None, epochs, model=name)
        rows.append({"model": name, **t, "run": args.out / "q3" / name})
    for r in q2_rows:
        rows.append({"model": f"searched {r['encoding']}", "trained mIoU": r["trained mIoU"], "epochs": r["epochs"],
                     "run": args.out / "q2" / r["encoding"]})
    for r, p in zip(rows, profile([r.pop("run") for r in rows], args.threads)):
        r.update({"params (M)": p["params"] / 1e6, "GMACs @360x480": p["macs"] / 1e9,
                  "eager ms": p["eager_ms"], "ORT ms": p["ort_ms"]})
    return {"rows": rows, "scratch": q3_scratch(args, rows)}


def q3_scratch(args, rows: list[dict]) -> list[dict]:
    """Q3 on equal footing: no pretrained encoder for anyone.

    Our encoder was pretrained with an LR-ASPP head, which favours MobileNetV2 + LR-ASPP over a searched decoder
    that starts from scratch on it. Here MobileNetV2 + LR-ASPP and the best searched model(s) at or under
    LR-ASPP-MobileNetV3's ORT latency train from random weights for as many epochs as LR-ASPP-MobileNetV3 got
    (which trained from scratch in Q3 already). Latency and cost are the Q3 rows' (same architectures).
    """
    ref, fast = reference_and_fast(rows)
    fast = sorted(fast, key=lambda r: -r["trained mIoU"])[:args.scratch_models]
    out = [dict(ref)]
    for r in [next(r for r in rows if r["model"] == "mobilenetv2_lraspp"), *fast]:
        name = r["model"].split()[-1]
        kind = {"encoding": name} if r["model"].startswith("searched") else {"model": name}
        t = train(args.out / "q3_scratch" / name, None, args.pretrain_epochs + args.train_epochs, **kind)
        out.append({**r, **t})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--camvid-run", type=Path, default=common.ROOT / "runs" / "camvid",
                   help="run directory holding pretrain/encoder.pth (make one with `nascli pretrain-backbone`)")
    p.add_argument("--out", type=Path, default=common.ROOT / "runs" / "study")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--random", type=int, default=15, help="random-phase candidates per search")
    p.add_argument("--mutate", type=int, default=15, help="mutate-phase candidates (random search: more random)")
    p.add_argument("--q2-models", type=int, default=8)
    p.add_argument("--train-epochs", type=int, default=15)
    p.add_argument("--pretrain-epochs", type=int, default=60, help="for equal budgets in Q3 (recipe pretrain.epochs)")
    p.add_argument("--scratch-models", type=int, default=1,
                   help="searched models Q3 also trains from scratch (the best at or under LR-ASPP's ORT latency)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", choices=["q1", "q2", "q3"], help="stop after this part")
    p.add_argument("--section", default="study",
                   help="BENCHMARKS.md section and results file prefix (another one keeps the main study's)")
    args = p.parse_args()
    encoder = args.camvid_run / "pretrain" / "encoder.pth"
    if not encoder.exists():
        sys.exit(f"{encoder} not found: run `nascli pretrain-backbone -r {args.camvid_run} --recipe {RECIPE}` first")
    head = common.header("study_quality")
    started = time.perf_counter()
    result = {**head, "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    result["q1"] = q1(args, encoder)
    if args.only != "q1":
        result["q2"] = q2(args, encoder)
        if args.only != "q2":
            result["q3"] = q3(args, encoder, result["q2"]["rows"])
    result["hours"] = (time.perf_counter() - started) / 3600
    common.save_json(f"{args.section}_quality", result)
    write_markdown(result, head, args)


def write_markdown(result: dict, head: dict, args) -> None:
    q1r = result["q1"]
    title = "Search quality on CamVid (issue 7)" + ("" if args.section == "study" else f" — {args.section}")
    md = [f"### {title}", f"`{head['command']}` — {head['date']}  ",
          f"Machine: {common.machine_line(head['machine'])}  ",
          f"Recipe {RECIPE.relative_to(common.ROOT)}; seeds {args.seeds}; each search {args.random} random + "
          f"{args.mutate} mutate (random search: {args.random + args.mutate} random); this session "
          f"{result['hours']:.1f} h (steps already on disk are not re-run).", "",
          "**Q1, adelaide-ea vs random search** (hypervolume in mIoU x GMACs at 180x240, reference point "
          f"mIoU 0, {q1r['reference_point']['macs'] / 1e9:.3f} GMACs; \"HV after k\" counts the first k "
          f"candidates, the first {args.random} being the same random ones for both).", "",
          common.table(q1r["rows"], list(q1r["rows"][0])), "", q1_verdict(q1r["rows"]), "",
          f"![Q1 fronts](bench/results/{args.section}_q1_fronts.png)"]
    if "q2" in result:
        md += ["", f"**Q2, proxy fidelity**: Kendall tau = **{result['q2']['kendall_tau']:.2f}** over "
                   f"{len(result['q2']['rows'])} architectures.", "",
               common.table(result["q2"]["rows"], list(result["q2"]["rows"][0])), "",
               f"![Q2 proxy vs trained](bench/results/{args.section}_q2_proxy.png)"]
    if "q3" in result:
        md += ["", "**Q3, found models vs hand-designed** (CamVid val; latency 360x480, batch 1, "
                   f"{args.threads} threads, median of {PROFILE_REPEATS} `nascli profile` runs (taken round-robin) "
                   "of >= 50 runs and >= 5 s each):", "",
               common.table(result["q3"]["rows"], list(result["q3"]["rows"][0])),
               "", q3_verdict(result["q3"]["rows"])]
        scratch = result["q3"]["scratch"]
        md += ["", "**Q3 on equal footing** (no pretrained encoder for anyone: every model below trained from "
                   f"random weights for {args.pretrain_epochs + args.train_epochs} epochs with the recipe's train "
                   "settings; params, MACs and latency as in the table above):", "",
               common.table(scratch, list(scratch[0])), "", q3_verdict(scratch)]
    common.write_section(args.section, "\n".join(md))
    print("\n".join(md))


def q1_verdict(rows: list[dict]) -> str:
    """Compare final hypervolumes seed by seed, and what each algorithm added after the shared random phase."""
    hv = [c for c in rows[0] if c.startswith("HV after")]
    by = {(r["seed"], r["algo"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    wins = sum(by[s, "adelaide-ea"][hv[-1]] > by[s, "random"][hv[-1]] for s in seeds)
    gain = {a: np.mean([by[s, a][hv[-1]] - by[s, a][hv[0]] for s in seeds]) for a in ("adelaide-ea", "random")}
    return (f"adelaide-ea's final hypervolume is higher than random search's in {wins} of {len(seeds)} seeds; after "
            f"the shared random phase it added {gain['adelaide-ea']:.4f} on average against random search's "
            f"{gain['random']:.4f}.")


def reference_and_fast(rows: list[dict]) -> tuple[dict, list[dict]]:
    """LR-ASPP-MobileNetV3's row, and the searched models' rows at or under its ORT latency."""
    ref = next(r for r in rows if r["model"] == "lraspp_mobilenet_v3_large")
    return ref, [r for r in rows if r["model"].startswith("searched") and r["ORT ms"] <= ref["ORT ms"]]


def q3_verdict(rows: list[dict]) -> str:
    """The goal: a searched model with higher mIoU than LR-ASPP-MobileNetV3 at equal or lower ORT latency."""
    ref, fast = reference_and_fast(rows)
    best = max((r for r in rows if r["model"].startswith("searched")), key=lambda r: r["trained mIoU"])
    met = any(r["trained mIoU"] > ref["trained mIoU"] for r in fast)
    return (f"Best searched model: {best['trained mIoU']:.4f} mIoU ({best['model'].split()[-1]}, {best['ORT ms']:.1f} "
            f"ms ORT) against LR-ASPP-MobileNetV3's {ref['trained mIoU']:.4f} ({ref['ORT ms']:.1f} ms); "
            f"{len(fast)} searched model(s) are at or under its ORT latency. Goal (higher mIoU at equal or lower "
            f"ORT latency): **{'met' if met else 'not met'}**.")


if __name__ == "__main__":
    main()
