"""MaskFormer's FPN pixel decoder: backbone features -> per-pixel mask embeddings at stride 4."""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvNormAct", "FPNPixelDecoder", "build_pixel_decoder", "c2_xavier_fill"]


def c2_xavier_fill(module: nn.Module) -> None:
    """detectron2's Caffe2 "XavierFill": kaiming-uniform weights with a=1, zero bias."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class ConvNormAct(nn.Module):
    """Conv2d, optional GroupNorm, optional ReLU. The conv has no bias when a norm follows it."""

    def __init__(self, *, in_channels: int, out_channels: int, kernel_size: int, gn_groups: int = 0, relu: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=gn_groups <= 0
        )
        self.norm = nn.GroupNorm(gn_groups, out_channels) if gn_groups > 0 else None
        self.relu = bool(relu)
        c2_xavier_fill(self.conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.relu(x) if self.relu else x


def _as_shape_dict(input_shape: Any) -> dict[str, tuple[int, int]]:
    """Accept ``{name: (channels, stride)}`` or a backbone with ``out_channels``/``out_strides``."""
    if hasattr(input_shape, "out_channels") and hasattr(input_shape, "out_strides"):
        return {k: (int(c), int(input_shape.out_strides[k])) for k, c in input_shape.out_channels.items()}
    if not isinstance(input_shape, Mapping):
        raise TypeError(
            "FPNPixelDecoder: input_shape must be a dict {name: (channels, stride)} or a backbone "
            f"with out_channels/out_strides, got {type(input_shape).__name__}."
        )
    out = {}
    for k, v in input_shape.items():
        try:
            c, s = v
            out[str(k)] = (int(c), int(s))
        except (TypeError, ValueError):
            raise ValueError(f"FPNPixelDecoder: input_shape['{k}'] must be (channels, stride), got {v!r}.") from None
    return out


class FPNPixelDecoder(nn.Module):
    """Top-down FPN over the backbone features (MaskFormer's BasePixelDecoder).

    Levels are processed from the coarsest (largest stride, normally res5) to the finest (res2):
    the coarsest gets a 3x3 conv + GN + ReLU; every finer level adds a 1x1 lateral conv + GN of its
    own feature to the nearest-upsampled output of the coarser level, followed by 3x3 conv + GN +
    ReLU. A last 3x3 conv (with bias, no norm) gives the mask features at the finest stride.

    forward(features {name: [B,C_name,H/s,W/s]}) -> (mask_features [B,mask_dim,H/s_min,W/s_min],
    transformer input) -- the map the transformer decoder cross-attends to, chosen as MaskFormer's
    ``TRANSFORMER_IN_FEATURE``: a raw backbone feature ("res5", MaskFormer's default, or a finer
    one) or "pixel_embedding" (the mask features themselves). ``transformer_in_channels`` is its
    channel count.
    """

    def __init__(self, *, input_shape: Any, conv_dim: int = 256, mask_dim: int = 256, gn_groups: int = 32,
                 transformer_in_feature: str = "res5"):
        super().__init__()
        shapes = _as_shape_dict(input_shape)
        if not shapes:
            raise ValueError("FPNPixelDecoder: input_shape is empty; expected res2..res5.")
        if transformer_in_feature != "pixel_embedding" and transformer_in_feature not in shapes:
            raise ValueError(
                f"MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE must be one of {sorted(shapes)} or "
                f"'pixel_embedding'; got '{transformer_in_feature}'."
            )
        self.transformer_in_feature = transformer_in_feature
        self.transformer_in_channels = int(mask_dim if transformer_in_feature == "pixel_embedding"
                                           else shapes[transformer_in_feature][0])
        if gn_groups <= 0 or conv_dim % gn_groups != 0:
            raise ValueError(
                f"FPNPixelDecoder: GN groups ({gn_groups}) must be positive and divide the conv dim "
                f"({conv_dim}); check MODEL.SEM_SEG_HEAD.GN_GROUPS / CONVS_DIM."
            )
        # Fine -> coarse by stride; the loop in forward walks them coarse -> fine.
        self.in_features = sorted(shapes, key=lambda k: shapes[k][1])
        self.in_strides = [shapes[k][1] for k in self.in_features]
        self.conv_dim = int(conv_dim)
        self.mask_dim = int(mask_dim)

        self.lateral_convs = nn.ModuleDict()
        self.output_convs = nn.ModuleDict()
        top = self.in_features[-1]
        for name in self.in_features:
            c_in = shapes[name][0]
            if name == top:
                self.output_convs[name] = ConvNormAct(
                    in_channels=c_in, out_channels=conv_dim, kernel_size=3, gn_groups=gn_groups, relu=True
                )
            else:
                self.lateral_convs[name] = ConvNormAct(
                    in_channels=c_in, out_channels=conv_dim, kernel_size=1, gn_groups=gn_groups
                )
                self.output_convs[name] = ConvNormAct(
                    in_channels=conv_dim, out_channels=conv_dim, kernel_size=3, gn_groups=gn_groups, relu=True
                )
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, 3, padding=1)
        c2_xavier_fill(self.mask_features)

    def forward(self, features: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        missing = [k for k in self.in_features if k not in features]
        if missing:
            raise KeyError(f"FPNPixelDecoder: backbone features lack {missing} (got {sorted(features)}).")
        y = None
        for name in reversed(self.in_features):
            x = features[name]
            if y is None:
                y = self.output_convs[name](x)
            else:
                lat = self.lateral_convs[name](x)
                y = lat + F.interpolate(y, size=lat.shape[-2:], mode="nearest")
                y = self.output_convs[name](y)
        mask_features = self.mask_features(y)
        if self.transformer_in_feature == "pixel_embedding":
            return mask_features, mask_features
        return mask_features, features[self.transformer_in_feature]


def build_pixel_decoder(cfg, input_shape: Any) -> FPNPixelDecoder:
    """FPN pixel decoder from MODEL.SEM_SEG_HEAD.{CONVS_DIM, MASK_DIM, GN_GROUPS} and
    MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE.

    input_shape: ``{name: (channels, stride)}`` for res2..res5, or the backbone itself.
    """
    head = cfg.MODEL.SEM_SEG_HEAD
    return FPNPixelDecoder(
        input_shape=input_shape,
        conv_dim=int(head.CONVS_DIM),
        mask_dim=int(head.MASK_DIM),
        gn_groups=int(head.GN_GROUPS),
        transformer_in_feature=cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE,
    )
