"""DETR's 2-D sine positional encoding with a padding mask (MaskFormer's transformer input)."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

__all__ = ["PositionEmbeddingSine"]


class PositionEmbeddingSine(nn.Module):
    """Fixed sine/cosine encoding of the (row, column) position of every feature-map cell.

    For a cell at row ``y`` and column ``x`` the coordinates are the running counts of valid
    (not padded) cells up to and including it along its column / row, so that a padded image gives
    its valid cells exactly the encoding of the unpadded image. With ``normalize`` they are divided
    by the count of valid cells in that column / row (the last running count) and multiplied by
    ``scale``. Channel ``i`` of each half is ``sin(c / T^(2*(i//2)/F))`` for even ``i`` and
    ``cos(...)`` for odd ``i`` (``F = num_pos_feats``, ``T = temperature``); the output is the
    row half followed by the column half, ``2*F`` channels in all.
    """

    def __init__(
        self,
        *,
        num_pos_feats: int = 128,
        temperature: float = 10000.0,
        normalize: bool = True,
        scale: Optional[float] = None,
    ):
        super().__init__()
        if num_pos_feats <= 0:
            raise ValueError(f"PositionEmbeddingSine: num_pos_feats must be positive, got {num_pos_feats}.")
        if scale is not None and not normalize:
            raise ValueError("PositionEmbeddingSine: scale is only used with normalize=True.")
        self.num_pos_feats = int(num_pos_feats)
        self.temperature = float(temperature)
        self.normalize = bool(normalize)
        self.scale = 2 * math.pi if scale is None else float(scale)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: [B,C,H,W] (only its shape, device and dtype are used); mask: bool [B,H,W], True =
        padded, or None (nothing padded). Returns [B, 2*num_pos_feats, H, W] in x's dtype."""
        b, _, h, w = x.shape
        if mask is None:
            not_mask = torch.ones((b, h, w), dtype=torch.float32, device=x.device)
        else:
            if mask.shape != (b, h, w):
                raise ValueError(
                    f"PositionEmbeddingSine: mask shape {tuple(mask.shape)} does not match the "
                    f"feature map (B,H,W)=({b},{h},{w})."
                )
            not_mask = (~mask.bool()).to(torch.float32)
        y_embed = not_mask.cumsum(1)
        x_embed = not_mask.cumsum(2)
        if self.normalize:
            eps = 1e-6  # fully padded columns/rows have count 0
            y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale

        idx = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.device)
        dim_t = self.temperature ** (2 * torch.div(idx, 2, rounding_mode="floor") / self.num_pos_feats)
        even = (idx % 2 == 0)

        def encode(coord: torch.Tensor) -> torch.Tensor:  # [B,H,W] -> [B,F,H,W]
            v = coord[..., None] / dim_t
            return torch.where(even, v.sin(), v.cos()).permute(0, 3, 1, 2)

        return torch.cat([encode(y_embed), encode(x_embed)], dim=1).to(x.dtype)
