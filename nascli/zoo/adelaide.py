"""Adelaide / Fast-NAS decoder on a MobileNetV2 encoder (SPEC 3.1).

Nekrasov et al., "Fast Neural Architecture Search of Compact Semantic Segmentation Models via Auxiliary
Cells", CVPR 2019 (arXiv 1810.10804); the evolutionary variant is Vega's SEGMENTATION-Adelaide-EA-NAS.

Decoder features 0..3 are the encoder taps projected to `agg_size` channels; merge cell j fuses two
decoder features into feature 4 + j; the head concatenates (or sums) the merge outputs no later merge
consumed and predicts `num_classes` logits at the input size.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nascli.spaces.adelaide import AdelaideSpace, Arch
from nascli.zoo.backbones import MobileNetV2Encoder
from nascli.zoo.ops import conv_bn_relu, make_op


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class Cell(nn.Module):
    """The searched cell: f1 = op1(x), three nodes of two ops each, output = sum of the loose ends."""

    def __init__(self, arch: Arch, op_names: Sequence[str], channels: int, sep_repeats: int = 1):
        super().__init__()
        self.op1 = make_op(op_names[arch.op1], channels, sep_repeats)
        self.node_ops = nn.ModuleList(
            nn.ModuleList(make_op(op_names[o], channels, sep_repeats) for o in node.ops) for node in arch.nodes
        )
        self.node_inputs = [node.inputs for node in arch.nodes]
        self.outputs = arch.cell_outputs()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = [x, self.op1(x)]
        for (ia, ib), (op_a, op_b) in zip(self.node_inputs, self.node_ops):
            a, b = op_a(f[ia]), op_b(f[ib])
            f += [a, b, a + b]
        out = f[self.outputs[0]]
        for i in self.outputs[1:]:
            out = out + f[i]
        return out


class MergeCell(nn.Module):
    """Two separately-weighted copies of the cell, one per input, conv1x1-BN-ReLU each, coarser resized
    (bilinear) to the finer, then added."""

    def __init__(self, arch: Arch, op_names: Sequence[str], channels: int, sep_repeats: int = 1):
        super().__init__()
        self.cell_a = Cell(arch, op_names, channels, sep_repeats)
        self.cell_b = Cell(arch, op_names, channels, sep_repeats)
        self.proj_a = conv_bn_relu(channels, channels, 1)
        self.proj_b = conv_bn_relu(channels, channels, 1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a = self.proj_a(self.cell_a(a))
        b = self.proj_b(self.cell_b(b))
        size = max(a.shape[-2:], b.shape[-2:], key=lambda s: s[0] * s[1])
        return _resize(a, size) + _resize(b, size)


class Head(nn.Module):
    """Merge outputs resized to the finest, concatenated (or summed), ReLU, conv1x1-BN-ReLU, conv3x3 -> logits."""

    def __init__(self, num_inputs: int, channels: int, num_classes: int, concat: bool = True):
        super().__init__()
        self.concat = concat
        self.proj = conv_bn_relu(channels * num_inputs if concat else channels, channels, 1)
        self.classifier = nn.Conv2d(channels, num_classes, 3, padding=1, bias=True)

    def forward(self, feats: list[torch.Tensor], out_size: Sequence[int] | None) -> torch.Tensor:
        """Logits at `out_size`, or at the finest merge output's size when `out_size` is None."""
        size = max((f.shape[-2:] for f in feats), key=lambda s: s[0] * s[1])
        feats = [_resize(f, size) for f in feats]
        x = torch.cat(feats, dim=1) if self.concat else torch.stack(feats).sum(0)
        x = self.classifier(self.proj(F.relu(x)))
        return x if out_size is None else _resize(x, out_size)


class AdelaideDecoder(nn.Module):
    """Everything after the encoder: tap projections, three merge cells, head."""

    def __init__(self, arch: Arch, in_channels: Sequence[int], num_classes: int, op_names: Sequence[str],
                 agg_size: int = 64, agg_concat: bool = True, sep_repeats: int = 1):
        super().__init__()
        self.taps = arch.used_taps()
        # Only taps some merge reads get a projection: an unread tap would be dead weight in the count.
        self.adapters = nn.ModuleDict({str(t): conv_bn_relu(in_channels[t], agg_size, 1) for t in self.taps})
        self.merges = nn.ModuleList(MergeCell(arch, op_names, agg_size, sep_repeats) for _ in arch.merges)
        self.merge_inputs = [tuple(m) for m in arch.merges]
        self.head_inputs = arch.head_inputs()
        self.head = Head(len(self.head_inputs), agg_size, num_classes, agg_concat)

    def forward(self, taps: Sequence[torch.Tensor | None], out_size: Sequence[int] | None) -> torch.Tensor:
        """Logits at `out_size` (None: at the decoder's own finest resolution)."""
        f: list[torch.Tensor | None] = [None] * len(taps)
        for t in self.taps:
            f[t] = self.adapters[str(t)](taps[t])
        for (a, b), merge in zip(self.merge_inputs, self.merges):
            f.append(merge(f[a], f[b]))
        return self.head([f[i] for i in self.head_inputs], out_size)


class SegmentationNet(nn.Module):
    """encoder -> decoder -> logits N x classes x H x W at the input size."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x), x.shape[-2:])


def build_adelaide(*, encoding: str, num_classes: int, op_names: Sequence[str], agg_size: int = 64,
                   agg_concat: bool = True, sep_repeats: int = 1) -> SegmentationNet:
    """The network an Adelaide encoding describes (the encoder is truncated after the deepest tap it reads)."""
    arch = AdelaideSpace(op_names).decode(encoding)
    encoder = MobileNetV2Encoder(taps=arch.used_taps())
    in_channels = [fi.channels for fi in encoder.feature_info]
    decoder = AdelaideDecoder(arch, in_channels, num_classes, op_names, agg_size, agg_concat, sep_repeats)
    return SegmentationNet(encoder, decoder)
