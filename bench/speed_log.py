"""The speed changes in candidate training, one at a time, with their measured effect.

One optimiser step of a candidate decoder on cached CamVid taps (180x240 crops, batch 16, the CamVid
recipe's space), for each encoding, adding one change at a time:

  baseline         NCHW, dilated depthwise convs run directly, loss at the label's resolution, fp32
  +channels_last   NHWC tensors: oneDNN's depthwise and 1x1 kernels are faster on them
  +space_to_batch  dilated depthwise convs trained through space-to-batch (nascli.zoo.ops)
  +loss_at_logits  cross-entropy on the decoder's stride-4 grid (= nascli's default)
  +bf16 autocast   on top of the default; kept only if faster (it needs AVX-512 BF16 or AMX)

Median of `--repeats` timed steps after warm-up steps, per encoding.

    python bench/speed_log.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from b1_candidate_cost import ENCODINGS  # noqa: E402

VARIANTS = ["baseline", "+channels_last", "+space_to_batch", "+loss_at_logits", "+bf16 autocast"]


def step_time(code: str, variant: int, taps, y, space: dict, repeats: int) -> float:
    import torch
    import torch.nn.functional as F
    from torch import nn

    from nascli.zoo.adelaide import build_adelaide
    from nascli.zoo.ops import DepthwiseConv2d

    channels_last, s2b, loss_logits, bf16 = (variant >= k for k in (1, 2, 3, 4))
    original = DepthwiseConv2d.forward
    if not s2b:
        DepthwiseConv2d.forward = nn.Conv2d.forward  # the direct dilated conv in training too
    try:
        torch.manual_seed(0)
        dec = build_adelaide(encoding=code, num_classes=11, **space).decoder.train()
        t_in = list(taps)
        if channels_last:
            dec = dec.to(memory_format=torch.channels_last)
            t_in = [t.contiguous(memory_format=torch.channels_last) if t is not None else None for t in taps]
        target = F.interpolate(y[:, None].float(), scale_factor=0.25, mode="nearest-exact")[:, 0].long() \
            if loss_logits else y
        opt = torch.optim.Adam(dec.parameters(), 1e-3)

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = dec(t_in, None if loss_logits else y.shape[-2:])
            loss = F.cross_entropy(out.float(), target)
            opt.zero_grad()
            loss.backward()
            opt.step()

        for _ in range(2):
            step()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
        return statistics.median(times)
    finally:
        DepthwiseConv2d.forward = original


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--encodings", nargs="+", default=ENCODINGS)
    args = p.parse_args()
    import torch

    from nascli.config import Recipe, read_yaml
    from nascli.zoo.backbones import MobileNetV2Encoder

    torch.set_num_threads(args.threads)
    recipe = Recipe.model_validate({"space": read_yaml(common.ROOT / "recipes" / "camvid_adelaide_ea.yml")["space"]})
    space = {k: v for k, v in recipe.space.model_dump().items() if k != "backbone"}
    head = common.header("speed_log")
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 180, 240), torch.randint(0, 11, (16, 180, 240))
    with torch.no_grad():
        taps = MobileNetV2Encoder().eval()(x)
    rows = []
    for code in args.encodings:
        row = {"encoding": code}
        for i, name in enumerate(VARIANTS):
            row[name] = step_time(code, i, taps, y, space, args.repeats)
        rows.append(row)
        print(row, file=sys.stderr, flush=True)
    totals = {name: sum(r[name] for r in rows) for name in VARIANTS}
    effect = [{"change": name, "seconds (sum over encodings)": totals[name],
               "vs previous": totals[VARIANTS[i - 1]] / totals[name] if i else None,
               "vs baseline": totals["baseline"] / totals[name]} for i, name in enumerate(VARIANTS)]
    common.save_json("speed_log", {**head, "settings": vars(args), "rows": rows, "effect": effect})
    md = ["### Speed changes in candidate training", f"`{head['command']}` — {head['date']}  ",
          f"Machine: {common.machine_line(head['machine'])}  ",
          f"One decoder training step (batch 16, 180x240, recipes/camvid_adelaide_ea.yml space), median of "
          f"{args.repeats} after 2 warm-up steps, seconds; each column adds one change to the one before.", "",
          common.table(rows, ["encoding", *VARIANTS]), "", common.table(effect, list(effect[0])), "",
          "Kept: channels_last, space-to-batch and loss on the stride-4 grid (nascli's default). bf16 autocast is "
          "kept only where it measures faster; this CPU has no AVX-512 BF16/AMX, so it is off."]
    common.write_section("speed_log", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
