"""Auxiliary cells for Fast-NAS training (SPEC 3.2): intermediate supervision on every merge block.

Nekrasov et al., "Fast Neural Architecture Search of Compact Semantic Segmentation Models via Auxiliary
Cells", CVPR 2019 (arXiv 1810.10804). Each merge block's output gets an auxiliary head: a copy of the
searched cell (its own weights) and a conv3x3 classifier. The heads exist only during training: they live
in `AuxiliaryDecoder`, a wrapper around the plain `AdelaideDecoder`, so the model that is counted, saved
and exported is the decoder alone and never carries an auxiliary weight.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from nascli.spaces.adelaide import Arch
from nascli.zoo.adelaide import AdelaideDecoder, Cell


class AuxiliaryCell(nn.Module):
    """A copy of the searched cell followed by a conv3x3 classifier (logits at the merge's resolution)."""

    def __init__(self, arch: Arch, op_names: Sequence[str], channels: int, num_classes: int, sep_repeats: int = 1):
        super().__init__()
        self.cell = Cell(arch, op_names, channels, sep_repeats)
        self.classifier = nn.Conv2d(channels, num_classes, 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.cell(x))


class AuxiliaryDecoder(nn.Module):
    """Training-only wrapper: `forward` returns (logits, [auxiliary logits, one per merge block]).

    The merge outputs are taken with forward hooks registered for the duration of one call, so the
    wrapped decoder's code and state dict stay exactly those of the inference model.
    """

    def __init__(self, decoder: AdelaideDecoder, arch: Arch, op_names: Sequence[str], channels: int,
                 num_classes: int, sep_repeats: int = 1, auxiliary: bool = True):
        super().__init__()
        self.decoder = decoder
        heads = len(decoder.merges) if auxiliary else 0
        self.aux = nn.ModuleList(AuxiliaryCell(arch, op_names, channels, num_classes, sep_repeats)
                                 for _ in range(heads))

    def forward(self, taps: Sequence[torch.Tensor | None],
                out_size: Sequence[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if not self.aux:
            return self.decoder(taps, out_size), []
        merged: list[torch.Tensor] = []
        handles = [m.register_forward_hook(lambda _m, _inp, out: merged.append(out)) for m in self.decoder.merges]
        try:
            logits = self.decoder(taps, out_size)
        finally:
            for h in handles:
                h.remove()
        return logits, [head(f) for head, f in zip(self.aux, merged)]

    def auxiliary_parameters(self) -> list[nn.Parameter]:
        return list(self.aux.parameters())
