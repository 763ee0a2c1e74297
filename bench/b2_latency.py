"""B2: inference latency at 360x480, batch 1: eager PyTorch vs ONNX Runtime, with a roofline figure.

Models: the best searched architecture (from a search run, or `--encoding`), torchvision's
`lraspp_mobilenet_v3_large` and `deeplabv3_mobilenet_v3_large`, and `mobilenetv2_lraspp` (our encoder
with an LR-ASPP head). Weights do not change latency, so random weights are used. For each: MACs
(torch.utils.flop_counter), eager and onnxruntime latency (warm-up, then >= `--runs` runs and
>= `--min-seconds`; median and p90), the achieved GMAC/s, and that as a share of this machine's measured
fp32 matmul peak (2048x2048, the faster of torch.mm and onnxruntime's MatMul, same threads).

    python bench/b2_latency.py --run runs/camvid          # the best of a search
    python bench/b2_latency.py --quick                    # fewer runs
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

BASELINES = ["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large", "mobilenetv2_lraspp"]


def _best_gmacs(run, n: int, seconds: float) -> float:
    run()
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        run()
        best = max(best, n ** 3 / (time.perf_counter() - t) / 1e9)
    return best


def matmul_peak_gmacs(threads: int, n: int = 2048, seconds: float = 3.0) -> dict[str, float]:
    """Best-of-runs GMAC/s of an fp32 n x n matmul in PyTorch and in ONNX Runtime, same threads.

    The roof is the faster of the two: PyTorch's BLAS is not always the best this CPU can do (ONNX Runtime's
    own GEMM can beat it), and a roof below what a model achieves says nothing.
    """
    import numpy as np
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper

    from nascli.profile.latency import torch_threads

    a, b = torch.randn(n, n), torch.randn(n, n)
    with torch_threads(threads):
        torch_peak = _best_gmacs(lambda: torch.mm(a, b), n, seconds)
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                              [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(helper.make_model(graph).SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {"a": a.numpy(), "b": np.ascontiguousarray(b.numpy())}
    ort_peak = _best_gmacs(lambda: sess.run(None, feed), n, seconds)
    return {"torch": torch_peak, "onnxruntime": ort_peak, "roof": max(torch_peak, ort_peak)}


def best_searched(run: Path) -> tuple[str, dict]:
    """The best-mIoU encoding of a search run, with the space it was searched in."""
    import yaml

    df = pd.read_csv(run / "search" / "result.csv", dtype={"encoding": str})
    df = df[df["status"] == "ok"].sort_values("mIOU", ascending=False)
    recipe = yaml.safe_load((run / "search" / "config.yaml").read_text())
    return df["encoding"].iloc[0], recipe


def build(name: str, num_classes: int, encoding: str | None, space: dict | None):
    from nascli.zoo.registry import create_model

    if name == "adelaide":
        return create_model("adelaide", encoding=encoding, num_classes=num_classes, op_names=space["op_names"],
                            agg_size=space["agg_size"], agg_concat=space["agg_concat"], sep_repeats=space["sep_repeats"])
    return create_model(name, num_classes=num_classes)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, help="a search run directory: its best encoding is profiled")
    p.add_argument("--encoding", help="an Adelaide encoding instead of --run (space from the CamVid recipe)")
    p.add_argument("--size", default="360x480")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--num-classes", type=int, default=11)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--min-seconds", type=float, default=5.0)
    p.add_argument("--repeats", type=int, default=3, help="whole measurements per model; the median is reported")
    p.add_argument("--quick", action="store_true", help="fewer runs (for make bench-quick)")
    args = p.parse_args()
    if args.quick:
        args.runs, args.min_seconds, args.repeats = 10, 1.0, 1

    import torch
    import yaml

    from nascli.config import parse_size
    from nascli.profile.cost import count_macs, count_params
    from nascli.profile.latency import torch_latency
    from nascli.profile.onnx_latency import onnxruntime_latency

    torch.set_num_threads(args.threads)
    size = parse_size(args.size)
    head = common.header("b2_latency")
    subjects: list[tuple[str, str | None, dict | None]] = []
    if args.run:
        enc, recipe = best_searched(args.run)
        subjects.append(("adelaide", enc, recipe["space"]))
    elif args.encoding:
        recipe = yaml.safe_load((common.ROOT / "recipes" / "camvid_adelaide_ea.yml").read_text())
        from nascli.config import Recipe

        space = Recipe.model_validate({"space": recipe.get("space", {})}).space.model_dump()
        subjects.append(("adelaide", args.encoding, space))
    subjects += [(b, None, None) for b in BASELINES]
    peaks = matmul_peak_gmacs(args.threads)
    peak = peaks["roof"]
    rows = []
    for name, enc, space in subjects:
        torch.manual_seed(0)
        model = build(name, args.num_classes, enc, space).eval()
        macs = count_macs(model, size)
        eager, ort = [], []
        for _ in range(args.repeats):
            eager.append(torch_latency(model, size, threads=args.threads, warmup=10, runs=args.runs,
                                       min_seconds=args.min_seconds))
            ort.append(onnxruntime_latency(model, size, threads=args.threads, warmup=10, runs=args.runs,
                                           min_seconds=args.min_seconds))
        e_med = statistics.median(r["median_ms"] for r in eager)
        o_med = statistics.median(r["median_ms"] for r in ort)
        rows.append({
            "model": f"searched {enc}" if enc else name, "params (M)": count_params(model) / 1e6, "GMACs": macs / 1e9,
            "eager median ms": e_med, "eager p90 ms": statistics.median(r["p90_ms"] for r in eager),
            "ORT median ms": o_med, "ORT p90 ms": statistics.median(r["p90_ms"] for r in ort),
            "ORT speed-up": e_med / o_med, "eager GMAC/s": macs / 1e9 / (e_med / 1e3),
            "ORT GMAC/s": macs / 1e9 / (o_med / 1e3), "ORT % of peak": 100 * macs / 1e9 / (o_med / 1e3) / peak,
        })
        print(rows[-1], file=sys.stderr, flush=True)
    result = {**head, "settings": {"size": args.size, "batch": 1, "threads": args.threads, "runs": args.runs,
                                   "min_seconds": args.min_seconds, "repeats": args.repeats, "quick": args.quick},
              "matmul_peak_gmacs": peaks, "rows": rows}
    name = "b2_quick" if args.quick else "b2"
    common.save_json(name, result)
    md = [f"### B2: inference latency{' (quick)' if args.quick else ''}",
          f"`{head['command']}` — {head['date']}  ",
          f"Machine: {common.machine_line(head['machine'])}  ",
          f"Settings: {args.size}, batch 1, {args.threads} threads (PyTorch intra-op = onnxruntime intra-op), "
          f"warm-up 10, >= {args.runs} runs and >= {args.min_seconds} s per measurement, median of {args.repeats} "
          f"measurements; random weights. Roof: fp32 2048x2048 matmul, the faster of PyTorch "
          f"({peaks['torch']:.1f} GMAC/s) and ONNX Runtime ({peaks['onnxruntime']:.1f}): **{peak:.1f} GMAC/s**.", "",
          common.table(rows, list(rows[0])), "",
          f"ONNX Runtime is faster than eager PyTorch by {min(r['ORT speed-up'] for r in rows):.2f}x to "
          f"{max(r['ORT speed-up'] for r in rows):.2f}x on these models."]
    if any(r["ORT % of peak"] > 100 for r in rows):
        md += ["", "Over 100% of peak means the nominal MAC count includes work the runtime skips: torch's flop "
                   "counter counts every tap of a dilated conv, but deeplabv3's ASPP convs (dilation 12/24/36 on a "
                   "23x30 map at this size) have most taps in the zero padding, which oneDNN and ONNX Runtime do "
                   "not compute."]
    common.write_section(name, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
