"""Model cost: parameters and multiply-accumulates (MACs) at a stated input size.

MACs come from `torch.utils.flop_counter` (it counts convolutions and matrix products; FLOPs = 2 x MACs);
BN, ReLU, additions and resizes are not counted, as is the convention for MAC figures.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_size: tuple[int, int], batch: int = 1) -> int:
    """MACs of one forward pass of `model` (in eval mode) on a batch of `batch` RGB images of `input_size`."""
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(batch, 3, *input_size, device=next(model.parameters()).device)
        with FlopCounterMode(display=False) as counter:
            model(x)
        return int(counter.get_total_flops()) // 2
    finally:
        model.train(was_training)
