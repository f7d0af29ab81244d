"""Input handling shared by every meta-architecture: normalise RGB images and pad a batch."""
from __future__ import annotations

from typing import List

import torch


def pad_batch(tensors: List[torch.Tensor], size_divisibility: int, pad_value: float) -> torch.Tensor:
    """Stack [..., H_i, W_i] tensors into [B, ..., H, W], padding bottom/right to a common size
    that is a multiple of ``size_divisibility``."""
    max_h = max(t.shape[-2] for t in tensors)
    max_w = max(t.shape[-1] for t in tensors)
    if size_divisibility > 1:
        max_h = -(-max_h // size_divisibility) * size_divisibility
        max_w = -(-max_w // size_divisibility) * size_divisibility
    out = tensors[0].new_full((len(tensors), *tensors[0].shape[:-2], max_h, max_w), pad_value)
    for i, t in enumerate(tensors):  # a copy per image, not per pixel
        out[i, ..., : t.shape[-2], : t.shape[-1]].copy_(t)
    return out


def normalize_images(batched_inputs: List[dict], pixel_mean: torch.Tensor, pixel_std: torch.Tensor,
                     size_divisibility: int) -> torch.Tensor:
    """``x["image"]`` (RGB 0..255 [3,H,W]) of each sample -> ``(image - mean) / std`` padded with 0
    to [B,3,H',W'] (a multiple of ``size_divisibility``), on ``pixel_mean``'s device."""
    device = pixel_mean.device
    images = [(x["image"].to(device, non_blocking=True) - pixel_mean) / pixel_std for x in batched_inputs]
    return pad_batch(images, size_divisibility, 0.0)
