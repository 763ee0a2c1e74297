"""The speed changes in candidate training, each measured against nascli's default.

One optimiser step of a candidate decoder on cached CamVid taps (180x240 crops, batch 16, the CamVid
recipe's space), for each encoding, in these variants:

  baseline              NCHW, dilated depthwise convs run directly, loss at the label's resolution, fp32
  default               what CandidateEvaluator does: space-to-batch for dilated depthwise convs in
                        training, loss on the decoder's stride-4 grid, and NHWC if CHANNELS_LAST is set
  memory format flipped the default with the other memory format (NHWC <-> NCHW)
  no space_to_batch     the default with dilated depthwise convs run directly
  loss at label size    the default with logits upsampled to the label before the loss
  + bf16 autocast       the default under CPU bf16 autocast (needs AVX-512 BF16 or AMX to pay off)

Each change is kept only if the default beats the variant without it; the verdicts below are computed
from the measurements. Median of `--repeats` timed steps after 2 warm-up steps, per encoding.

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


def variants(channels_last: bool) -> dict[str, dict]:
    default = {"channels_last": channels_last, "s2b": True, "loss_logits": True, "bf16": False}
    return {
        "baseline": {"channels_last": False, "s2b": False, "loss_logits": False, "bf16": False},
        "default": default,
        "memory format flipped": {**default, "channels_last": not channels_last},
        "no space_to_batch": {**default, "s2b": False},
        "loss at label size": {**default, "loss_logits": False},
        "+ bf16 autocast": {**default, "bf16": True},
    }


# change -> (its variant, what the default does)
CHANGES = {"memory format": "memory format flipped", "space_to_batch": "no space_to_batch",
           "loss on the stride-4 grid": "loss at label size", "bf16 autocast": "+ bf16 autocast"}


def step_time(code: str, v: dict, taps, y, space: dict, repeats: int) -> float:
    import torch
    import torch.nn.functional as F
    from torch import nn

    from nascli.zoo.adelaide import build_adelaide
    from nascli.zoo.ops import DepthwiseConv2d

    original = DepthwiseConv2d.forward
    if not v["s2b"]:
        DepthwiseConv2d.forward = nn.Conv2d.forward  # the direct dilated conv in training too
    try:
        torch.manual_seed(0)
        dec = build_adelaide(encoding=code, num_classes=11, **space).decoder.train()
        t_in = list(taps)
        if v["channels_last"]:
            dec = dec.to(memory_format=torch.channels_last)
            t_in = [t.contiguous(memory_format=torch.channels_last) if t is not None else None for t in taps]
        target = F.interpolate(y[:, None].float(), scale_factor=0.25, mode="nearest-exact")[:, 0].long() \
            if v["loss_logits"] else y
        opt = torch.optim.Adam(dec.parameters(), 1e-3)

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=v["bf16"]):
                out = dec(t_in, None if v["loss_logits"] else y.shape[-2:])
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


def verdicts(totals: dict[str, float], channels_last: bool) -> list[dict]:
    rows = []
    for change, variant in CHANGES.items():
        ratio = totals[variant] / totals["default"]  # > 1: the default is faster
        if change == "memory format":
            default_choice = "NHWC (channels_last)" if channels_last else "NCHW"
        else:
            default_choice = "off" if change == "bf16 autocast" else "on"
        rows.append({"change": change, "default": default_choice, "variant s / default s": ratio,
                     "verdict": "default is faster: keep it" if ratio > 1.0 else "variant is faster: revisit the default"})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--encodings", nargs="+", default=ENCODINGS)
    args = p.parse_args()
    import torch

    from nascli.config import Recipe, read_yaml
    from nascli.engine.evaluator import CHANNELS_LAST
    from nascli.zoo.backbones import MobileNetV2Encoder

    torch.set_num_threads(args.threads)
    recipe = Recipe.model_validate({"space": read_yaml(common.ROOT / "recipes" / "camvid_adelaide_ea.yml")["space"]})
    space = {k: v for k, v in recipe.space.model_dump().items() if k != "backbone"}
    head = common.header("speed_log")
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 180, 240), torch.randint(0, 11, (16, 180, 240))
    with torch.no_grad():
        taps = MobileNetV2Encoder().eval()(x)
    table = variants(CHANNELS_LAST)
    rows = []
    for code in args.encodings:
        row = {"encoding": code, **{name: step_time(code, v, taps, y, space, args.repeats) for name, v in table.items()}}
        rows.append(row)
        print(row, file=sys.stderr, flush=True)
    totals = {name: sum(r[name] for r in rows) for name in table}
    verdict = verdicts(totals, CHANNELS_LAST)
    common.save_json("speed_log", {**head, "settings": vars(args), "channels_last": CHANNELS_LAST, "rows": rows,
                                   "totals": totals, "verdicts": verdict})
    md = ["### Speed changes in candidate training", f"`{head['command']}` — {head['date']}  ",
          f"Machine: {common.machine_line(head['machine'])}  ",
          f"One decoder training step (batch 16, 180x240, recipes/camvid_adelaide_ea.yml space), median of "
          f"{args.repeats} after 2 warm-up steps, seconds. `default` is what the candidate evaluator does.", "",
          common.table(rows, ["encoding", *table]), "",
          f"Default vs baseline (sum over encodings): {totals['baseline'] / totals['default']:.2f}x faster.", "",
          common.table(verdict, list(verdict[0]))]
    common.write_section("speed_log", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
