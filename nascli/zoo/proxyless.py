"""The proxyless macro network (SPEC 3.3): stem -> searchable chain -> ASPP -> additive decoder -> classifier.

One class serves both roles: built with one op per layer it is the fixed network of an encoding; built
with every legal op per layer (`build_supernet`) it is the supernet, whose layers run the path set in
`ChainLayer.active`. The module names are the same in both (`backbone.N.ops.OPNAME...`), so a supernet's
weights restricted to one path load strictly into that path's fixed network (`subnet_state_dict`).

Ops, all without bias before BN:
- mb3/mb5: MobileNetV3 inverted residual (1x1 expand, hard-swish; depthwise kxk; torchvision's
  SqueezeExcitation with hard-sigmoid; 1x1 project);
- dil3/dil5: DARTS DilConv (ReLU, depthwise kxk dilation 2, 1x1, BN);
- sep3/sep5: DARTS SepConv (the ReLU-depthwise-pointwise-BN unit twice, the first with the stride);
- shuf: torchvision's ShuffleNetV2 InvertedResidual;
- skip: identity (legal only where the layer keeps the shape).
A layer that keeps its shape adds its input to the op's output (the residual of MobileNetV2/V3), except
for shuf, whose unit already passes half its channels through.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.shufflenetv2 import InvertedResidual as ShuffleUnit
from torchvision.ops import SqueezeExcitation

from nascli.spaces.proxyless import OPS, SKIP, ProxylessConfig, ProxylessSpace


def _bn_act(c: int, act: type[nn.Module] | None) -> list[nn.Module]:
    return [nn.BatchNorm2d(c)] + ([act(inplace=True)] if act is not None else [])


def _make_divisible(v: float, divisor: int = 8) -> int:
    return max(divisor, int(v + divisor / 2) // divisor * divisor)


def mbv3(c_in: int, c_out: int, stride: int, k: int, expansion: int) -> nn.Sequential:
    mid = c_in * expansion
    return nn.Sequential(
        nn.Conv2d(c_in, mid, 1, bias=False), *_bn_act(mid, nn.Hardswish),
        nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False), *_bn_act(mid, nn.Hardswish),
        SqueezeExcitation(mid, _make_divisible(mid // 4), scale_activation=nn.Hardsigmoid),
        nn.Conv2d(mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out))


def dil_conv(c_in: int, c_out: int, stride: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(c_in, c_in, k, stride, k - 1, dilation=2, groups=c_in, bias=False),
                         nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))


def sep_conv(c_in: int, c_out: int, stride: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ReLU(inplace=False), nn.Conv2d(c_in, c_in, k, stride, k // 2, groups=c_in, bias=False),
        nn.Conv2d(c_in, c_in, 1, bias=False), nn.BatchNorm2d(c_in),
        nn.ReLU(inplace=False), nn.Conv2d(c_in, c_in, k, 1, k // 2, groups=c_in, bias=False),
        nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))


def make_op(name: str, c_in: int, c_out: int, stride: int, expansion: int) -> nn.Module:
    if name == SKIP:
        return nn.Identity()
    if name in ("mb3", "mb5"):
        return mbv3(c_in, c_out, stride, int(name[-1]), expansion)
    if name in ("dil3", "dil5"):
        return dil_conv(c_in, c_out, stride, int(name[-1]))
    if name in ("sep3", "sep5"):
        return sep_conv(c_in, c_out, stride, int(name[-1]))
    if name == "shuf":
        return ShuffleUnit(c_in, c_out, stride)
    raise ValueError(f"unknown proxyless op {name!r}")


class ChainLayer(nn.Module):
    """One searchable layer holding one op (fixed network) or all its candidates (supernet)."""

    def __init__(self, candidates: Sequence[str], c_in: int, c_out: int, stride: int, expansion: int):
        super().__init__()
        self.candidates = tuple(candidates)
        self.ops = nn.ModuleDict({n: make_op(n, c_in, c_out, stride, expansion) for n in self.candidates})
        self.residual = stride == 1 and c_in == c_out
        self.active = 0  # index into candidates: the path this layer runs
        # Set for a supernet's architecture step: (candidate indices, gate values); the output is
        # sum_j gate_j * op_j(x), so gradients reach the gates (nascli.engine.supernet says how).
        self.gate: tuple[Sequence[int], torch.Tensor] | None = None

    def run_op(self, x: torch.Tensor, index: int) -> torch.Tensor:
        name = self.candidates[index]
        y = self.ops[name](x)
        return y + x if self.residual and name not in (SKIP, "shuf") else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            indices, gates = self.gate
            return sum(gates[j] * self.run_op(x, i) for j, i in enumerate(indices))
        return self.run_op(x, self.active)


class ASPP(nn.Module):
    """DeepLabV3's ASPP: 1x1, dilated 3x3s and image pooling, concatenated and projected."""

    def __init__(self, c_in: int, c_out: int, rates: Sequence[int]):
        super().__init__()
        self.branches = nn.ModuleList([nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), *_bn_act(c_out, nn.ReLU))]
                                      + [nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=r, dilation=r, bias=False),
                                                       *_bn_act(c_out, nn.ReLU)) for r in rates])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c_in, c_out, 1, bias=False), nn.ReLU(inplace=True))
        self.project = nn.Sequential(nn.Conv2d(c_out * (len(rates) + 2), c_out, 1, bias=False), *_bn_act(c_out, nn.ReLU))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(x).expand(-1, -1, x.shape[2], x.shape[3])  # a 1x1 map broadcast, not resized
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], 1))


