"""One-stage detectors on nascli's MobileNetV2 encoder, and torchvision's SSDlite behind the same interface.

`Detector` = MobileNetV2 taps at strides 8/16/32 (`nascli.zoo.backbones`, so `pretrain-backbone`'s
encoder weights load into `.encoder`) -> neck (`FPN` or `BiFPN`, P3-P7) -> a dense head made of
torchvision's blocks: `RetinaNetHead` (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017)
or `FCOSHead` (Tian et al., "FCOS", ICCV 2019), `AnchorGenerator`, the heads' box coders and
`batched_nms`. torchvision's `GeneralizedRCNNTransform` is left out: the data layer already resizes
and normalises, and export wants a plain graph. Every model here has the same three calls:

- `forward(images) -> raw`: a dict of tensors concatenated over the levels, `cls_logits [B, A, C]`,
  `bbox_regression [B, A, 4]` and, for FCOS, `bbox_ctrness [B, A, 1]` (`model.raw_names` is the order
  the ONNX graph emits them in). Nothing data-dependent: this is what is exported.
- `loss(raw, targets, image_size) -> dict of losses`: the torchvision detector class's own matching and
  `compute_loss` (called as plain functions on this module), with anchors for `image_size`.
- `decode(raw, image_size, ...) -> [dict(boxes, scores, labels)]`: `decode_detections` below, the one
  post-processing used by PyTorch eval and ONNX eval alike (it takes numpy arrays too).

Anchors depend only on the input size (`anchors(image_size)`, cached): pyramid level sizes come from
`necks.level_sizes` (every stride-2 step rounds up), not from running the network.

Which head by default: RetinaNet. One training step, MobileNetV2 + 64-channel FPN, 256x256, batch 4,
1 thread, the same 4-conv GroupNorm tower in both heads (`bench/det_step.py`, BENCHMARKS.md; a shared
2-core machine at load 3-7, so upper bounds): the two cost the same within noise (FCOS over RetinaNet
0.93-1.02 across three runs; 0.90 s vs 0.87 s median in the recorded one), and torchvision's FCOS
against torchvision's RetinaNet with its default, unnormalised head was 1.03. SPEC 3.6's 3-4x gap was
not reproduced; torchvision's transform upsizing to its default min_size=800 would explain it (an FCOS
step on 320x320 inputs: 5.7 s at the default, 0.97 s with min_size=320, one-off), unconfirmed. With
speed no argument, RetinaNet's anchors, focal loss and box coder are EfficientDet's own head, so the
compound-scaling search scales the detector the paper describes. FCOS stays selectable (`head="fcos"`).

SSDlite (`ssdlite320_mobilenet_v3_large`, Liu et al. SSD 2016 / Howard et al. MobileNetV3 2019):
torchvision's model with `weights=None, weights_backbone=None`, its backbone, head, default boxes, box
coder, matcher, hard-negative-mining loss and post-processing, minus its transform. SSD counts
background as class 0, so it is built with `num_classes + 1` and labels are shifted by one inside
`loss` and `decode`; callers see 0..C-1 like every other detector. Its transform would have fed it
[0, 1] images normalised with mean = std = 0.5; here it gets the data layer's normalisation (random
weights either way).
"""

from __future__ import annotations

import math
from types import MethodType, SimpleNamespace
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOS, FCOSHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNet, RetinaNetHead
from torchvision.models.detection.ssd import SSD

from nascli.zoo.backbones import FeatureInfo, MobileNetV2Encoder
from nascli.zoo.necks import LEVELS, BiFPN, FPN, level_sizes

HEADS = ("retinanet", "fcos")
HEAD_CONVS = ("full", "separable")
HEAD_NORMS = ("group", "batch")
BOX_LOSSES = ("l1", "smooth_l1", "giou", "diou", "ciou")  # torchvision's `_box_loss` kinds
NECKS = ("fpn", "bifpn")
DEFAULT_HEAD = "retinanet"
ENCODER_TAPS = (1, 2, 3)  # MobileNetV2 taps at strides 8, 16, 32


