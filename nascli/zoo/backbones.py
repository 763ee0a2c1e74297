"""Encoders with their feature taps declared as data (channels and stride per tap, timm's feature_info).

MobileNetV2 (Sandler et al., CVPR 2018) from torchvision, width 1.0, `features[0:18]`; taps after
`features[3]`, `[6]`, `[13]`, `[17]`: 24, 32, 96, 320 channels at strides 4, 8, 16, 32 (SPEC 3.1).
Other widths (torchvision's `width_mult`, e.g. 0.5: 16, 16, 48, 160 channels) are for detectors whose
search scales the backbone; pretrained encoders exist only at width 1.0.
Parameter names stay torchvision's (`features.N.*`), so a torchvision state dict loads as is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision
from torch import nn


@dataclass(frozen=True)
class FeatureInfo:
    channels: int
    stride: int
    module: int  # index into `features` whose output is the tap


MOBILENET_V2_TAPS = (FeatureInfo(24, 4, 3), FeatureInfo(32, 8, 6), FeatureInfo(96, 16, 13), FeatureInfo(320, 32, 17))


class MobileNetV2Encoder(nn.Module):
    """MobileNetV2 features returning the four taps; `taps` limits which are computed.

    Layers past the deepest requested tap are not built, so a decoder that never reads the stride-32
    tap does not pay for it (in MACs, parameters, latency or export).
    """

    feature_info = MOBILENET_V2_TAPS

    def __init__(self, taps: tuple[int, ...] | list[int] = (0, 1, 2, 3), width_mult: float = 1.0):
        super().__init__()
        if not taps or not set(taps) <= set(range(len(self.feature_info))):
            raise ValueError(f"taps must be a non-empty subset of 0..{len(self.feature_info) - 1}, got {taps}")
        self.taps = tuple(sorted(set(taps)))
        self.width_mult = float(width_mult)
        last = self.feature_info[self.taps[-1]].module
        full = torchvision.models.mobilenet_v2(weights=None, width_mult=self.width_mult)
        if self.width_mult != 1.0:  # an instance attribute: the class's stays width 1.0's
            self.feature_info = tuple(FeatureInfo(full.features[f.module].out_channels, f.stride, f.module)
                                      for f in MOBILENET_V2_TAPS)
        self.features = full.features[: last + 1]
        self._tap_at = {self.feature_info[t].module: t for t in self.taps}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor | None]:
        outs: list[torch.Tensor | None] = [None] * len(self.feature_info)
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._tap_at:
                outs[self._tap_at[i]] = x
        return outs


def takes_encoder_weights(encoder: nn.Module) -> bool:
    """Whether saved encoder weights (pretrain-backbone's, a search's) fit: they exist only at width 1.0."""
    return getattr(encoder, "width_mult", 1.0) == 1.0


def encoder_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the `features.0`..`features.17` entries of a torchvision MobileNetV2 (or encoder) state dict."""
    out = {}
    for k, v in state.items():
        k = k.removeprefix("encoder.")
        if k.startswith("features."):
            idx = int(k.split(".")[1])
            if idx <= MOBILENET_V2_TAPS[-1].module:
                out[k] = v
    return out


def load_encoder_weights(encoder: MobileNetV2Encoder, state: dict[str, torch.Tensor]) -> None:
    """Load encoder weights, ignoring layers this (possibly truncated) encoder does not have."""
    own = encoder.state_dict()
    state = {k: v for k, v in encoder_state_dict(state).items() if k in own}
    missing = [k for k in own if k not in state]
    if missing:
        raise KeyError(f"encoder weights lack {len(missing)} entries, e.g. {missing[0]}")
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise KeyError(f"encoder weight {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
    encoder.load_state_dict(state)