class Decoder(nn.Module):
    """UNet-like: upsample and ADD the 1x1-projected stride-16/8/4 features (seed 001: add keeps it narrow)."""

    def __init__(self, skip_channels: Sequence[int], c_aspp: int, c_dec: int, num_classes: int):
        super().__init__()
        self.top = nn.Sequential(nn.Conv2d(c_aspp, c_dec, 1, bias=False), *_bn_act(c_dec, nn.ReLU))
        self.projections = nn.ModuleList([nn.Sequential(nn.Conv2d(c, c_dec, 1, bias=False), nn.BatchNorm2d(c_dec))
                                          for c in skip_channels])
        self.fuse = nn.ModuleList([nn.Sequential(nn.Conv2d(c_dec, c_dec, 3, padding=1, groups=c_dec, bias=False),
                                                 nn.Conv2d(c_dec, c_dec, 1, bias=False), *_bn_act(c_dec, nn.ReLU))
                                   for _ in skip_channels])
        self.classifier = nn.Conv2d(c_dec, num_classes, 1)

    def forward(self, deep: torch.Tensor, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self.top(deep)
        for proj, fuse, skip in zip(self.projections, self.fuse, skips):  # skips from stride 16 to stride 4
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = fuse(x + proj(skip))
        return self.classifier(x)


class ProxylessNet(nn.Module):
    """The macro network for given per-layer candidates (one each: a fixed network; all: the supernet)."""

    def __init__(self, space: ProxylessSpace, candidates: Sequence[Sequence[str]], num_classes: int, *,
                 expansion: int = 3, aspp_channels: int = 64, aspp_rates: Sequence[int] = (2, 4, 6),
                 decoder_channels: int = 48):
        super().__init__()
        self.space = space
        self.stem = nn.Sequential(nn.Conv2d(3, space.stem_channels, 3, 2, 1, bias=False),
                                  *_bn_act(space.stem_channels, nn.Hardswish))
        self.backbone = nn.ModuleList([ChainLayer(c, l.c_in, l.c_out, l.stride, expansion)
                                       for l, c in zip(space.layers, candidates)])
        ends, total = [], 0
        for d in space.depths:
            total += d
            ends.append(total - 1)
        self.stage_ends = ends  # the layers whose outputs are the stride 4, 8, 16, 32 features
        self.aspp = ASPP(space.widths[3], aspp_channels, aspp_rates)
        self.decoder = Decoder(space.widths[2::-1], aspp_channels, decoder_channels, num_classes)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        taps = []
        for i, layer in enumerate(self.backbone):
            x = layer(x)
            if i in self.stage_ends:
                taps.append(x)
        return taps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        s4, s8, s16, s32 = self.features(x)
        logits = self.decoder(self.aspp(s32), [s16, s8, s4])
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    def set_path(self, indices: Sequence[int]) -> None:
        for layer, i in zip(self.backbone, indices):
            layer.active = int(i)


def space_of(stem_channels: int, widths: Sequence[int], depths: Sequence[int], ops: Sequence[str]) -> ProxylessSpace:
    return ProxylessSpace(list(ops), list(widths), list(depths), stem_channels)


def build_proxyless(*, encoding: str, num_classes: int, ops: Sequence[str] = OPS,
                    widths: Sequence[int] = (24, 40, 80, 160), depths: Sequence[int] = (2, 3, 4, 3),
                    stem_channels: int = 16, expansion: int = 3, aspp_channels: int = 64,
                    aspp_rates: Sequence[int] = (2, 4, 6), decoder_channels: int = 48) -> ProxylessNet:
    """The fixed network of `encoding` (the registry's builder: a checkpoint rebuilds from these kwargs;
    the defaults are ProxylessConfig's)."""
    space = space_of(stem_channels, widths, depths, ops)
    choices = space.parse(encoding)
    return ProxylessNet(space, [[c] for c in choices], num_classes, expansion=expansion, aspp_channels=aspp_channels,
                        aspp_rates=aspp_rates, decoder_channels=decoder_channels)


def build_supernet(space: ProxylessSpace, num_classes: int, **kwargs) -> ProxylessNet:
    return ProxylessNet(space, [layer.choices for layer in space.layers], num_classes, **kwargs)


def subnet_state_dict(supernet: ProxylessNet, encoding: str) -> dict[str, torch.Tensor]:
    """The supernet's weights of one path, named as in that path's fixed network."""
    choices = supernet.space.parse(encoding)
    keep = {f"backbone.{i}.ops.{op}." for i, op in enumerate(choices)}
    return {k: v for k, v in supernet.state_dict().items()
            if not k.startswith("backbone.") or any(k.startswith(p) for p in keep)}


def model_kwargs(cfg: ProxylessConfig, encoding: str, num_classes: int) -> dict:
    """What a checkpoint stores to rebuild the fixed network of `encoding` (plain data only)."""
    return dict(encoding=encoding, num_classes=num_classes, ops=list(cfg.ops), widths=list(cfg.widths),
                depths=list(cfg.depths), stem_channels=cfg.stem_channels, expansion=cfg.expansion,
                aspp_channels=cfg.aspp_channels, aspp_rates=list(cfg.aspp_rates), decoder_channels=cfg.decoder_channels)


def supernet_kwargs(cfg: ProxylessConfig) -> dict:
    return dict(expansion=cfg.expansion, aspp_channels=cfg.aspp_channels, aspp_rates=list(cfg.aspp_rates),
                decoder_channels=cfg.decoder_channels)


# --- the latency table's entries (nascli.profile.lut) ----------------------------------------------
class _Head(nn.Module):
    """ASPP, decoder and the final resize: the fixed part after the backbone, timed as one entry."""

    def __init__(self, aspp: ASPP, decoder: Decoder, size: tuple[int, int]):
        super().__init__()
        self.aspp, self.decoder, self.size = aspp, decoder, size

    def forward(self, s32: torch.Tensor, s16: torch.Tensor, s8: torch.Tensor, s4: torch.Tensor) -> torch.Tensor:
        logits = self.decoder(self.aspp(s32), [s16, s8, s4])
        return F.interpolate(logits, size=self.size, mode="bilinear", align_corners=False)


def _down(hw: tuple[int, int]) -> tuple[int, int]:
    return (hw[0] + 1) // 2, (hw[1] + 1) // 2  # every stride-2 op here pads k // 2: ceil(size / 2)


def lut_layout(space: ProxylessSpace, input_size: tuple[int, int], num_classes: int, *, expansion: int = 3,
               aspp_channels: int = 64, aspp_rates: Sequence[int] = (2, 4, 6), decoder_channels: int = 48):
    """(per layer: one Entry or None (skip, 0 ms) per choice; the fixed entries: stem and head)."""
    from nascli.profile.lut import Entry, entry_key

    size = (int(input_size[0]), int(input_size[1]))
    hw = _down(size)
    stem = Entry(entry_key("stem", (3, *size), (space.stem_channels, *hw), 2),
                 lambda: nn.Sequential(nn.Conv2d(3, space.stem_channels, 3, 2, 1, bias=False),
                                       *_bn_act(space.stem_channels, nn.Hardswish)), ((1, 3, *size),))
    layers, taps = [], []
    for layer in space.layers:
        out_hw = _down(hw) if layer.stride == 2 else hw
        row = []
        for op in layer.choices:
            if op == SKIP:
                row.append(None)
                continue
            key = entry_key(op if expansion == 3 or not op.startswith("mb") else f"{op}e{expansion}",
                            (layer.c_in, *hw), (layer.c_out, *out_hw), layer.stride)
            row.append(Entry(key, lambda op=op, l=layer: ChainLayer([op], l.c_in, l.c_out, l.stride, expansion),
                             ((1, layer.c_in, *hw),)))
        layers.append(row)
        hw = out_hw
        if layer.index == space.depths[layer.stage] - 1:
            taps.append((layer.c_out, *hw))
    s4, s8, s16, s32 = taps
    head_key = (f"head aspp{aspp_channels}r{'-'.join(map(str, aspp_rates))} dec{decoder_channels} cls{num_classes} "
                + " ".join("x".join(map(str, t)) for t in (s32, s16, s8, s4)) + f" -> {size[0]}x{size[1]}")
    head = Entry(head_key, lambda: _Head(ASPP(space.widths[3], aspp_channels, aspp_rates),
                                         Decoder(space.widths[2::-1], aspp_channels, decoder_channels, num_classes),
                                         size), tuple((1, *t) for t in (s32, s16, s8, s4)))
    return layers, [stem, head]
