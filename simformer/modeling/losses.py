"""MaskFormer's per-mask loss functions and the loss-weight table (docs/method.md section 2)."""
from __future__ import annotations

import re
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["LossWeights", "sigmoid_focal_loss", "dice_loss"]

_AUX_SUFFIX = re.compile(r"^(.*)_(\d+)$")


class LossWeights(dict):
    """``dict`` of loss weights; an auxiliary key ``name_<i>`` falls back to the weight of ``name``.

    Explicit keys are filled for the expected number of decoder layers; the fallback keeps the
    criterion correct if the decoder has more auxiliary outputs than configured.
    """

    def __missing__(self, key):
        m = _AUX_SUFFIX.match(key) if isinstance(key, str) else None
        if m and dict.__contains__(self, m.group(1)):
            return dict.__getitem__(self, m.group(1))
        raise KeyError(key)

    def __contains__(self, key) -> bool:
        if dict.__contains__(self, key):
            return True
        m = _AUX_SUFFIX.match(key) if isinstance(key, str) else None
        return bool(m and dict.__contains__(self, m.group(1)))

    def get(self, key, default=None):
        return self[key] if key in self else default


def sigmoid_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weights: Optional[torch.Tensor] = None,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Per-row mean sigmoid focal loss.

    Args:
        logits, targets: ``[M, N]`` (targets in [0, 1]).
        weights: optional ``[M, N]`` pixel weights (0/1 = valid); the mean is taken over them.
    Returns:
        ``[M]``.
    """
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    if weights is None:
        return loss.mean(1)
    return (loss * weights).sum(1) / weights.sum(1).clamp(min=1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-row dice loss ``1 - (2 sum(p t) + 1) / (sum p + sum t + 1)`` over (weighted) pixels: ``[M,N]`` -> ``[M]``."""
    prob = logits.sigmoid()
    if weights is not None:
        prob = prob * weights
        targets = targets * weights
    num = 2 * (prob * targets).sum(1)
    den = prob.sum(1) + targets.sum(1)
    return 1 - (num + 1) / (den + 1)
