"""Hungarian matching between queries and targets (MaskFormer, with mask-less novel targets).

Cost of assigning query q to target t::

    -cost_class * softmax(pred_logits)[q, label_t]
    + cost_mask * mean-pixel sigmoid focal loss(mask_q, target_t)     (targets with a mask only)
    + cost_dice * dice loss(mask_q, target_t)                           (targets with a mask only)

Targets without a mask (novel classes, paper 3.3) carry the class cost only. Masks are compared at
the prediction resolution: target masks are downsampled with nearest interpolation as MaskFormer
does (cheap, and the targets stay binary).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from .mask_terms import has_mask

__all__ = ["HungarianMatcher", "batch_sigmoid_focal_cost", "batch_dice_cost"]


def batch_sigmoid_focal_cost(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Mean-over-pixels sigmoid focal loss of every (prediction, target) combination.

    Args:
        logits: ``[Q, N]`` mask logits; targets: ``[T, N]`` in {0, 1}.
    Returns:
        ``[Q, T]``.
    """
    n = logits.shape[1]
    prob = logits.sigmoid()
    # BCE(x, 1) = softplus(-x), BCE(x, 0) = softplus(x)
    pos = alpha * (1 - prob) ** gamma * F.softplus(-logits)
    neg = (1 - alpha) * prob**gamma * F.softplus(logits)
    return (pos @ targets.T + neg @ (1 - targets).T) / n


def batch_dice_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss ``1 - (2|p t| + 1) / (|p| + |t| + 1)`` for every combination: ``[Q,N]``, ``[T,N]`` -> ``[Q,T]``."""
    prob = logits.sigmoid()
    num = 2 * prob @ targets.T
    den = prob.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (num + 1) / (den + 1)


_WORST_COST = 1e30


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to targets per image.

    Args:
        cost_class, cost_mask, cost_dice: weights of the three cost terms.
    """

    def __init__(self, *, cost_class: float = 1.0, cost_mask: float = 20.0, cost_dice: float = 1.0):
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("HungarianMatcher: all costs are 0 (MODEL.MASK_FORMER.*_WEIGHT)")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice

    @torch.no_grad()
    def cost_matrices(self, outputs: Dict[str, torch.Tensor], targets: Sequence[dict]) -> List[torch.Tensor]:
        """Per-image cost matrices ``[Q, T_b]`` (float32, on the prediction device)."""
        logits_all = outputs["pred_logits"]
        masks_all = outputs["pred_masks"]
        B, Q = logits_all.shape[:2]
        if len(targets) != B:
            raise ValueError(f"HungarianMatcher: {len(targets)} targets for a batch of {B}")
        h, w = masks_all.shape[-2:]
        costs = []
        for b in range(B):
            labels = targets[b]["labels"]
            prob = logits_all[b].float().softmax(-1)  # [Q, K+1]
            cost = -self.cost_class * prob[:, labels]  # [Q, T]
            cols = torch.nonzero(has_mask(targets[b]), as_tuple=False)[:, 0]
            if cols.numel() > 0 and (self.cost_mask != 0 or self.cost_dice != 0):
                tgt = targets[b]["masks"][cols].to(masks_all.device).float()
                tgt = F.interpolate(tgt[:, None], size=(h, w), mode="nearest")[:, 0].flatten(1)
                pred = masks_all[b].float().flatten(1)
                mask_cost = self.cost_mask * batch_sigmoid_focal_cost(pred, tgt)
                mask_cost = mask_cost + self.cost_dice * batch_dice_cost(pred, tgt)
                cost[:, cols.to(cost.device)] += mask_cost
            costs.append(cost)
        return costs

    @torch.no_grad()
    def forward(
        self, outputs: Dict[str, torch.Tensor], targets: Sequence[dict]
    ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Match queries to targets.

        Args:
            outputs: ``pred_logits [B,Q,K+1]``, ``pred_masks [B,Q,h,w]`` (logits).
            targets: per image ``labels int64 [T]``, ``has_mask bool [T]`` (optional, default all
                True), ``masks [T,H,W]`` in {0,1}.
        Returns:
            Per image ``(query_idx int64 [M], target_idx int64 [M])`` with ``M = min(Q, T)``, on CPU.
        """
        out = []
        for b, cost in enumerate(self.cost_matrices(outputs, targets)):
            if cost.shape[1] == 0:
                empty = torch.zeros(0, dtype=torch.long)
                out.append((empty, empty.clone()))
                continue
            c = cost.cpu()
            if not torch.isfinite(c).all():
                # Non-finite predictions: match anyway (NaN/inf costs count as the worst) and let the
                # losses, which are then non-finite too, reach the trainer's one NaN check, which
                # names the iteration and the terms.
                c = torch.nan_to_num(c, nan=_WORST_COST, posinf=_WORST_COST, neginf=-_WORST_COST)
            qi, ti = linear_sum_assignment(c.numpy())
            out.append((torch.as_tensor(qi, dtype=torch.long), torch.as_tensor(ti, dtype=torch.long)))
        return out
