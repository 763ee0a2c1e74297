"""Detection necks: encoder taps C3-C5 in, pyramid levels P3-P7 (strides 8..128) out (SPEC 3.6).

Both necks take the list of taps at strides 8, 16 and 32 and return an `OrderedDict` `p3`..`p7` of
`out_channels` channels each: the contract torchvision's detection heads (and a searched neck) meet.
Every stride-2 step in the network rounds up (3x3 stride-2 convs with padding 1, 3x3 stride-2 max-pools
with padding 1), so level l of an H x W input is ceil(H / 2^l) x ceil(W / 2^l): `level_sizes` gives them
from the input size alone, which is how the anchors are laid out without running the network.

- `FPN`: torchvision's `FeaturePyramidNetwork` with `LastLevelP6P7` (P6 from P5, as RetinaNet v1);
  Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017.
- `BiFPN`: Tan, Pang and Le, "EfficientDet: Scalable and Efficient Object Detection", CVPR 2020. One
  block is a top-down pass then a bottom-up pass over P3-P7; the top level has no top-down node and the
  bottom level's top-down node is its output (the "nodes with one input removed"), the bottom-up nodes
  of P4-P6 also read their level's block input (the same-level skip edges), blocks repeat `repeats`
  times. Node = fuse its inputs, swish, depthwise-separable 3x3 conv, BN: the order of the official
  implementation (google/automl efficientdet, `fpn_cells` / `SeparableConv2D` then batch norm).
  Resampling: 1x1 conv + BN where the channels change (the taps, P6), 3x3 stride-2 max-pool down,
  nearest up. Fusion (`fast` by default): `fast` w = ReLU(w) / (sum ReLU(w) + 1e-4), `softmax`
  w = softmax(w), `sum` plain addition (what D6-D7 fall back to). Each node has its own input weights,
  initialised to 1.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

LEVELS = (3, 4, 5, 6, 7)
FUSIONS = ("fast", "softmax", "sum")
FAST_EPS = 1e-4


def level_sizes(image_size: Sequence[int], levels: Sequence[int] = LEVELS) -> list[tuple[int, int]]:
    """(h, w) of each pyramid level for an input of `image_size`: halved and rounded up per stride 2."""
    h, w = int(image_size[0]), int(image_size[1])
    out, level = [], 0
    for target in levels:
        while level < target:
            h, w, level = math.ceil(h / 2), math.ceil(w / 2), level + 1
        out.append((h, w))
    return out


def _names(levels: Sequence[int] = LEVELS) -> list[str]:
    return [f"p{level}" for level in levels]


class FPN(nn.Module):
    """torchvision's FPN over C3-C5 plus P6/P7 from P5: five levels of `out_channels` channels."""

    def __init__(self, in_channels: Sequence[int], out_channels: int):
        super().__init__()
        self.out_channels = out_channels
        self.fpn = FeaturePyramidNetwork(list(in_channels), out_channels,
                                         extra_blocks=LastLevelP6P7(out_channels, out_channels))

    def forward(self, taps: Sequence[torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
        outs = self.fpn(OrderedDict((n, t) for n, t in zip(_names(), taps)))
        return OrderedDict(zip(_names(), outs.values()))


class Fusion(nn.Module):
    """Weighted sum of same-shape inputs, one learnable weight per input (EfficientDet eq. 2 / 3)."""

    def __init__(self, num_inputs: int, mode: str = "fast"):
        super().__init__()
        if mode not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {mode!r}")
        self.mode = mode
        self.weight = nn.Parameter(torch.ones(num_inputs)) if mode != "sum" else None

    def normalised_weights(self) -> torch.Tensor:
        if self.weight is None:
            return torch.ones(1)
        if self.mode == "softmax":
            return torch.softmax(self.weight, dim=0)
        w = F.relu(self.weight)
        return w / (w.sum() + FAST_EPS)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.weight is None:
            return torch.stack(list(inputs)).sum(0)
        w = self.normalised_weights()
        out = inputs[0] * w[0]
        for i in range(1, len(inputs)):
            out = out + inputs[i] * w[i]
        return out


class SeparableConvBN(nn.Sequential):
    """Depthwise 3x3 then pointwise 1x1, then BN (EfficientDet's node conv)."""

    def __init__(self, channels: int):
        super().__init__(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1, bias=True),
            nn.BatchNorm2d(channels, momentum=0.01, eps=1e-3),
        )


class Node(nn.Module):
    """One BiFPN node: fuse its (already resampled) inputs, swish, separable conv + BN."""

    def __init__(self, channels: int, num_inputs: int, fusion: str):
        super().__init__()
        self.fuse = Fusion(num_inputs, fusion)
        self.conv = SeparableConvBN(channels)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.conv(F.silu(self.fuse(inputs)))


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="nearest")


