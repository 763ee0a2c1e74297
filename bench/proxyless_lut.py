"""Issue 18, acceptance 3: how well the proxyless latency table predicts whole subnets, and what a
supernet training step costs against a step of the derived fixed network.

1. The table of `--recipe`'s space at `--size` for `--runtime` and `--threads` (measured now, or the
   machine's cached one), then `--subnets` random subnets (plus the derived ones of `--run`, if given)
   built whole and timed by the same runtime in one sitting, one after another: median absolute error
   (percent) and Spearman's rho between predicted and measured latency.
2. `--steps` weight steps of the supernet (a new uniformly sampled path each step, as in warm-up) and of
   the fixed network of one subnet (the derived one of `--run`, else the first random subnet), same batch,
   crop and threads, interleaved in rounds so that a drifting machine slows both alike: the ratio of
   median step times; and, path by path, the supernet against the fixed network of the same path (the
   cost of the one-shot machinery itself).

    python bench/proxyless_lut.py --recipe recipes/camvid_proxyless.yml --num-classes 11 \
        --runtime onnxruntime --size 360x480 --threads 2 --subnets 20
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def step_cost(recipe, num_classes: int, encoding: str, steps: int, threads: int) -> dict:
    import torch

    from nascli.engine.losses import SegLoss

    seg_loss = SegLoss("ce", 255)
    from nascli.profile.latency import torch_threads
    from nascli.spaces.proxyless import ProxylessSpace
    from nascli.zoo.proxyless import build_proxyless, build_supernet, model_kwargs, supernet_kwargs

    cfg = recipe.proxyless
    space = ProxylessSpace.from_config(cfg)
    torch.manual_seed(0)
    supernet = build_supernet(space, num_classes, **supernet_kwargs(cfg)).train()
    fixed = build_proxyless(**model_kwargs(cfg, encoding, num_classes)).train()
    bs, (h, w) = recipe.candidate.batch_size, recipe.data.input_size
    x = torch.randn(bs, 3, h, w)
    y = torch.randint(0, num_classes, (bs, h, w))
    opts = {id(supernet): torch.optim.Adam(supernet.parameters(), 1e-4), id(fixed): torch.optim.Adam(fixed.parameters(), 1e-4)}
    rng = random.Random(0)

    def one(net) -> float:
        if net is supernet:
            net.set_path([rng.randrange(len(layer.choices)) for layer in space.layers])
        t = time.perf_counter()
        loss = seg_loss(net(x), y)
        opts[id(net)].zero_grad(set_to_none=True)
        loss.backward()
        opts[id(net)].step()
        return (time.perf_counter() - t) * 1000

    times: dict[str, list[float]] = {"supernet": [], "fixed": []}
    with torch_threads(threads):
        one(supernet), one(fixed)  # warm-up
        for _ in range(steps):
            times["supernet"].append(one(supernet))
            times["fixed"].append(one(fixed))
        # The machinery's own cost: the supernet on path P against the fixed network of P, same P.
        same: list[float] = []
        for _ in range(steps):
            path = [rng.randrange(len(layer.choices)) for layer in space.layers]
            code = space.from_indices(path)
            twin = build_proxyless(**model_kwargs(cfg, code, num_classes)).train()
            opts[id(twin)] = torch.optim.Adam(twin.parameters(), 1e-4)
            supernet.set_path(path)
            pair = []
            for net in (supernet, twin, supernet, twin):  # warm, then timed, in turn
                t = time.perf_counter()
                loss = seg_loss(net(x), y)
                opts[id(net)].zero_grad(set_to_none=True)
                loss.backward()
                opts[id(net)].step()
                pair.append((time.perf_counter() - t) * 1000)
            same.append(pair[2] / pair[3])
    sup, fix = statistics.median(times["supernet"]), statistics.median(times["fixed"])
    return {"encoding": encoding, "batch": bs, "crop": [h, w], "steps": steps, "supernet_ms": round(sup, 1),
            "fixed_ms": round(fix, 1), "ratio": round(sup / fix, 3),
            "same_path_ratio_median": round(statistics.median(same), 3), "same_path_ratios": [round(r, 3) for r in same]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", type=Path, help="the space's recipe (default: the --run's own, else camvid_proxyless.yml)")
    p.add_argument("--num-classes", type=int, default=11)
    p.add_argument("--runtime", default="onnxruntime", choices=["torch", "onnxruntime"])
    p.add_argument("--size", default="360x480")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--subnets", type=int, default=20)
    p.add_argument("--runs", type=int, default=20, help="timed runs per whole subnet and round")
    p.add_argument("--rounds", type=int, default=3, help="round-robin rounds over the checked subnets")
    p.add_argument("--repeat", action="store_true",
                   help="time the same check subnets a second time: how well the measurement agrees with itself")
    p.add_argument("--run", type=Path, help="a proxyless search run: its derived subnets are checked too")
    p.add_argument("--derived", action="append", default=[], metavar="ENCODING",
                   help="a derived subnet to check too (repeatable; e.g. from a bench/results file when the run is gone)")
    p.add_argument("--name", default="proxyless_lut",
                   help="results file bench/results/NAME.json and BENCHMARKS.md section NAME (default proxyless_lut)")
    p.add_argument("--steps", type=int, default=10, help="timed training steps per network for the step cost")
    p.add_argument("--out", type=Path, default=common.ROOT / "runs" / "bench-proxyless-lut")
    args = p.parse_args()

    from nascli.config import parse_size
    from nascli.rundir import RunDir
    from nascli.steps import lut
    from nascli.steps.common import load_recipe

    size = parse_size(args.size)
    base = RunDir(args.run) if args.run is not None else None
    recipe_file = args.recipe or (None if base is not None else common.ROOT / "recipes" / "camvid_proxyless.yml")
    recipe = load_recipe(base, recipe_file, {"search.latency_runtime": args.runtime, "search.latency_threads": args.threads,
                                             "search.latency_size": size, "data.num_classes": args.num_classes})
    derived = list(args.derived)
    if args.run is not None:
        table = pd.read_csv(args.run / "search" / "result.csv", dtype={"encoding": str})
        derived += [e for e in table["encoding"] if e not in derived]
    started = time.perf_counter()
    result = lut.run(recipe, RunDir(args.out), num_classes=args.num_classes, check=args.subnets, encodings=derived,
                     runs=args.runs, rounds=args.rounds, recalibrate=True)
    repeat = None
    if args.repeat:  # the same subnets again, in the same sitting: the measurement's own noise
        again = lut.run(recipe, RunDir(args.out), num_classes=args.num_classes,
                        encodings=[r["encoding"] for r in result.rows], runs=args.runs, rounds=args.rounds)
        a, b = pd.Series([r["measured_ms"] for r in result.rows]), pd.Series([r["measured_ms"] for r in again.rows])
        repeat = {"median_abs_diff_pct": round(float(((a - b).abs() / a).median() * 100), 2),
                  "spearman": round(float(a.corr(b, method="spearman")), 4)}
    rows = [{**r, "kind": "derived" if r["encoding"] in derived else "random"} for r in result.rows]
    cost = step_cost(recipe, args.num_classes, derived[0] if derived else rows[0]["encoding"], args.steps, args.threads)
    data = {**common.header(args.name), "runtime": args.runtime, "size": list(size), "threads": args.threads,
            "table_file": str(result.table_file), "entries": result.entries, "measured_now": result.measured,
            "summary": result.summary, "calibration": result.calibration, "repeat": repeat, "rows": rows,
            "step_cost": cost, "seconds": round(time.perf_counter() - started, 1)}
    common.save_json(args.name, data)
    s, cal = result.summary, result.calibration or {}
    noise = (f"The same {len(rows)} subnets timed again right after: median |difference| {repeat['median_abs_diff_pct']}%,"
             f" Spearman {repeat['spearman']} between the two measurements (the ceiling for any predictor).\n"
             if repeat else "")
    md = f"""### Proxyless latency table vs measured whole subnets (issue 18): {common.shown(recipe_file or args.run)}

