"""Benchmark (not a test): does the Fast-NAS controller's mean reward rise over a CamVid search? (issue 5)

Nekrasov et al., "Fast Neural Architecture Search of Compact Semantic Segmentation Models via Auxiliary
Cells", CVPR 2019 (arXiv 1810.10804); SPEC 3.2.

Runs `nascli search --algo fast-nas` on CamVid (../shared/data/camvid) with a CPU-sized recipe (half
resolution, a training subset, a narrow decoder, short candidate training), then reads result.csv and
prints, per window of candidates in search order: the mean reward the controller was given (final
reward), the mean stage-1 reward, the share that reached stage 2 and the mean controller log-probability;
plus the least-squares slope of reward against candidate index with its standard error, the command, and
the machine. Re-running the same command resumes the search; `--summary-only` only summarises.

    .venv/bin/python bench/fastnas_camvid.py --samples 40            # the benchmark (tens of minutes)
    .venv/bin/python bench/fastnas_camvid.py --samples 3 --max-train-images 16 --max-val-images 8 \\
        --run-dir runs/bench_fastnas_smoke                           # a smoke check (about a minute)
"""

from __future__ import annotations

import argparse
import logging
import math
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CAMVID = REPO.parent / "shared" / "data" / "camvid"
log = logging.getLogger("bench.fastnas_camvid")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", type=Path, default=REPO / "runs" / "bench_fastnas_camvid")
    p.add_argument("--data-root", type=Path, default=CAMVID)
    p.add_argument("--samples", type=int, default=40,
                   help="candidates the controller samples (>= 30 for the benchmark)")
    p.add_argument("--epochs", type=int, default=2, help="stage-1 epochs per candidate (cached features)")
    p.add_argument("--stage2-epochs", type=int, default=1, help="stage-2 (end-to-end) epochs for survivors")
    p.add_argument("--input-size", default="180x240", help="training crop HxW (CamVid is 360x480)")
    p.add_argument("--eval-scale", type=float, default=None, help="validation images are resized by this "
                   "(default: crop height / 360)")
    p.add_argument("--max-train-images", type=int, default=64)
    p.add_argument("--max-val-images", type=int, default=32)
    p.add_argument("--agg-size", type=int, default=32)
    p.add_argument("--controller-lr", type=float, default=3e-3,
                   help="PPO Adam lr: 30x the product's fast_nas.lr 1e-4, so that tens of samples can show a "
                        "trend (1e-4 itself is not measured: BENCHMARKS.md)")
    p.add_argument("--ppo-batch", type=int, default=4, help="rollouts per PPO update")
    p.add_argument("--encoder", type=Path, help="pretrained encoder (e.g. RUN/pretrain/encoder.pth); default random")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--window", type=int, default=10, help="candidates per row of the summary")
    p.add_argument("--summary-only", action="store_true", help="summarise an existing run, do not search")
    return p.parse_args(argv)


def recipe(args: argparse.Namespace) -> dict:
    """The CPU-sized recipe (written to RUN/bench_recipe.yml and passed with --recipe)."""
    h, w = (int(v) for v in args.input_size.lower().split("x"))
    return {
        "seed": args.seed,
        "space": {"agg_size": args.agg_size},
        # CamVid is 360 px high: crops, evaluation and the random scale (0.9x-1.5x) all at h / 360 of it.
        "data": {"input_size": [h, w], "eval_scale": args.eval_scale or h / 360,
                 "augment": {"scale_min": round(0.9 * h / 360, 4), "scale_max": round(1.5 * h / 360, 4)}},
        "candidate": {"batch_size": 8, "cache_views": 2, "max_train_images": args.max_train_images,
                      "max_val_images": args.max_val_images},
        "fast_nas": {"lr": args.controller_lr, "batch": args.ppo_batch, "stage2_epochs": args.stage2_epochs},
    }


def command(args: argparse.Namespace, recipe_path: Path) -> list[str]:
    root = args.data_root
    cmd = [sys.executable, "-m", "nascli", "search", "--algo", "fast-nas", "-r", str(args.run_dir),
           "--recipe", str(recipe_path), "--data-root", str(root), "--train-list", str(root / "train.txt"),
           "--val-list", str(root / "val.txt"), "--samples", str(args.samples), "--epochs", str(args.epochs)]
    if args.encoder is not None:
        cmd += ["--encoder", str(args.encoder)]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    return cmd