def norm_groups(channels: int, most: int = 32) -> int:
    """The most GroupNorm groups (up to `most`) that divide `channels` with at least 2 channels each
    (one channel per group cannot normalise a 1x1 level): 64 -> 32, 88 -> 22, 120 -> 30, 16 -> 8."""
    return max(g for g in range(1, most + 1) if channels % g == 0 and channels // g >= 2 or g == 1)


def _tower_convs(channels: int, depth: int, conv: str) -> list[nn.Module]:
    """`depth` 3x3 convs, full or depthwise-separable, initialised as torchvision's heads do (N(0, 0.01), bias 0).

    `conv="separable"`: each 3x3 conv is depthwise 3x3 then pointwise 1x1 (EfficientDet's class and box
    nets, google/automl `separable_conv=True`), about channels/9 of the full conv's MACs; the pointwise
    conv gets the N(0, 0.01) init.
    """
    if conv not in HEAD_CONVS:
        raise ValueError(f"head conv must be one of {', '.join(HEAD_CONVS)}, got {conv!r}")
    convs: list[nn.Module] = []
    for _ in range(depth):
        if conv == "full":
            mix = nn.Conv2d(channels, channels, 3, padding=1)
            convs.append(mix)
        else:
            mix = nn.Conv2d(channels, channels, 1)
            convs.append(nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False), mix))
        nn.init.normal_(mix.weight, std=0.01)
        nn.init.constant_(mix.bias, 0)
    return convs


def _tower(channels: int, depth: int, conv: str = "full") -> nn.Sequential:
    """`depth` x (3x3 conv, GroupNorm, ReLU), the same module applied to every level (torchvision's heads).

    GroupNorm with `norm_groups(channels)` groups: torchvision's 32 need widths divisible by 32, and
    compound-scaled widths (88, 120) are only multiples of 8. (The layer layout, a flat Sequential with
    the separable conv's two convs side by side, is what earlier checkpoints hold.)
    """
    layers: list[nn.Module] = []
    for c in _tower_convs(channels, depth, conv):
        layers += [*(c if isinstance(c, nn.Sequential) else [c]), nn.GroupNorm(norm_groups(channels), channels), nn.ReLU()]
    return nn.Sequential(*layers)


class LevelTower(nn.Module):
    """`depth` x (3x3 conv, BatchNorm, ReLU) with the convs shared by every pyramid level and one BatchNorm
    per level and conv: EfficientDet's class/box nets (google/automl keeps a BN per level because feature
    statistics differ from level to level). BatchNorm folds into the convs at export, where GroupNorm
    costs about a third of a small head's ONNX Runtime time (BENCHMARKS.md, BCCD)."""

    def __init__(self, channels: int, depth: int, conv: str, levels: int):
        super().__init__()
        self.convs = nn.ModuleList(_tower_convs(channels, depth, conv))
        self.norms = nn.ModuleList(nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(levels)) for _ in range(depth))

    def forward(self, x: torch.Tensor, level: int) -> torch.Tensor:
        for conv, norms in zip(self.convs, self.norms):
            x = torch.relu(norms[level](conv(x)))
        return x


def retinanet_anchor_generator(strides: Sequence[int], anchor_scale: float = 4.0) -> AnchorGenerator:
    """RetinaNet's 9 anchors per location: sizes `anchor_scale * stride * 2^(k/3)`, ratios 0.5, 1, 2."""
    sizes = tuple(tuple(anchor_scale * s * 2 ** (k / 3) for k in range(3)) for s in strides)
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(strides))


