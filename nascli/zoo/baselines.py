"""Hand-designed baselines a practitioner would pick instead of searching (random init: no downloads).

- torchvision LR-ASPP MobileNetV3-Large (Howard et al., "Searching for MobileNetV3", ICCV 2019)
- torchvision DeepLabV3 MobileNetV3-Large (Chen et al., 2017, on the same backbone)
- MobileNetV2 + LR-ASPP head on nascli's own encoder (the searched models' encoder, so pretrained
  encoder weights from `pretrain-backbone` apply to it too)
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from torchvision.models.segmentation.lraspp import LRASPPHead

from nascli.zoo.adelaide import SegmentationNet, _resize
from nascli.zoo.backbones import MobileNetV2Encoder


class _OutOnly(nn.Module):
    """torchvision segmentation models return {'out': logits}; export and eval want the tensor."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def lraspp_mobilenet_v3_large(*, num_classes: int) -> nn.Module:
    return _OutOnly(torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=num_classes))


def deeplabv3_mobilenet_v3_large(*, num_classes: int) -> nn.Module:
    return _OutOnly(torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False))


class _LRASPPDecoder(nn.Module):
    """torchvision's LR-ASPP head on the stride-8 and stride-32 taps of our MobileNetV2 encoder."""

    def __init__(self, num_classes: int, low: int = 1, high: int = 3, inter_channels: int = 128):
        super().__init__()
        info = MobileNetV2Encoder.feature_info
        self.low, self.high = low, high
        self.head = LRASPPHead(info[low].channels, info[high].channels, num_classes, inter_channels)

    def forward(self, taps, out_size):
        return _resize(self.head({"low": taps[self.low], "high": taps[self.high]}), out_size)


def mobilenetv2_lraspp(*, num_classes: int) -> nn.Module:
    return SegmentationNet(MobileNetV2Encoder(taps=(1, 3)), _LRASPPDecoder(num_classes))