def summarise(df: pd.DataFrame, window: int) -> list[dict]:
    """Per window of candidates (search order): mean final reward, stage-1 reward, stage-2 share, logp."""
    rows = []
    for start in range(0, len(df), window):
        part = df.iloc[start:start + window]
        ok = part[part["status"] == "ok"]
        rows.append({
            "candidates": f"{start}-{start + len(part) - 1}",
            "reward": _fill(part["reward"], part["status"]).mean(),
            "reward_stage1": ok["reward_stage1"].mean(),
            "stage2_share": (ok["stage"] == 2).mean() if len(ok) else math.nan,
            "logp": part["logp"].mean(),
            "best_mIOU": ok["mIOU"].max(),
        })
    return rows


def _fill(reward: pd.Series, status: pd.Series) -> pd.Series:
    """The reward the controller was told: failed candidates count 0."""
    return pd.to_numeric(reward, errors="coerce").where(status == "ok", 0.0).fillna(0.0)


def trend(values: list[float]) -> tuple[float, float]:
    """Least-squares slope of values against their index, and its standard error."""
    n = len(values)
    if n < 3:
        return math.nan, math.nan
    xm, ym = (n - 1) / 2, sum(values) / n
    sxx = sum((i - xm) ** 2 for i in range(n))
    slope = sum((i - xm) * (v - ym) for i, v in enumerate(values)) / sxx
    resid = sum((v - ym - slope * (i - xm)) ** 2 for i, v in enumerate(values))
    return slope, math.sqrt(resid / (n - 2) / sxx)


def report(args: argparse.Namespace, cmd: list[str]) -> None:
    df = pd.read_csv(args.run_dir / "search" / "result.csv", dtype={"encoding": str})
    rows = summarise(df, args.window)
    slope, err = trend(list(_fill(df["reward"], df["status"])))
    head = common.header("fastnas_camvid")
    # What the search ran with (a --summary-only call's own --controller-lr may differ).
    lr = yaml.safe_load((args.run_dir / "bench_recipe.yml").read_text())["fast_nas"]["lr"]
    lines = [f"command: {shlex.join(cmd)}", f"machine: {common.machine_line(head['machine'])}",
             f"controller lr: {lr:g} (the product's default fast_nas.lr is 1e-4)",
             f"candidates: {len(df)} ({(df['status'] != 'ok').sum()} failed), "
             f"search seconds (sum over candidates): {df['seconds'].sum():.0f}",
             "", f"{'candidates':>11} {'reward':>8} {'stage1':>8} {'stage2%':>8} {'logp':>9} {'best mIoU':>9}"]
    for r in rows:
        lines.append(f"{r['candidates']:>11} {r['reward']:8.4f} {r['reward_stage1']:8.4f} "
                     f"{100 * r['stage2_share']:7.0f}% {r['logp']:9.3f} {r['best_mIOU']:9.4f}")
    lines += ["", f"reward trend: {slope:+.5f} per candidate (standard error {err:.5f}; "
                  f"{'rising' if slope > 2 * err else 'falling' if slope < -2 * err else 'no clear trend'})"]
    print("\n".join(lines))  # the benchmark's result, on stdout
    common.save_json("fastnas_camvid", {**head, "search_command": shlex.join(cmd), "controller_lr": lr, "windows": rows,
                                        "slope": slope, "slope_se": err, "candidates": len(df)})
    common.write_section("fastnas_camvid", "\n".join(
        ["### Fast-NAS on CamVid: does the controller learn? (issue 5)", f"`{head['command']}` — {head['date']}  ",
         "```", *lines, "```"]))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = parse_args(argv)
    args.run_dir = args.run_dir.resolve()
    recipe_path = args.run_dir / "bench_recipe.yml"
    cmd = command(args, recipe_path)
    if not args.summary_only:
        if not (args.data_root / "train.txt").is_file():
            log.error("CamVid not found at %s (give --data-root)", args.data_root)
            return 2
        args.run_dir.mkdir(parents=True, exist_ok=True)
        recipe_path.write_text(yaml.safe_dump(recipe(args), sort_keys=False))
        log.info("running: %s", shlex.join(cmd))
        done = subprocess.run(cmd, cwd=REPO)
        if done.returncode != 0:
            log.error("the search exited with %d; re-run the same command to resume it", done.returncode)
            return done.returncode
    report(args, cmd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