class Detector(nn.Module):
    """MobileNetV2 encoder (`backbone_width`: its width multiplier) -> FPN or BiFPN (P3-P7, `width`
    channels) -> RetinaNet or FCOS head (`head_conv`: the towers' full or depthwise-separable convs;
    `head_norm`: torchvision's shared GroupNorm towers or EfficientDet's per-level BatchNorm;
    `box_loss`: the RetinaNet head's box regression loss, torchvision's default L1 on encoded deltas or
    an IoU loss on decoded boxes)."""

    def __init__(self, *, num_classes: int, neck: str = "fpn", width: int = 64, neck_repeats: int = 3,
                 fusion: str = "fast", head: str = DEFAULT_HEAD, head_depth: int = 4, anchor_scale: float = 4.0,
                 backbone_width: float = 1.0, head_conv: str = "full", head_norm: str = "group",
                 box_loss: str = "l1"):
        super().__init__()
        if neck not in NECKS:
            raise ValueError(f"neck must be one of {', '.join(NECKS)}, got {neck!r}")
        if head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
        if head_norm not in HEAD_NORMS:
            raise ValueError(f"head_norm must be one of {', '.join(HEAD_NORMS)}, got {head_norm!r}")
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"box_loss must be one of {', '.join(BOX_LOSSES)}, got {box_loss!r}")
        if num_classes < 1 or width < 8 or head_depth < 1:
            raise ValueError(f"need num_classes >= 1, width >= 8, head_depth >= 1; got {num_classes}, {width}, {head_depth}")
        self.num_classes, self.head_kind = num_classes, head
        self.encoder = MobileNetV2Encoder(taps=ENCODER_TAPS, width_mult=backbone_width)
        in_channels = [self.encoder.feature_info[t].channels for t in ENCODER_TAPS]
        self.neck = (FPN(in_channels, width) if neck == "fpn"
                     else BiFPN(in_channels, width, repeats=neck_repeats, fusion=fusion))
        self.out_channels = width
        self.strides = tuple(2 ** lv for lv in LEVELS)
        self.feature_info = tuple(FeatureInfo(width, s, -1) for s in self.strides)  # module: not an encoder tap
        if head == "retinanet":
            self.anchor_generator = retinanet_anchor_generator(self.strides, anchor_scale)
            self.head = RetinaNetHead(width, self.anchor_generator.num_anchors_per_location()[0], num_classes)
            self.proposal_matcher = det_utils.Matcher(0.5, 0.4, allow_low_quality_matches=True)
            self.box_coder = det_utils.BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
            self.head.regression_head._loss_type = box_loss
            self.raw_names: tuple[str, ...] = ("cls_logits", "bbox_regression")
        else:
            if box_loss != "l1":
                raise ValueError("box_loss applies to the RetinaNet head; FCOS's is GIoU already")
            # FCOS: one "anchor" per location, as big as its stride (torchvision's FCOS default).
            self.anchor_generator = AnchorGenerator(tuple((s,) for s in self.strides), ((1.0,),) * len(self.strides))
            self.head = FCOSHead(width, 1, num_classes, num_convs=0)  # towers below: its GroupNorm(32) needs width % 32
            self.center_sampling_radius = 1.5
            self.box_coder = det_utils.BoxLinearCoder(normalize_by_size=True)
            self.raw_names = ("cls_logits", "bbox_regression", "bbox_ctrness")
        # Per-level towers run before the head's parts (whose own `conv` is then the identity).
        self.level_towers = (nn.ModuleDict({"cls": LevelTower(width, head_depth, head_conv, len(LEVELS)),
                                            "box": LevelTower(width, head_depth, head_conv, len(LEVELS))})
                             if head_norm == "batch" else None)
        for part in (self.head.classification_head, self.head.regression_head):
            part.conv = _tower(width, head_depth, head_conv) if head_norm == "group" else nn.Identity()
            # torchvision's RetinaNet heads rename `conv.{2i}.*` keys of "version 1" state dicts on load, and a
            # state dict saved as a plain dict has no version: our towers' keys must load as they are.
            part._load_from_state_dict = MethodType(nn.Module._load_from_state_dict, part)
        self._anchors: dict[tuple[int, int], list[torch.Tensor]] = {}

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        taps = self.encoder(images)
        return list(self.neck([taps[t] for t in ENCODER_TAPS]).values())

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.features(images)
        if self.level_towers is None:
            out = self.head(feats)
        else:
            cls, box = self.level_towers["cls"], self.level_towers["box"]
            out = {"cls_logits": self.head.classification_head([cls(f, i) for i, f in enumerate(feats)])}
            reg = self.head.regression_head([box(f, i) for i, f in enumerate(feats)])
            if self.head_kind == "fcos":
                out["bbox_regression"], out["bbox_ctrness"] = reg
            else:
                out["bbox_regression"] = reg
        return {k: out[k] for k in self.raw_names}

    def level_sizes(self, image_size: Sequence[int]) -> list[tuple[int, int]]:
        return level_sizes(image_size, LEVELS)

    def anchors(self, image_size: Sequence[int]) -> list[torch.Tensor]:
        """Anchors (xyxy, input pixels) per level for one image of `image_size`, levels P3..P7."""
        key = (int(image_size[0]), int(image_size[1]))
        if key not in self._anchors:
            gen = self.anchor_generator
            gen.set_cell_anchors(torch.float32, torch.device("cpu"))
            strides = [[torch.tensor(s), torch.tensor(s)] for s in self.strides]
            self._anchors[key] = gen.grid_anchors([list(s) for s in self.level_sizes(key)], strides)
        return self._anchors[key]

    def loss(self, raw: Mapping[str, torch.Tensor], targets: Sequence[Mapping[str, Any]],
             image_size: Sequence[int]) -> dict[str, torch.Tensor]:
        """The head's losses (torchvision's matching and compute_loss) for targets in input pixels."""
        per_level = self.anchors(image_size)
        device = raw["cls_logits"].device
        anchors = [torch.cat(per_level).to(device)] * len(targets)
        targets = [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets]
        if self.head_kind == "retinanet":
            return RetinaNet.compute_loss(self, targets, dict(raw), anchors)
        counts = [a.shape[0] for a in per_level]
        return FCOS.compute_loss(self, targets, dict(raw), anchors, counts)

    def decode(self, raw, image_size: Sequence[int], **kwargs) -> list[dict[str, torch.Tensor]]:
        return decode_detections(self, raw, image_size, **kwargs)


