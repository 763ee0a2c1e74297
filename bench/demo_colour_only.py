"""How far colour alone gets on the demo data: a per-pixel classifier (an MLP on each pixel's RGB, as 1x1
convolutions, so it sees no neighbour) trained on every training pixel, scored on the validation list.

The demo data is meant to need context (nascli.data.demo); this is the number the demo's trained model
should clearly beat. Seeded, one thread.

    python bench/demo_colour_only.py data/demo          # the folder `nascli data demo` wrote
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nascli.data.listfile import load_image, load_mask, read_list
from nascli.engine.metrics import ConfusionMatrix


def _stack(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    samples = read_list(root / f"{split}.txt", root)
    images = np.stack([load_image(s.image) for s in samples]).astype(np.float32) / 255
    masks = np.stack([load_mask(s.mask) for s in samples]).astype(np.int64)
    return torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(masks)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(1)
    classes = (a.data / "classes.txt").read_text().split()
    x_train, y_train = _stack(a.data, "train")
    x_val, y_val = _stack(a.data, "val")
    net = nn.Sequential(nn.Conv2d(3, 64, 1), nn.ReLU(), nn.Conv2d(64, 64, 1), nn.ReLU(), nn.Conv2d(64, len(classes), 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(a.steps):
        i = torch.randint(0, len(x_train), (32,))
        loss = nn.functional.cross_entropy(net(x_train[i]), y_train[i], ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
    cm = ConfusionMatrix(len(classes), 255)
    with torch.no_grad():
        cm.update(net(x_val).argmax(1), y_val)
    m = cm.compute()
    print(f"colour only (per-pixel MLP, {a.steps} steps): val mIoU {m['miou']:.4f}, pixel acc {m['pixel_acc']:.4f}")
    for name, iou in zip(classes, m["iou"]):
        print(f"  {name:12s} IoU {iou if iou is not None else float('nan'):.4f}")


if __name__ == "__main__":
    main()
