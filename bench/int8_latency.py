"""Issue 22, acceptance 2: fp32 vs int8 ONNX Runtime latency at 360x480 (1 and 2 threads) and CamVid val mIoU.

Models: trained nascli runs (default: runs/int8/<name> for lraspp_mobilenet_v3_large, mobilenetv2_lraspp
and a searched Adelaide encoding, trained by the commands in BENCHMARKS.md). Per run, through the CLI as
a user would:
  1. `nascli export -r RUN --int8` at the training size (180x240: CamVid at eval_scale 0.5), then
     `nascli eval -r RUN --onnx` and `--onnx --int8`: val mIoU of fp32 and int8 (101 images).
  2. `nascli export -r RUN --int8 --input-size 360x480`: the files whose latency is timed.
Latency: for each thread count, all models' fp32 and int8 sessions timed round-robin in this one process
(`--rounds` rounds of `--runs` runs each), so the ratios see the same machine load; median of the round
medians; speed-up = fp32 median / int8 median.

    python bench/int8_latency.py                       # runs/int8/* must hold trained runs
    python bench/int8_latency.py --runs 10 --rounds 3  # quicker
    python bench/int8_latency.py --model lraspp_mobilenet_v3_large=runs/proxyless_camvid/lraspp_mobilenet_v3_large-s0 \
        --model searched=runs/proxyless_camvid/searched-s0   # other trained runs, each LABEL=RUN
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from nascli.rundir import RunDir  # noqa: E402
from nascli.steps.trained import latest_dir, latest_label  # noqa: E402

MODELS = {"lraspp_mobilenet_v3_large": "lraspp_mobilenet_v3_large", "mobilenetv2_lraspp": "mobilenetv2_lraspp",
          "searched _3001544332210231314": "searched"}
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
GOAL_SPEEDUP, GOAL_POINTS = 1.5, 1.0


def cpu_flags() -> dict[str, bool]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    have = set(line.split(":", 1)[-1].split())
    return {f: f in have for f in FLAGS}


def export_and_eval(run: Path, calibration: int, threads: int) -> dict:
    out: dict = {}
    r = common.nascli("export", "-r", run, "--int8", "--calibration-images", calibration, "--threads", threads,
                      "--json", "--quiet")
    doc = json.loads(r.stdout)
    out["export_size"] = doc["input_size"]
    out["int8_ops"], out["fp32_ops"] = doc["int8"]["quantized_ops"], len(doc["int8"]["fp32_ops"])
    out["calib_agreement"] = doc["int8"]["agreement_calibration"]
    for key, extra in (("fp32", []), ("int8", ["--int8"])):
        e = json.loads(common.nascli("eval", "-r", run, "--onnx", *extra, "--threads", threads, "--json",
                                     "--quiet").stdout)
        out[f"miou_{key}"] = e["miou"]
    metrics = (latest_dir(run) / "metrics.csv").read_text().splitlines()
    out["epochs"] = len(metrics) - 1
    out["points_lost"] = round(100 * (out["miou_fp32"] - out["miou_int8"]), 3)
    return out


def time_all(dirs: dict[str, Path], threads: int, rounds: int, n: int) -> dict:
    """`dirs`: label -> the export folder holding model.onnx and model.int8.onnx."""
    import numpy as np

    from nascli.export.onnx import INPUT_NAME, session
    from nascli.profile.onnx_latency import round_robin

    x = np.random.default_rng(0).standard_normal((1, 3, 360, 480), dtype=np.float32)
    fns = {}
    for name, folder in dirs.items():
        for prec, file in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")):
            sess = session(folder / file, threads=threads)
            fns[f"{name}|{prec}"] = lambda s=sess: s.run(None, {INPUT_NAME: x})
    timed = round_robin(fns, rounds=rounds, warmup=3, runs=n)
    out = {}
    for name in dirs:
        a, b = timed[f"{name}|fp32"], timed[f"{name}|int8"]
        out[name] = {"fp32_ms": a["median_ms"], "int8_ms": b["median_ms"], "speedup": a["median_ms"] / b["median_ms"],
                     "fp32_p90": a["p90_ms"], "int8_p90": b["p90_ms"], "runs_each": a["runs"]}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs-dir", type=Path, default=common.ROOT / "runs" / "int8")
    p.add_argument("--runs", type=int, default=20, help="timed runs per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--calibration-images", type=int, default=64)
    p.add_argument("--model", action="append", metavar="LABEL=RUN",
                   help="a trained run to compare, repeatable (default: the three runs under --runs-dir)")
    args = p.parse_args()
    runs = {label: args.runs_dir / sub for label, sub in MODELS.items()}
    if args.model:
        bad = [m for m in args.model if "=" not in m]
        if bad:
            sys.exit(f"--model {bad[0]}: expected LABEL=RUN (e.g. searched=runs/proxyless_camvid/searched-s0)")
        runs = {label: Path(run) for label, run in (m.split("=", 1) for m in args.model)}
    missing = [str(r) for r in runs.values() if latest_label(RunDir(r)) is None]
    if missing:
        sys.exit(f"missing trained runs: {', '.join(missing)} (see BENCHMARKS.md for the training commands)")
    result = {**common.header("int8_latency"), "cpu_flags": cpu_flags(), "settings": vars(args) | {
        "runs_dir": str(args.runs_dir), "model": {k: str(v) for k, v in runs.items()}}, "models": {}}
    for label, run in runs.items():
        print(f"export + eval {label}", file=sys.stderr)
        result["models"][label] = export_and_eval(run, args.calibration_images, 1)
    timed_dirs = {}
    for label, run in runs.items():  # the timed files: 360x480
        doc = json.loads(common.nascli("export", "-r", run, "--int8", "--input-size", "360x480",
                                       "--calibration-images", args.calibration_images, "--threads", "1", "--json",
                                       "--quiet").stdout)
        timed_dirs[label] = Path(doc["onnx"]).parent  # RUN/export/<model>/
    result["latency"] = {}
    for t in args.threads:
        print(f"timing, {t} thread(s)", file=sys.stderr)
        load_before = os.getloadavg()[0]
        result["latency"][str(t)] = time_all(timed_dirs, t, args.rounds, args.runs)
        result.setdefault("load_average", {})[str(t)] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    common.save_json("int8_latency", result)
    common.write_section("int8_latency", markdown(result))


def markdown(r: dict) -> str:
    m = r["machine"]
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in r["cpu_flags"].items())
    rows = []
    for label, mm in r["models"].items():
        row = {"model": label, "epochs": mm["epochs"], "mIoU fp32": mm["miou_fp32"], "mIoU int8": mm["miou_int8"],
               "points lost": mm["points_lost"], "int8 / fp32 ops": f"{mm['int8_ops']} / {mm['fp32_ops']}"}
        for t, lat in r["latency"].items():
            v = lat[label]
            row[f"fp32 ms ({t}t)"], row[f"int8 ms ({t}t)"] = v["fp32_ms"], v["int8_ms"]
            row[f"speed-up ({t}t)"] = v["speedup"]
        fast = all(lat[label]["speedup"] >= GOAL_SPEEDUP for lat in r["latency"].values())
        met = fast and mm["points_lost"] <= GOAL_POINTS
        row["goal met"] = "yes" if met else "no"
        rows.append(row)
    cols = list(rows[0].keys())
    s = r["settings"]
    return "\n".join([
        "### int8 vs fp32 ONNX Runtime (issue 22)",
        f"`{r['command']}` — {r['date']}  ",
        f"Machine: {common.machine_line(m)}  ",
        f"CPU flags: {flags}  ",
        "1-minute load average before/after timing (2 cores, shared with other jobs): "
        + ", ".join(f"{t} thread(s) {a} / {b}" for t, (a, b) in r["load_average"].items()) + "  ",
        f"Latency: 360x480, batch 1, fp32 `model.onnx` vs `model.int8.onnx` from `nascli export --int8 --input-size "
        f"360x480` (QDQ, per-channel int8 weights, uint8 activations, MinMax on {s['calibration_images']} CamVid "
        f"training images); all {2 * len(rows)} sessions per thread count timed round-robin in one process, {s['rounds']} "
        f"rounds of {s['runs']} runs, median of the round medians; speed-up = fp32 / int8.  ",
        "mIoU: CamVid val (101 images) by `nascli eval --onnx [--int8]` on the export at the training size "
        "(180x240, eval_scale 0.5, logits resized to the full label). " + (
            "**Short-trained** models (the epochs column, from random weights), not converged ones: their mIoU is "
            "far below a full 65-epoch training's." if min(m_["epochs"] for m_ in r["models"].values()) < 60 else
            "Models trained from random weights for the epochs column (the Q3 rules: 65)."),
        "", common.table(rows, cols), "",
        f"Goal: int8 >= {GOAL_SPEEDUP}x faster than fp32 ONNX Runtime at both thread counts with <= {GOAL_POINTS} "
        f"point of mIoU lost: met for {sum(r_['goal met'] == 'yes' for r_ in rows)} of {len(rows)} models.",
    ])


if __name__ == "__main__":
    main()
