"""Issue 21: what each executor costs per candidate against serial, and throughput with 1 vs 2 workers.

On the demo data (`nascli data demo`, 96x96) with recipes/demo.yml, one torch thread per worker:

1. Per-candidate overhead: K = 1, one worker, the same candidates on serial, process and ray (a local Ray
   cluster this script's search starts). A candidate's time is the interval between consecutive records as
   the driver sees them (so it includes submitting, shipping the result and writing it); the first record is
   left out (it carries the one-off start: worker processes, the feature cache shipped), reported apart.
2. Throughput: K = 2 with 1 and with 2 workers (process executor, and ray), candidates/hour over the records
   after the first two (steady state), and their ratio.

    python bench/executors.py [--candidates 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

RECIPE = common.ROOT / "recipes" / "demo.yml"


def search(data: Path, executor: str, parallel: int, workers: int, n: int) -> dict:
    from nascli.executors import make_executor
    from nascli.rundir import RunDir
    from nascli.steps import search as step
    from nascli.steps.common import load_recipe

    values = {"data.data_root": data, "data.train_list": data / "train.txt", "data.val_list": data / "val.txt",
              "search.algo": "random", "search.random_samples": n, "search.mutate_samples": 0, "threads": 1,
              "search.parallel": parallel}
    times: list[float] = []
    progress = lambda e: times.append(time.perf_counter()) if e["event"] == "record" else None  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="nascli-bench-exec-") as tmp:
        recipe = load_recipe(None, RECIPE, values)
        runner = make_executor(executor, parallel=parallel, workers=workers)
        started = time.perf_counter()
        result = step.run(recipe, RunDir(Path(tmp) / "run"), progress=progress, executor=runner)
        total = time.perf_counter() - started
    steady = times[parallel - 1:]  # from the end of the first K-wide round (start-up) to the last record
    intervals = [b - a for a, b in zip(times[:-1], times[1:])][1:]
    return {"executor": executor, "parallel": parallel, "workers": workers, "candidates": n, "total_s": total,
            "first_record_s": times[0] - started, "median_interval_s": statistics.median(intervals),
            "intervals_s": intervals,
            "per_hour": (len(steady) - 1) / (steady[-1] - steady[0]) * 3600 if len(steady) > 1 else None,
            "train_s": [r.get("train_seconds") for r in result.records],
            "encodings": [r["encoding"] for r in result.records], "miou": [r.get("mIOU") for r in result.records]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--data", type=Path, default=common.ROOT / "data" / "demo")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    if not (args.data / "val.txt").exists():
        common.nascli("data", "demo", args.data, "--size", "96")
    n = args.candidates
    load_before = round(os.getloadavg()[0], 2)
    overhead = [search(args.data, ex, 1, 1, n) for ex in ("serial", "process", "ray")]
    throughput = [search(args.data, ex, 2, w, n) for ex in ("process", "ray") for w in (1, 2)]
    for r in overhead[1:]:  # the same candidates, the same numbers: only the time may differ
        assert (r["encodings"], r["miou"]) == (overhead[0]["encodings"], overhead[0]["miou"]), r["executor"]
    data = {**common.header("executors"), "candidates": n, "overhead": overhead, "throughput": throughput,
            "load_before": load_before, "load_after": round(os.getloadavg()[0], 2)}
    common.save_json("executors", data)
    common.write_section("executors", markdown(data))
    print(markdown(data))


def markdown(d: dict) -> str:
    m = d["machine"]
    base = d["overhead"][0]["median_interval_s"]
    rows = [{"executor": r["executor"], "median s / candidate": r["median_interval_s"],
             "overhead vs serial %": 100 * (r["median_interval_s"] - base) / base,
             "first record s (start-up included)": r["first_record_s"], "whole search s": r["total_s"]}
            for r in d["overhead"]]
    tput = []
    for ex in ("process", "ray"):
        one, two = [r for r in d["throughput"] if r["executor"] == ex]
        tput.append({"executor": ex, "1 worker cand/h": one["per_hour"], "2 workers cand/h": two["per_hour"],
                     "ratio": two["per_hour"] / one["per_hour"]})
    return f"""### Executors: per-candidate overhead and 1 vs 2 workers (issue 21)
`{d['command']}` — {d['date']}  
Machine: {common.machine_line(m)}  
Settings: recipes/demo.yml on the demo data (96x96, 240 train / 60 val images), `--algo random`, {d['candidates']} candidates per run, one torch thread per worker, no pretrained encoder. 1-minute load average {d.get('load_before', '?')} before, {d.get('load_after', '?')} after (2 cores): above ~1 something else was running, and the ratios are noisy at a few percent either way.

Per-candidate overhead, K = 1, one worker (a candidate's time = interval between consecutive records seen by the driver, first record left out; median):

{common.table(rows, list(rows[0]))}

Throughput, K = 2, one thread per worker, steady state (from the second record to the last):

{common.table(tput, list(tput[0]))}
"""


if __name__ == "__main__":
    main()
