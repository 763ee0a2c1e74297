"""Benchmark (not a test): Fast-NAS candidate rewards with Polyak averaging variants (issue 23, item 4).

Trains the same random encodings with nascli's ProgressiveEvaluator (stage 1 on cached features, stage 2
end to end, no early termination) on a CamVid subset with a random encoder (BN statistics measured on the
images), swapping only the Polyak update: `spec` (what nascli does: SPEC's decay from the first step),
`ramp` (decay min(decay, (1+t)/(10+t)), TensorFlow's num_updates warm-up, nascli's earlier choice),
`bias_corrected` (an average that starts at zero, divided by 1 - decay**t) and `none` (the last weights).

    .venv/bin/python bench/polyak_variants.py --encodings 4     # about 4 minutes (one thread)

Measured for issue 23 (2026-12-01, 1 thread): mean reward after stage 1 / stage 2 over 4 encodings:
spec 0.2244 / 0.2255, bias_corrected 0.2231 / 0.2242, none 0.2217 / 0.2227, ramp 0.2216 / 0.2231: gaps of a
few thousandths over 4 encodings, so the ramp is no better (not shown worse either).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from nascli.engine import progressive
from nascli.engine.loops import group_by_shape, recalibrate_bn
from nascli.spaces.adelaide import AdelaideSpace
from nascli.steps.common import datasets, load_recipe, resolve_data
from nascli.steps.search import make_evaluator
from nascli.zoo.backbones import MobileNetV2Encoder

REPO = Path(__file__).resolve().parents[1]
CAMVID = REPO.parent / "shared" / "data" / "camvid"
SPEC_UPDATE, SPEC_INIT, SPEC_COPY = progressive.Polyak.update, progressive.Polyak.__init__, progressive.Polyak.copy_to


@torch.no_grad()
def ramp_update(self) -> None:
    d = min(self.decay, (1 + self.steps) / (10 + self.steps))
    for a, p in zip(self.avg, self.params):
        a.mul_(d).add_(p.detach(), alpha=1 - d)
    self.steps += 1


def zero_init(self, module, decay) -> None:
    SPEC_INIT(self, module, decay)
    for a in self.avg:
        a.zero_()


@torch.no_grad()
def corrected_copy(self) -> None:
    for a, p in zip(self.avg, self.params):
        p.copy_(a / (1 - self.decay ** self.steps))


VARIANTS = {"spec": (SPEC_INIT, SPEC_UPDATE, SPEC_COPY), "ramp": (SPEC_INIT, ramp_update, SPEC_COPY),
            "bias_corrected": (zero_init, SPEC_UPDATE, corrected_copy),
            "none": (SPEC_INIT, SPEC_UPDATE, lambda self: None)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, default=CAMVID)
    p.add_argument("--encodings", type=int, default=4)
    p.add_argument("--height", type=int, default=96)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "polyak_variants.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    d, h = args.data_root, args.height
    recipe = resolve_data(load_recipe(None, None, {
        "data.data_root": d, "data.train_list": d / "train.txt", "data.val_list": d / "val.txt",
        "data.input_size": [h, h * 4 // 3], "data.eval_scale": h / 360, "data.augment.scale_min": 0.9 * h / 360,
        "data.augment.scale_max": 1.5 * h / 360, "space.agg_size": 32, "search.algo": "fast-nas",
        "candidate.epochs": 2, "candidate.batch_size": 8, "fast_nas.stage2_epochs": 1}))
    train, val = datasets(recipe, augment_seed=0, max_train=args.images, max_val=args.images // 2)
    torch.manual_seed(1)
    encoder = MobileNetV2Encoder()
    recalibrate_bn(encoder, (x for x, _ in group_by_shape((train[i] for i in range(len(train))), 8)))
    evaluator = make_evaluator(recipe, train=train, val=val, encoder_state=encoder.state_dict())
    space = AdelaideSpace(recipe.space.op_names)
    rng = random.Random(0)
    codes = [space.canonical(space.sample(rng)) for _ in range(args.encodings)]
    results: dict = {"encodings": codes}
    for name, (init, update, copy) in VARIANTS.items():
        progressive.Polyak.__init__, progressive.Polyak.update, progressive.Polyak.copy_to = init, update, copy
        started = time.perf_counter()
        rows = [evaluator.train_and_eval(code, 0, None) for code in codes]
        s1, s2 = [r["reward_stage1"] for r in rows], [r["reward"] for r in rows]
        results[name] = {"stage1": s1, "stage2": s2}
        print(f"{name:15s} mean reward stage 1 {sum(s1) / len(s1):.4f}  stage 2 {sum(s2) / len(s2):.4f}  "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    progressive.Polyak.__init__, progressive.Polyak.update, progressive.Polyak.copy_to = SPEC_INIT, SPEC_UPDATE, SPEC_COPY
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
