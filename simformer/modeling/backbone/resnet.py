"""ResNet-50/101 with torchvision module names and FrozenBatchNorm2d everywhere.

Names follow torchvision (``conv1``, ``bn1``, ``layer1..layer4``; blocks with
``conv1/bn1/conv2/bn2/conv3/bn3/downsample.0/downsample.1``) so that a torchvision state dict loads
without renaming; detectron2/caffe2 names are mapped in ``weights.py``.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .base import BACKBONE_REGISTRY, Backbone, FrozenBatchNorm2d

__all__ = ["Bottleneck", "ResNet", "RESNET_DEPTHS"]

# Bottleneck blocks per stage (res2..res5).
RESNET_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck with a projection shortcut when shape changes.

    ``x [B, in_ch, H, W] -> [B, out_ch, ceil(H/stride), ceil(W/stride)]``. The stride sits in the
    3x3 conv (torchvision, ``stride_in_1x1=False``) or in the first 1x1 conv (MSRA/caffe2).
    """

    def __init__(self, *, in_channels: int, bottleneck_channels: int, out_channels: int, stride: int,
                 stride_in_1x1: bool):
        super().__init__()
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(in_channels, bottleneck_channels, 1, stride=s1, bias=False)
        self.bn1 = FrozenBatchNorm2d(bottleneck_channels)
        self.conv2 = nn.Conv2d(bottleneck_channels, bottleneck_channels, 3, stride=s3, padding=1, bias=False)
        self.bn2 = FrozenBatchNorm2d(bottleneck_channels)
        self.conv3 = nn.Conv2d(bottleneck_channels, out_channels, 1, bias=False)
        self.bn3 = FrozenBatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                FrozenBatchNorm2d(out_channels),
            )
        else:
            self.downsample = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNet(Backbone):
    """Bottleneck ResNet trunk (no classifier). ``forward(x [B,3,H,W])`` returns
    res2 [B,256,H/4,W/4], res3 [B,512,H/8,W/8], res4 [B,1024,H/16,W/16], res5 [B,2048,H/32,W/32].
    """

    def __init__(self, *, depth: int = 50, stride_in_1x1: bool = False, stage_blocks: Sequence[int] | None = None):
        super().__init__()
        if stage_blocks is None:
            if depth not in RESNET_DEPTHS:
                raise ValueError(f"ResNet depth must be one of {sorted(RESNET_DEPTHS)}, got {depth}.")
            stage_blocks = RESNET_DEPTHS[depth]
        if len(stage_blocks) != 4 or min(stage_blocks) < 1:
            raise ValueError(f"stage_blocks must list 4 positive block counts, got {stage_blocks}.")
        self.depth = depth
        self.stride_in_1x1 = stride_in_1x1
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = FrozenBatchNorm2d(64)
        in_ch = 64
        self.out_channels, self.out_strides = {}, {}
        for i, n in enumerate(stage_blocks):
            width = 64 * 2 ** i
            out_ch = width * 4
            blocks = [
                Bottleneck(in_channels=in_ch if b == 0 else out_ch, bottleneck_channels=width,
                           out_channels=out_ch, stride=(1 if i == 0 else 2) if b == 0 else 1,
                           stride_in_1x1=stride_in_1x1)
                for b in range(n)
            ]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.out_channels[f"res{i + 2}"] = out_ch
            self.out_strides[f"res{i + 2}"] = 2 ** (i + 2)
            in_ch = out_ch
        self._init_weights()

    def stage_modules(self) -> List[List[nn.Module]]:
        return [[self.conv1, self.bn1], [self.layer1], [self.layer2], [self.layer3], [self.layer4]]

    def forward(self, x: torch.Tensor) -> dict:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"ResNet expects x of shape [B, 3, H, W], got {tuple(x.shape)}.")
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        out = {}
        for i, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4)):
            x = layer(x)
            out[f"res{i + 2}"] = x
        return out


# fvcore registers under the function name, which is therefore the MODEL.BACKBONE.NAME value.
@BACKBONE_REGISTRY.register()
def resnet50(cfg) -> ResNet:
    return ResNet(depth=50, stride_in_1x1=bool(cfg.MODEL.RESNETS.STRIDE_IN_1X1))


@BACKBONE_REGISTRY.register()
def resnet101(cfg) -> ResNet:
    return ResNet(depth=101, stride_in_1x1=bool(cfg.MODEL.RESNETS.STRIDE_IN_1X1))