`{data['command']}` ({data['date']}; {common.machine_line(data['machine'])}).

{args.runtime} at {size[0]}x{size[1]}, batch 1, {args.threads} threads; {result.entries} table entries
({result.measured} measured in this run). The fixed parts (stem, head, call overhead) costed in context from
{cal.get('subnets')} other random subnets timed whole (recalibrated now): {cal.get('fixed_ms')} ms, against
{cal.get('fixed_alone_ms')} ms timed alone. Then {len(rows)} held-out subnets timed whole, round-robin
({args.rounds} rounds of {args.runs} runs, median of the round medians). Targets: median absolute error
<= 10%, Spearman rho >= 0.9.

**Median absolute error {s.get('median_abs_error_pct')}%, Spearman rho {s.get('spearman')}** over {s.get('subnets')} subnets
(uncalibrated, the plain sum of entries: median absolute error {s.get('uncalibrated_median_abs_error_pct')}%).
{noise}
{common.table(rows, ['kind', 'encoding', 'predicted_ms', 'uncalibrated_ms', 'measured_ms', 'error_pct'])}

Training-step cost (target <= 1.5x): a supernet weight step (one sampled path) {cost['supernet_ms']} ms vs
the fixed network of `{cost['encoding']}` {cost['fixed_ms']} ms, batch {cost['batch']} at
{cost['crop'][0]}x{cost['crop'][1]}, median of {cost['steps']} interleaved steps: **{cost['ratio']}x**. The
supernet's steps run random paths, mostly heavier than that subnet; on the same path as a fixed network
(one random path per pair, supernet and fixed net stepped in turn) the supernet step costs
**{cost['same_path_ratio_median']}x** the fixed one (median of {cost['steps']} paths).
"""
    common.write_section(args.name, md)
    print(md)


if __name__ == "__main__":
    main()
