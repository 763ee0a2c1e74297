"""The decoder operator vocabulary (SPEC 3.1): name -> constructor(channels, sep_repeats).

Every op keeps channels and spatial size (stride 1). Convs have no bias (BN follows), BN is affine,
and there is no ReLU before an op; each ends in BN -> ReLU (conv1x1_gate then scales by a gate in 0..1).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(c_in: int, c_out: int, k: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k - 1) // 2
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise conv (same parameters as nn.Conv2d, so checkpoints and export are unchanged) whose
    dilated form trains through space-to-batch.

    A dilation-d conv equals an undilated conv applied to each of the d*d interleaved sub-grids of the
    input (zero padding makes this exact). On CPU, PyTorch's dilated depthwise backward is slow (measured
    1.3-2.2x slower at stride 4 of 180x240, batch 16); the rearranged form is not. Inference keeps the
    direct dilated conv, which is the faster there and what ONNX exports.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.dilation[0]
        if not self.training or d == 1:
            return super().forward(x)
        n, c, h, w = x.shape
        ph, pw = (-h) % d, (-w) % d
        hh, ww = (h + ph) // d, (w + pw) // d
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        x = F.pad(x, (0, pw, 0, ph)).reshape(n, c, hh, d, ww, d).permute(0, 3, 5, 1, 2, 4).reshape(n * d * d, c, hh, ww)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = F.conv2d(x, self.weight, padding=(self.kernel_size[0] - 1) // 2, groups=self.groups)
        y = y.reshape(n, d, d, c, hh, ww).permute(0, 3, 4, 1, 5, 2).reshape(n, c, hh * d, ww * d)
        return y[:, :, :h, :w]


def sep_conv(c: int, k: int, dilation: int = 1, repeats: int = 1) -> nn.Sequential:
    """[depthwise kxk (dilated) -> pointwise 1x1 -> BN -> ReLU] x repeats."""
    pad = dilation * (k - 1) // 2
    layers: list[nn.Module] = []
    for _ in range(repeats):
        layers += [
            DepthwiseConv2d(c, c, k, padding=pad, dilation=dilation, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class GlobalContextGate(nn.Module):
    """conv 1x1 -> BN -> ReLU, scaled per channel by sigmoid(conv 1x1 of the global average pool): the
    context branch of LR-ASPP (Howard et al., ICCV 2019). Not in SPEC's list: no other op sees past its
    receptive field, and the hand-designed head it comes from is what searched decoders are judged against."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = conv_bn_relu(c, c, 1)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, 1, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.gate(x)


OpBuilder = Callable[[int, int], nn.Module]

OPS: dict[str, OpBuilder] = {
    "conv1x1": lambda c, r: conv_bn_relu(c, c, 1),
    "conv3x3": lambda c, r: conv_bn_relu(c, c, 3),
    "conv3x3_dil3": lambda c, r: conv_bn_relu(c, c, 3, dilation=3),
    "conv3x3_dil12": lambda c, r: conv_bn_relu(c, c, 3, dilation=12),
    "sep_conv_3x3": lambda c, r: sep_conv(c, 3, 1, r),
    "sep_conv_5x5": lambda c, r: sep_conv(c, 5, 1, r),
    "sep_conv_3x3_dil3": lambda c, r: sep_conv(c, 3, 3, r),
    "sep_conv_5x5_dil6": lambda c, r: sep_conv(c, 5, 6, r),
    "conv1x1_gate": lambda c, r: GlobalContextGate(c),
}


def make_op(name: str, channels: int, sep_repeats: int = 1) -> nn.Module:
    return OPS[name](channels, sep_repeats)
