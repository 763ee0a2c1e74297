"""One detection training step: our Detector's RetinaNet- vs FCOS-style heads, and each against
torchvision's own `RetinaNet` / `FCOS` class on the same backbone, neck, head and input (the ratio).

MobileNetV2 + 64-channel FPN (P3-P7), 4 head convs with GroupNorm, random weights, SGD, synthetic
images and 3 boxes per image; plus torchvision's RetinaNet with its default head (no normalisation), to
see where the FCOS / RetinaNet gap of torchvision's defaults comes from. torchvision's class gets the same modules (a deep copy) and its own
`GeneralizedRCNNTransform` with min_size = max_size = the input side, so it does not rescale. The four
models are timed round-robin (one step each per round) so that a change in machine load hits all of
them alike; the figure is the median over rounds, the ratio the median of per-round ratios.

    python bench/det_step.py --size 256 --batch 4 --rounds 8 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402

from nascli.zoo.detectors import Detector  # noqa: E402


class _Backbone(nn.Module):
    """Our encoder + neck as torchvision detectors want it: an OrderedDict of levels and `out_channels`."""

    def __init__(self, det: Detector):
        super().__init__()
        self.encoder, self.neck, self.out_channels = det.encoder, det.neck, det.out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        taps = self.encoder(x)
        return self.neck([taps[1], taps[2], taps[3]])


def torchvision_twin(det: Detector, size: int) -> nn.Module:
    from torchvision.models.detection import FCOS, RetinaNet

    det = copy.deepcopy(det)
    cls = RetinaNet if det.head_kind == "retinanet" else FCOS
    return cls(_Backbone(det), det.num_classes, min_size=size, max_size=size,
               anchor_generator=det.anchor_generator, head=det.head)


def torchvision_default_retinanet(det: Detector, size: int) -> nn.Module:
    """torchvision's RetinaNet with its own default head (v1: 4 convs, no normalisation), our anchors."""
    from torchvision.models.detection import RetinaNet

    det = copy.deepcopy(det)
    return RetinaNet(_Backbone(det), det.num_classes, min_size=size, max_size=size,
                     anchor_generator=det.anchor_generator)


def batch(size: int, n: int, num_classes: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=g)
    targets = []
    for _ in range(n):
        xy = torch.rand(3, 2, generator=g) * size * 0.6
        wh = 16 + torch.rand(3, 2, generator=g) * size * 0.35
        targets.append({"boxes": torch.cat([xy, (xy + wh).clamp(max=size)], 1),
                        "labels": torch.randint(0, num_classes, (3,), generator=g)})
    return images, targets


def step_ours(model: Detector, opt, images, targets) -> None:
    losses = model.loss(model(images), targets, images.shape[-2:])
    opt.zero_grad()
    sum(losses.values()).backward()
    opt.step()


def step_torchvision(model: nn.Module, opt, images, targets) -> None:
    losses = model(list(images), targets)
    opt.zero_grad()
    sum(losses.values()).backward()
    opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md and results/ alone")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    num_classes = 3
    images, targets = batch(args.size, args.batch, num_classes, seed=0)
    models = {}
    for head in ("retinanet", "fcos"):
        ours = Detector(num_classes=num_classes, neck="fpn", width=64, head=head, head_depth=4).train()
        theirs = torchvision_twin(ours, args.size).train()
        models[f"ours {head}"] = (ours, step_ours)
        models[f"torchvision {head}"] = (theirs, step_torchvision)
        if head == "retinanet":
            models["torchvision retinanet, default head (no norm)"] = (
                torchvision_default_retinanet(ours, args.size).train(), step_torchvision)
    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for k, (m, _) in models.items()}
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {k: [] for k in models}
    for r in range(args.warmup + args.rounds):
        for k, (m, step) in models.items():
            t = time.perf_counter()
            step(m, opts[k], images, targets)
            if r >= args.warmup:
                times[k].append(time.perf_counter() - t)
    rows = []
    for k, ts in times.items():
        rows.append({"model": k, "median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts)})
    ratios = {h: statistics.median(o / t for o, t in zip(times[f"ours {h}"], times[f"torchvision {h}"]))
              for h in ("retinanet", "fcos")}
    fcos_vs_retina = statistics.median(f / r for f, r in zip(times["ours fcos"], times["ours retinanet"]))
    norm_cost = statistics.median(f / r for f, r in zip(times["torchvision fcos"],
                                                        times["torchvision retinanet, default head (no norm)"]))
    result = {**common.header("det_step"), "settings": vars(args), "load_before": load_before,
              "load_after": os.getloadavg(), "rows": rows, "ours_over_torchvision": ratios,
              "fcos_over_retinanet": fcos_vs_retina,
              "tv_fcos_over_tv_default_retinanet": norm_cost}
    print(common.table(rows, ["model", "median_s", "min_s", "max_s"]))
    print("ours / torchvision (median of per-round ratios):", {k: round(v, 3) for k, v in ratios.items()})
    print("fcos / retinanet (ours):", round(fcos_vs_retina, 3), " torchvision fcos / default retinanet:",
          round(norm_cost, 3), " load", load_before, "->", result["load_after"])
    if not args.no_write:
        common.save_json("det_step", result)
        common.write_section("det_step", markdown(result))


def markdown(r: dict) -> str:
    s = r["settings"]
    return f"""## Detection: one training step, RetinaNet vs FCOS head, ours vs torchvision's class

`{r['command']}` ({r['date']}). MobileNetV2 + 64-channel FPN, 4 GroupNorm head convs, {s['size']}x{s['size']},
batch {s['batch']}, {s['threads']} thread(s), SGD, random weights; median of {s['rounds']} round-robin rounds after
{s['warmup']} warm-up rounds. Machine: {common.machine_line(r['machine'])}. Shared by several engineers: load
average {r['load_before'][0]:.2f} before, {r['load_after'][0]:.2f} after, so these are upper bounds.

{common.table(r['rows'], ['model', 'median_s', 'min_s', 'max_s'])}

Ours over torchvision's class (same modules, same input; median of per-round ratios): RetinaNet
{r['ours_over_torchvision']['retinanet']:.3f}, FCOS {r['ours_over_torchvision']['fcos']:.3f}. FCOS step over RetinaNet
step (ours, same tower): {r['fcos_over_retinanet']:.3f}. torchvision's FCOS (GroupNorm tower) over torchvision's
RetinaNet with its default head (no normalisation): {r['tv_fcos_over_tv_default_retinanet']:.3f}, the comparison
behind SPEC 3.6's earlier figure.
"""


if __name__ == "__main__":
    main()