class SSDliteDetector(nn.Module):
    """torchvision's `ssdlite320_mobilenet_v3_large` (random weights) with raw outputs, loss and decode."""

    # Its six feature maps: the stride-16 expansion and stride-32 output of MobileNetV3, then four
    # extra stride-2 blocks (all rounding up like the rest).
    STRIDES = (16, 32, 64, 128, 256, 512)

    def __init__(self, *, num_classes: int):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"need num_classes >= 1, got {num_classes}")
        ssd: SSD = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=num_classes + 1)
        self.num_classes, self.head_kind = num_classes, "ssd"
        self.backbone, self.head, self.anchor_generator = ssd.backbone, ssd.head, ssd.anchor_generator
        self.box_coder, self.proposal_matcher = ssd.box_coder, ssd.proposal_matcher
        self.neg_to_pos_ratio = ssd.neg_to_pos_ratio
        self.raw_names = ("cls_logits", "bbox_regression")
        channels = det_utils.retrieve_out_channels(self.backbone, (320, 320))
        self.out_channels = tuple(channels)
        self.strides = self.STRIDES
        self.feature_info = tuple(FeatureInfo(c, s, -1) for c, s in zip(channels, self.STRIDES))
        self._anchors: dict[tuple[int, int], list[torch.Tensor]] = {}

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        return list(self.backbone(images).values())

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.head(self.features(images))
        return {k: out[k] for k in self.raw_names}

    def level_sizes(self, image_size: Sequence[int]) -> list[tuple[int, int]]:
        return level_sizes(image_size, [int(math.log2(s)) for s in self.STRIDES])

    def anchors(self, image_size: Sequence[int]) -> list[torch.Tensor]:
        """SSD's default boxes (xyxy, input pixels), all levels in one tensor (a one-item list)."""
        key = (int(image_size[0]), int(image_size[1]))
        if key not in self._anchors:
            # DefaultBoxGenerator reads only shapes: empty stand-ins for the image and feature maps.
            images = ImageList(torch.empty(1, 3, *key), [key])
            maps = [torch.empty(1, 0, h, w) for h, w in self.level_sizes(key)]
            self._anchors[key] = [self.anchor_generator(images, maps)[0]]
        return self._anchors[key]

    def loss(self, raw: Mapping[str, torch.Tensor], targets: Sequence[Mapping[str, Any]],
             image_size: Sequence[int]) -> dict[str, torch.Tensor]:
        device = raw["cls_logits"].device
        anchors = self.anchors(image_size)[0].to(device)
        shifted, matched = [], []
        for t in targets:
            boxes = t["boxes"].to(device)
            shifted.append({"boxes": boxes, "labels": t["labels"].to(device) + 1})  # 0 is background
            if boxes.numel() == 0:
                matched.append(torch.full((anchors.shape[0],), -1, dtype=torch.int64, device=device))
            else:
                matched.append(self.proposal_matcher(torchvision.ops.box_iou(boxes, anchors)))
        return SSD.compute_loss(self, shifted, dict(raw), [anchors] * len(targets), matched)

    def decode(self, raw, image_size: Sequence[int], **kwargs) -> list[dict[str, torch.Tensor]]:
        return decode_detections(self, raw, image_size, **kwargs)


def _as_tensors(model: nn.Module, raw) -> dict[str, torch.Tensor]:
    """Raw outputs as float CPU tensors by name, from a dict or from ONNX Runtime's list (in raw_names order)."""
    if not isinstance(raw, Mapping):
        raw = dict(zip(model.raw_names, raw))
    out = {}
    for name in model.raw_names:
        v = raw[name]
        out[name] = (torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v).detach().float().cpu()
    return out


