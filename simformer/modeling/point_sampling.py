"""Point sampling helpers shared by the SimNet pair losses and the optional point-based mask loss.

* ``sample_points``: draw pixel indices from per-row weights (multinomial, with replacement).
* ``point_sample``: bilinear read-out of a map at continuous coordinates (``grid_sample``).
* ``get_uncertain_point_coords_with_randomness``: Mask2Former-style importance sampling.
* ``PointSampler``: the mask losses' choice between full resolution and sampled points.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

__all__ = [
    "sample_points",
    "point_sample",
    "calculate_uncertainty",
    "get_uncertain_point_coords_with_randomness",
    "dense_grid_coords",
    "PointSampler",
]


def sample_points(
    weights: torch.Tensor, num: int, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Draw ``num`` indices per row with probability proportional to ``weights`` (with replacement).

    Args:
        weights: ``[P, N]`` non-negative weights (bool or float).
        num: points per row.
        generator: optional torch generator (default: the global RNG).
    Returns:
        ``int64 [P, num]``. Rows whose weights are all zero are sampled uniformly over all ``N``
        entries; callers that must not use such rows check ``weights.sum(1) > 0`` themselves.
    """
    if weights.dim() != 2:
        raise ValueError(f"sample_points expects weights of shape [P, N], got {tuple(weights.shape)}")
    P, N = weights.shape
    if num < 0 or N == 0:
        raise ValueError(f"sample_points: cannot draw {num} points from {N} candidates")
    if P == 0 or num == 0:
        return torch.zeros(P, num, dtype=torch.long, device=weights.device)
    w = weights.float()
    if (w < 0).any() or not torch.isfinite(w).all():
        raise ValueError("sample_points: weights must be finite and non-negative")
    empty = w.sum(1) <= 0
    # multinomial rejects all-zero rows: give them uniform weights.
    w = torch.where(empty[:, None], torch.ones_like(w), w)
    return torch.multinomial(w, num, replacement=True, generator=generator)


def point_sample(input: torch.Tensor, coords: torch.Tensor, **kwargs) -> torch.Tensor:
    """Bilinearly sample ``input`` at normalised coordinates.

    Args:
        input: ``[B, C, H, W]``.
        coords: ``[B, P, 2]`` (x, y) in ``[0, 1]`` (0 = left/top edge, 1 = right/bottom edge of the
            image, pixel centres at ``(i + 0.5) / size``), or ``[B, Hg, Wg, 2]``.
        kwargs: passed to ``F.grid_sample``. Defaults here: ``align_corners=False`` and
            ``padding_mode="border"`` so that sampling at the pixel centres of a larger grid gives
            exactly ``F.interpolate(..., mode="bilinear", align_corners=False)``.
    Returns:
        ``[B, C, P]`` (or ``[B, C, Hg, Wg]`` for 4-D coords).
    """
    kwargs.setdefault("align_corners", False)
    kwargs.setdefault("padding_mode", "border")
    add_dim = coords.dim() == 3
    grid = 2.0 * coords - 1.0
    if add_dim:
        grid = grid.unsqueeze(2)
    out = F.grid_sample(input, grid.to(input.dtype), **kwargs)
    return out.squeeze(3) if add_dim else out


def dense_grid_coords(height: int, width: int, batch: int, device=None) -> torch.Tensor:
    """Pixel-centre coordinates of a ``height x width`` grid in row-major order: ``[batch, H*W, 2]``."""
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)
    return grid.unsqueeze(0).expand(batch, -1, -1).contiguous()


def calculate_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Uncertainty of binary mask logits ``[N, 1, ...]``: ``-|logit|`` (0 = most uncertain)."""
    return -logits.abs()


def get_uncertain_point_coords_with_randomness(
    coarse_logits: torch.Tensor,
    uncertainty_func: Callable[[torch.Tensor], torch.Tensor],
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Mask2Former importance sampling of point coordinates.

    Draw ``oversample_ratio * num_points`` random points, keep the
    ``importance_sample_ratio * num_points`` most uncertain of them (uncertainty evaluated on the
    bilinearly sampled coarse logits) and fill up with fresh uniformly random points.

    Args:
        coarse_logits: ``[N, 1, h, w]`` predictions.
        uncertainty_func: maps ``[N, 1, P]`` sampled logits to ``[N, 1, P]`` uncertainty (higher =
            more uncertain).
    Returns:
        ``[N, num_points, 2]`` coordinates in ``[0, 1]``.
    """
    if oversample_ratio < 1:
        raise ValueError(f"oversample_ratio must be >= 1, got {oversample_ratio}")
    if not 0 <= importance_sample_ratio <= 1:
        raise ValueError(f"importance_sample_ratio must be in [0, 1], got {importance_sample_ratio}")
    n = coarse_logits.shape[0]
    device = coarse_logits.device
    num_sampled = int(num_points * oversample_ratio)
    coords = torch.rand(n, num_sampled, 2, device=device, generator=generator)
    logits = point_sample(coarse_logits, coords)
    uncertainty = uncertainty_func(logits)[:, 0]  # [N, num_sampled]
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    top = torch.topk(uncertainty, k=num_uncertain, dim=1).indices  # [N, num_uncertain]
    picked = torch.gather(coords, 1, top[..., None].expand(-1, -1, 2))
    if num_random > 0:
        rand = torch.rand(n, num_random, 2, device=device, generator=generator)
        picked = torch.cat([picked, rand], dim=1)
    return picked


@dataclass(frozen=True)
class PointSampler:
    """Where the mask losses read their predictions and targets (``MODEL.MASK_FORMER.POINT_LOSS``).

    Disabled (the default): every pixel of the target resolution. Enabled: ``num_points``
    importance-sampled points per mask (Mask2Former's ``TRAIN_NUM_POINTS``, ``OVERSAMPLE_RATIO``,
    ``IMPORTANCE_SAMPLE_RATIO``).
    """

    enabled: bool = False
    num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75

    def coords(self, coarse_logits: torch.Tensor) -> torch.Tensor:
        """``[M, 1, h, w]`` coarse logits -> ``[M, num_points, 2]`` point coordinates in [0, 1]."""
        return get_uncertain_point_coords_with_randomness(
            coarse_logits, calculate_uncertainty, self.num_points, self.oversample_ratio,
            self.importance_sample_ratio)
