"""Backbone registry, the common ``Backbone`` base class and FrozenBatchNorm2d (``build_backbone``
is in build.py, above the backbones that register here).

Every backbone maps a normalised image batch ``x [B, 3, H, W]`` to four feature maps
``{"res2", "res3", "res4", "res5"}`` at strides 4/8/16/32 (spatial size ``ceil(H / s)``), and
describes them with the dicts ``out_channels`` and ``out_strides``.
"""
from __future__ import annotations

from typing import Dict, List

import torch
from fvcore.common.registry import Registry
from torch import nn

__all__ = ["BACKBONE_REGISTRY", "Backbone", "FrozenBatchNorm2d", "OUT_FEATURES"]

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = """
Backbone builders: callables ``fn(cfg) -> Backbone`` registered under the name used in
MODEL.BACKBONE.NAME ("resnet50", "resnet101", "efficientnet_lite0").
"""

OUT_FEATURES = ("res2", "res3", "res4", "res5")


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters: a per-channel affine map.

    ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`` on ``x [B, C, H, W]``.
    All four tensors are buffers (never trained, saved in the state dict). ``num_batches_tracked``
    of a regular BatchNorm checkpoint is accepted and ignored.
    """

    def __init__(self, num_features: int, *, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Fold into one scale/shift so the op is a single fused multiply-add per element.
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class Backbone(nn.Module):
    """Base class: subclasses set ``out_channels``/``out_strides`` and implement ``forward`` and
    ``stage_modules``.

    ``forward(x [B, 3, H, W]) -> {"res2": [B, C2, H/4, W/4], ..., "res5": [B, C5, H/32, W/32]}``.
    """

    out_channels: Dict[str, int]
    out_strides: Dict[str, int]

    def _init_weights(self) -> None:
        """He init (fan_out) of every conv, as torchvision; only matters without ImageNet weights."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @property
    def size_divisibility(self) -> int:
        """Input sides divisible by this give feature maps without rounding (the largest stride)."""
        return max(self.out_strides.values())

    def stage_modules(self) -> List[List[nn.Module]]:
        """Modules of [stem, res2, res3, res4, res5] in order, for FREEZE_AT."""
        raise NotImplementedError

    def freeze(self, freeze_at: int) -> "Backbone":
        """detectron2 convention: 0 = train all, 1 = freeze the stem, k >= 2 = stem + res2..res{k}.

        Frozen parameters get ``requires_grad=False``. Returns ``self``.
        """
        stages = self.stage_modules()
        if not isinstance(freeze_at, int) or not 0 <= freeze_at <= len(stages):
            raise ValueError(
                f"MODEL.BACKBONE.FREEZE_AT must be an integer in 0..{len(stages)} "
                f"(0 = train all, 1 = stem, 2 = stem + res2, ...), got {freeze_at!r}."
            )
        for modules in stages[:freeze_at]:
            for m in modules:
                for p in m.parameters():
                    p.requires_grad_(False)
        return self