@torch.no_grad()
def decode_detections(model: nn.Module, raw, image_size: Sequence[int], *, score_thresh: float = 0.05,
                      nms_thresh: float = 0.5, detections_per_img: int = 100,
                      topk_candidates: int = 1000) -> list[dict[str, torch.Tensor]]:
    """Boxes (xyxy in input pixels, clipped to `image_size`), scores and labels (0..C-1) per image.

    `raw` is `model(images)` or ONNX Runtime's outputs for the same graph (a list in `model.raw_names`
    order, or a dict; numpy or torch). The post-processing is the torchvision detector class's own
    `postprocess_detections` (score threshold, top-k candidates per level, box decoding, clipping,
    class-wise `batched_nms`, at most `detections_per_img`), run on the CPU with this model's anchors,
    so PyTorch and ONNX evaluation decode identically.
    """
    raw = _as_tensors(model, raw)
    size = (int(image_size[0]), int(image_size[1]))
    batch = raw["cls_logits"].shape[0]
    settings = SimpleNamespace(box_coder=model.box_coder, score_thresh=score_thresh, nms_thresh=nms_thresh,
                               detections_per_img=detections_per_img, topk_candidates=topk_candidates)
    per_level = model.anchors(size)
    counts = [a.shape[0] for a in per_level]
    if sum(counts) != raw["cls_logits"].shape[1]:
        raise ValueError(f"raw outputs have {raw['cls_logits'].shape[1]} anchors, an input of {size[0]}x{size[1]} "
                         f"has {sum(counts)}: decode with the input size the network ran at")
    if model.head_kind == "ssd":
        dets = SSD.postprocess_detections(settings, raw, [per_level[0]] * batch, [size] * batch)
        return [{**d, "labels": d["labels"] - 1} for d in dets]
    split = {k: list(v.split(counts, dim=1)) for k, v in raw.items()}
    post = RetinaNet.postprocess_detections if model.head_kind == "retinanet" else FCOS.postprocess_detections
    return post(settings, split, [per_level] * batch, [size] * batch)


# --- registry builders (keyword-only; `nascli.zoo.registry` maps names to them) ---------------------------
def mobilenetv2_fpn(*, num_classes: int, width: int = 64, head: str = DEFAULT_HEAD, head_depth: int = 4,
                    anchor_scale: float = 4.0) -> Detector:
    """MobileNetV2 + FPN + RetinaNet head: torchvision's RetinaNet recipe on our encoder (4 head convs)."""
    return Detector(num_classes=num_classes, neck="fpn", width=width, head=head, head_depth=head_depth,
                    anchor_scale=anchor_scale)


def mobilenetv2_bifpn(*, num_classes: int, width: int = 64, neck_repeats: int = 3, fusion: str = "fast",
                      head: str = DEFAULT_HEAD, head_depth: int = 3, anchor_scale: float = 4.0) -> Detector:
    """MobileNetV2 + BiFPN at EfficientDet-D0's neck and head sizes (64 channels, 3 blocks, 3 head convs)."""
    return Detector(num_classes=num_classes, neck="bifpn", width=width, neck_repeats=neck_repeats, fusion=fusion,
                    head=head, head_depth=head_depth, anchor_scale=anchor_scale)


def efficientdet(*, num_classes: int, width: int = 64, neck_repeats: int = 3, head_depth: int = 3,
                 fusion: str = "fast", head: str = DEFAULT_HEAD, anchor_scale: float = 4.0,
                 backbone_width: float = 1.0, head_conv: str = "full", head_norm: str = "group",
                 box_loss: str = "l1") -> Detector:
    """The compound-scaled detector: kwargs from `nascli.spaces.efficientdet.efficientdet_kwargs(encoding)`."""
    return Detector(num_classes=num_classes, neck="bifpn", width=width, neck_repeats=neck_repeats, fusion=fusion,
                    head=head, head_depth=head_depth, anchor_scale=anchor_scale, backbone_width=backbone_width,
                    head_conv=head_conv, head_norm=head_norm, box_loss=box_loss)


def ssdlite320_mobilenet_v3_large(*, num_classes: int) -> SSDliteDetector:
    """torchvision's SSDlite320 MobileNetV3-Large, random weights, behind the detectors' interface."""
    return SSDliteDetector(num_classes=num_classes)