def _down(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class BiFPNBlock(nn.Module):
    """One top-down + bottom-up pass over five levels (index 0 = P3 .. 4 = P7).

    `td[i]` for levels 1..3 (P4-P6) fuses (input i, up(td or input i+1)); the P3 output fuses
    (input 0, up(td 1)). `bu[i]` for levels 1..3 fuses (input i, td i, down(out i-1)); P7's output
    fuses (input 4, down(out 3)). `edges()` lists the structure for tests and docs.
    """

    def __init__(self, channels: int, fusion: str = "fast"):
        super().__init__()
        n = len(LEVELS)
        self.td = nn.ModuleDict({str(i): Node(channels, 2, fusion) for i in range(1, n - 1)})
        self.out_first = Node(channels, 2, fusion)  # P3: top-down and output at once
        self.bu = nn.ModuleDict({str(i): Node(channels, 3, fusion) for i in range(1, n - 1)})
        self.out_last = Node(channels, 2, fusion)  # P7: no top-down node above it

    @staticmethod
    def edges() -> list[tuple[str, tuple[str, ...]]]:
        """(node, its inputs) in evaluation order; `in3` = block input P3, `td4` = P4's top-down node, ..."""
        out: list[tuple[str, tuple[str, ...]]] = []
        above = "in7"
        for lv in (6, 5, 4):
            out.append((f"td{lv}", (f"in{lv}", above)))
            above = f"td{lv}"
        out.append(("out3", ("in3", "td4")))
        below = "out3"
        for lv in (4, 5, 6):
            out.append((f"out{lv}", (f"in{lv}", f"td{lv}", below)))
            below = f"out{lv}"
        out.append(("out7", ("in7", below)))
        return out

    def forward(self, x: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        n = len(x)
        td: dict[int, torch.Tensor] = {}
        above = x[n - 1]
        for i in range(n - 2, 0, -1):
            td[i] = self.td[str(i)]([x[i], _up(above, x[i])])
            above = td[i]
        outs = [self.out_first([x[0], _up(above, x[0])])]
        for i in range(1, n - 1):
            outs.append(self.bu[str(i)]([x[i], td[i], _down(outs[-1])]))
        outs.append(self.out_last([x[n - 1], _down(outs[-1])]))
        return outs


def _project(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=True), nn.BatchNorm2d(c_out, momentum=0.01, eps=1e-3))


class BiFPN(nn.Module):
    """C3-C5 projected to `out_channels` (1x1 conv + BN), P6 = down(1x1 conv + BN of C5), P7 = down(P6),
    then `repeats` BiFPN blocks."""

    def __init__(self, in_channels: Sequence[int], out_channels: int, repeats: int = 3, fusion: str = "fast"):
        super().__init__()
        if len(in_channels) != 3:
            raise ValueError(f"BiFPN takes the three taps C3-C5, got {len(in_channels)} channel counts")
        if repeats < 1:
            raise ValueError(f"BiFPN needs at least one block, got repeats={repeats}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        self.out_channels, self.fusion = out_channels, fusion
        self.lateral = nn.ModuleList(_project(c, out_channels) for c in in_channels)
        self.p6 = _project(in_channels[-1], out_channels)
        self.blocks = nn.ModuleList(BiFPNBlock(out_channels, fusion) for _ in range(repeats))

    def forward(self, taps: Sequence[torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
        feats = [proj(t) for proj, t in zip(self.lateral, taps)]
        p6 = _down(self.p6(taps[-1]))
        feats += [p6, _down(p6)]
        for block in self.blocks:
            feats = block(feats)
        return OrderedDict(zip(_names(), feats))
