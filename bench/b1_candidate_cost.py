"""B1: what one candidate evaluation costs, the reference way vs nascli's default, on CamVid.

- reference: Vega's way. The whole network trains end to end, the encoder is recomputed every step,
  images are decoded and augmented every step, fp32, NCHW; Vega's recipe (Adam lr 5e-5, StepLR every
  5 epochs x0.5, batch 16); no BN re-estimation.
- nascli: the default. The encoder is frozen and its taps are cached once per search (fp16); each
  candidate trains its decoder only (channels_last, space-to-batch dilated depthwise convs, loss on the
  stride-4 grid), then re-estimates BN statistics.
Both take the same number of optimiser steps from the same encoder weights, at the CamVid recipe's
resolution. Each way runs in its own fresh process, so its peak memory (max RSS) is its own.

    python bench/b1_candidate_cost.py --encoder runs/camvid/pretrain/encoder.pth      # full
    python bench/b1_candidate_cost.py --quick                                         # minutes
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

# Spread over the space (sampled once with random.Random(2026), kept fixed so runs compare).
ENCODINGS = ["_0101444367710002030", "_6111322266152022315", "_5106522331644303443", "_3114344603260033131",
             "_6015342434763312200", "_1112123347645022303"]
RECIPE = common.ROOT / "recipes" / "camvid_adelaide_ea.yml"


def worker(args: argparse.Namespace) -> None:
    """Evaluate the encodings one way in this process; print one JSON line."""
    import torch

    from nascli.engine.checkpoint import load_checkpoint
    from nascli.engine.evaluator import CandidateEvaluator
    from nascli.engine.loops import group_by_shape, recalibrate_bn
    from nascli.steps.common import datasets, load_recipe, resolve_data
    from nascli.zoo.backbones import MobileNetV2Encoder

    torch.set_num_threads(args.threads)
    options = {"candidate.epochs": args.epochs, "candidate.max_train_images": args.max_train,
               "candidate.max_val_images": args.max_val}
    if args.way == "reference":
        options.update({"candidate.mode": "full", "candidate.lr": 5e-5, "candidate.scheduler": "step",
                        "candidate.step_epochs": 5, "candidate.step_gamma": 0.5, "candidate.batch_size": 16,
                        "candidate.loss_at": "label", "candidate.precise_bn": False})
    recipe = resolve_data(load_recipe(None, RECIPE, options))
    train, val = datasets(recipe, augment_seed=0, max_train=args.max_train, max_val=args.max_val)
    if args.encoder:
        state = load_checkpoint(Path(args.encoder))["state_dict"]
    else:  # timing only: a random encoder with measured BN statistics
        torch.manual_seed(0)
        enc = MobileNetV2Encoder()
        recalibrate_bn(enc, (x for x, _ in group_by_shape((train[i] for i in range(64)), 16)))
        state = enc.state_dict()
    ev = CandidateEvaluator(recipe=recipe, num_classes=recipe.data.num_classes, train=train, val=val,
                            encoder_state=state)
    out = {"way": args.way, "steps": args.epochs * -(-len(train) // recipe.candidate.batch_size), "candidates": []}
    if args.way == "nascli":
        t = time.perf_counter()
        ev.cache  # noqa: B018 -- built once per search
        out["cache_seconds"] = time.perf_counter() - t
        out["cache_mb"] = ev.cache.nbytes() / 2**20
    for code in args.encodings:
        t = time.perf_counter()
        r = ev.train_and_eval(code, 0, None)
        cost = ev.cost(code)
        out["candidates"].append({"encoding": code, "seconds": time.perf_counter() - t, "miou": r.get("mIOU"),
                                  "status": r["status"], "macs": cost["flops"], "params": cost["parameters"]})
        print(f"{args.way} {code}: {out['candidates'][-1]['seconds']:.1f} s, mIoU {r.get('mIOU')}", file=sys.stderr,
              flush=True)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def run_way(way: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", way, "--epochs", str(args.epochs), "--threads", str(args.threads),
           "--encodings", *args.encodings]
    for flag, value in (("--encoder", args.encoder), ("--max-train", args.max_train), ("--max-val", args.max_val)):
        if value:
            cmd += [flag, str(value)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{way} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def kendall_tau(a: list[float], b: list[float]) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", choices=["reference", "nascli"], help=argparse.SUPPRESS)
    p.add_argument("--encoder", help="encoder.pth (e.g. runs/camvid/pretrain/encoder.pth); without it a random "
                                     "encoder: the timings hold, the mIoU and tau mean nothing")
    p.add_argument("--encodings", nargs="+", default=ENCODINGS)
    p.add_argument("--epochs", type=int, default=2, help="candidate epochs (both ways: same optimiser steps)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-train", type=int)
    p.add_argument("--max-val", type=int)
    p.add_argument("--quick", action="store_true", help="2 encodings, 64 train / 16 val images, 1 epoch")
    args = p.parse_args()
    if args.worker:
        args.way = args.worker
        return worker(args)
    if args.quick:
        args.encodings, args.max_train, args.max_val, args.epochs = ENCODINGS[:2], 64, 16, 1
    if not common.CAMVID.is_dir():
        sys.exit(f"CamVid not found at {common.CAMVID}")
    head = common.header("b1_candidate_cost")
    ways = {w: run_way(w, args) for w in ("reference", "nascli")}
    ref, ours = ways["reference"]["candidates"], ways["nascli"]["candidates"]
    rows = []
    for r, o in zip(ref, ours):
        rows.append({"encoding": r["encoding"], "GMACs": r["macs"] / 1e9, "params (M)": r["params"] / 1e6,
                     "reference s": r["seconds"], "nascli s": o["seconds"], "ratio": r["seconds"] / o["seconds"],
                     "reference mIoU": r["miou"], "nascli mIoU": o["miou"]})
    ref_total, our_total = sum(r["seconds"] for r in ref), sum(o["seconds"] for o in ours)
    cache = ways["nascli"]["cache_seconds"]
    n = len(ours)
    summary = {
        "ratio_per_candidate": ref_total / our_total,
        "ratio_with_cache_over_these": ref_total / (our_total + cache),
        "ratio_with_cache_over_60": (ref_total / n) / (our_total / n + cache / 60),
        "kendall_tau": kendall_tau([r["miou"] for r in ref], [o["miou"] for o in ours]) if n > 2 else None,
        "cache_seconds": cache, "cache_mb": ways["nascli"]["cache_mb"],
        "peak_rss_mb": {w: ways[w]["peak_rss_mb"] for w in ways}, "steps": ways["nascli"]["steps"],
    }
    result = {**head, "settings": {"recipe": str(RECIPE.relative_to(common.ROOT)), "epochs": args.epochs,
                                   "threads": args.threads, "encoder": args.encoder or "random (timing only)",
                                   "max_train": args.max_train, "max_val": args.max_val, "quick": args.quick},
              "rows": rows, "summary": summary, "ways": ways}
    common.save_json("b1_quick" if args.quick else "b1", result)
    md = [f"### B1: candidate evaluation cost{' (quick)' if args.quick else ''}",
          f"`{head['command']}` — {head['date']}  ",
          f"Machine: {common.machine_line(head['machine'])}  ",
          f"Settings: {result['settings']['recipe']} (180x240 crops, eval at 0.5 scale), {args.epochs} epoch(s) = "
          f"{summary['steps']} optimiser steps per candidate both ways, {args.threads} threads, encoder: "
          f"{result['settings']['encoder']}.", "",
          common.table(rows, list(rows[0])), "",
          f"- Per candidate: reference {ref_total / n:.1f} s, nascli {our_total / n:.1f} s: **{summary['ratio_per_candidate']:.2f}x**.",
          f"- Counting nascli's one-off feature cache ({cache:.1f} s, {summary['cache_mb']:.0f} MB fp16): "
          f"{summary['ratio_with_cache_over_these']:.2f}x over these {n} candidates, "
          f"{summary['ratio_with_cache_over_60']:.2f}x over a 60-candidate search.",
          f"- Peak memory (max RSS of each way's process): reference {summary['peak_rss_mb']['reference']:.0f} MB, "
          f"nascli {summary['peak_rss_mb']['nascli']:.0f} MB.",
          f"- Ranking agreement of the two ways' mIoU (Kendall tau over {n} encodings): "
          + (f"{summary['kendall_tau']:.2f}" if summary["kendall_tau"] is not None else "n/a")
          + ("" if args.encoder else " (random encoder: not meaningful)")]
    common.write_section("b1_quick" if args.quick else "b1", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
