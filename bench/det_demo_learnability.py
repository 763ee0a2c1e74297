"""Does a small detector learn the demo detection dataset on this CPU? (issue 19, the demo's sizing)

A stand-in detector until nascli's own (branch detmodel) lands: torchvision's RetinaNet on a random-init
MobileNetV2 (taps at strides 8/16/32) + a 64-channel FPN with P6/P7, anchors 10..254 px (the demo's
objects are 8..130 px), trained with the demo's own data layer (`DetectionDataset`, the bbox-aware
training transform at 160x160, scale 0.75..1.33) for a wall-clock budget, then scored on val with
torchmetrics' MeanAveragePrecision (faster-coco-eval backend). Prints the throughput and val mAP every
two epochs; writes bench/results/det_demo_learnability.json.

    python bench/det_demo_learnability.py --data data/det-demo --budget 900 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torchvision
from torchmetrics.detection import MeanAveragePrecision
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from nascli.config import DataConfig
from nascli.data.det_demo import make_detection_demo
from nascli.data.det_transforms import detection_eval_transform, detection_train_transform
from nascli.data.listfile import read_list
from nascli.data.voc import DetectionDataset, collate_detection

SIZE = (160, 160)


class Backbone(torch.nn.Module):
    """MobileNetV2 features at strides 8, 16, 32 -> FPN P3-P7 (the OrderedDict RetinaNet expects)."""

    def __init__(self, channels: int = 64):
        super().__init__()
        self.body = IntermediateLayerGetter(torchvision.models.mobilenet_v2(weights=None).features,
                                            {"6": "0", "13": "1", "17": "2"})
        self.fpn = FeaturePyramidNetwork([32, 96, 320], channels, extra_blocks=LastLevelP6P7(channels, channels))
        self.out_channels = channels

    def forward(self, x):
        return self.fpn(self.body(x))


def build(num_classes: int) -> RetinaNet:
    sizes = tuple((s, int(s * 1.26), int(s * 1.59)) for s in (10, 20, 40, 80, 160))
    return RetinaNet(Backbone(), num_classes=num_classes, min_size=SIZE[0], max_size=SIZE[1],
                     image_mean=[0, 0, 0], image_std=[1, 1, 1],  # the dataset has normalised already
                     anchor_generator=AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5))


def evaluate(model: RetinaNet, val: DetectionDataset) -> dict:
    model.eval()
    metric = MeanAveragePrecision(backend="faster_coco_eval", class_metrics=True)
    metric.warn_on_many_detections = False
    with torch.no_grad():
        for i in range(0, len(val), 16):
            images, targets = collate_detection([val[j] for j in range(i, min(i + 16, len(val)))])
            preds = model(list(images))
            metric.update([{k: p[k] for k in ("boxes", "scores", "labels")} for p in preds],
                          [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
    model.train()
    r = metric.compute()
    out = {k: round(float(r[k]), 4) for k in ("map", "map_50", "map_75", "map_small", "map_medium", "map_large")}
    out["map_per_class"] = [round(float(v), 4) for v in r["map_per_class"]]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("runs/det-demo-data"), help="demo folder (made when absent)")
    ap.add_argument("--budget", type=float, default=900, help="training seconds")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "det_demo_learnability.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if not (args.data / "train.txt").is_file():
        make_detection_demo(args.data, seed=0)
    names = (args.data / "classes.txt").read_text().split()
    cfg = DataConfig()
    cfg.augment.scale_min, cfg.augment.scale_max = 0.75, 1.33
    train = DetectionDataset(read_list(args.data / "train.txt", args.data), names,
                             detection_train_transform(cfg, SIZE), seed=0)
    val = DetectionDataset(read_list(args.data / "val.txt", args.data), names, detection_eval_transform(cfg, SIZE))
    loader = torch.utils.data.DataLoader(train, batch_size=8, shuffle=True, collate_fn=collate_detection,
                                         generator=torch.Generator().manual_seed(0))
    model = build(len(names))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    history, start, steps, seen, epoch = [], time.time(), 0, 0, 0
    while time.time() - start < args.budget:
        train.set_epoch(epoch)
        for images, targets in loader:
            losses = model(list(images), [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
            loss = sum(losses.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps, seen = steps + 1, seen + len(targets)
            if time.time() - start >= args.budget:
                break
        epoch += 1
        if epoch % 2 == 0:
            history.append({"epoch": epoch, "seconds": round(time.time() - start), "loss": round(loss.item(), 3),
                            **evaluate(model, val)})
            print(json.dumps(history[-1]), flush=True)
    seconds = time.time() - start
    result = {"steps": steps, "epochs": epoch, "train_seconds": round(seconds), "images_per_s": round(seen / seconds, 2),
              "threads": args.threads, "load_average": os.getloadavg(), "final": evaluate(model, val),
              "history": history}
    print(json.dumps(result), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
