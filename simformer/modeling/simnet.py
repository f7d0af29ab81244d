"""SimNet (paper 3.4): a pixel-pair similarity classifier, plus pair point sampling and its loss.

SimNet sees the concatenation of two pixel embeddings and predicts 2-way logits
(index 1 = "same class"). It is trained on base pixel pairs drawn across the two images of a
training pair; its probabilities on novel pixel pairs are distilled into the segmenter.

Architecture (release code, 1x1 convs written as linear layers over the pair batch)::

    Linear(2C, H) + BN + ReLU
    num_blocks x [Linear(H, H) + BN + ReLU, Linear(H, H) + BN, + skip, ReLU]
    Linear(H, 2)
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .point_sampling import sample_points

__all__ = [
    "SimNet",
    "make_cross_pairs",
    "pair_targets",
    "balanced_pair_loss",
    "simnet_pair_loss",
    "sample_pair_points",
    "gather_points",
]


class _ResidualBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, dim, bias=False)
        self.bn1 = nn.BatchNorm1d(dim)
        self.fc2 = nn.Linear(dim, dim, bias=False)
        self.bn2 = nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.fc1(x)))
        y = self.bn2(self.fc2(y))
        return F.relu(x + y)


class SimNet(nn.Module):
    """Pixel-pair similarity network.

    Args:
        in_dim: channels C of one pixel embedding (the input is ``2 * in_dim``).
        hidden_dim: width of the hidden layers.
        num_blocks: residual blocks.
    """

    def __init__(self, *, in_dim: int = 256, hidden_dim: int = 256, num_blocks: int = 3):
        super().__init__()
        if in_dim <= 0 or hidden_dim <= 0 or num_blocks < 0:
            raise ValueError(
                f"SimNet: in_dim ({in_dim}) and hidden_dim ({hidden_dim}) must be > 0 and "
                f"num_blocks ({num_blocks}) >= 0 (WEAKSHOT.SIMNET.*)"
            )
        self.in_dim = in_dim
        # no bias before BN (BN's shift absorbs it); pair_logits relies on stem = [Linear, BN, ReLU]
        self.stem = nn.Sequential(
            nn.Linear(2 * in_dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)
        )
        self.blocks = nn.Sequential(*[_ResidualBlock(hidden_dim) for _ in range(num_blocks)])
        self.head = nn.Linear(hidden_dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[N, 2*in_dim]`` concatenated pairs -> logits ``[N, 2]`` (index 1 = similar)."""
        if x.dim() != 2 or x.shape[1] != 2 * self.in_dim:
            raise ValueError(f"SimNet expects [N, {2 * self.in_dim}] pair features, got {tuple(x.shape)}")
        return self.head(self.blocks(self.stem(x)))

    def pair_logits(self, feat_a: torch.Tensor, feat_b: torch.Tensor) -> torch.Tensor:
        """Logits of every cross pair: ``feat_a [P,J,C]``, ``feat_b [P,K,C]`` -> ``[P,J,K,2]``.

        Same result as ``self(make_cross_pairs(a, b).flatten(0, 2))`` but the first (linear) layer
        is applied per point and broadcast-added, so the ``[P,J,K,2C]`` pair tensor is never built.
        """
        P, J, C = feat_a.shape
        K = feat_b.shape[1]
        if C != self.in_dim or feat_b.shape[2] != self.in_dim:
            raise ValueError(
                f"SimNet expects point features with {self.in_dim} channels, got {C} and {feat_b.shape[2]}"
            )
        w = self.stem[0].weight  # [H, 2C]: cat(a, b) @ w.T == a @ w[:, :C].T + b @ w[:, C:].T
        h = (feat_a @ w[:, :C].T)[:, :, None, :] + (feat_b @ w[:, C:].T)[:, None, :, :]
        h = self.stem[2](self.stem[1](h.reshape(P * J * K, -1)))
        return self.head(self.blocks(h)).reshape(P, J, K, 2)


def make_cross_pairs(feat_a: torch.Tensor, feat_b: torch.Tensor) -> torch.Tensor:
    """All cross pairs: ``out[p, a, b] = cat(feat_a[p, a], feat_b[p, b])``.

    ``feat_a [P,J,C]``, ``feat_b [P,K,C]`` -> ``[P,J,K,2C]``.
    """
    P, J, C = feat_a.shape
    K = feat_b.shape[1]
    return torch.cat(
        [feat_a[:, :, None, :].expand(P, J, K, C), feat_b[:, None, :, :].expand(P, J, K, feat_b.shape[2])],
        dim=-1,
    )


def pair_targets(
    labels_a: torch.Tensor,
    labels_b: torch.Tensor,
    valid_a: Optional[torch.Tensor] = None,
    valid_b: Optional[torch.Tensor] = None,
    ignore_value: int = 255,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Targets and validity of every cross pair of labelled points.

    A pair counts iff both points are real image pixels (``valid``) and at least one of them has a
    base label (``!= ignore_value``); a base pixel against an ignore pixel is "dissimilar".

    Args:
        labels_a: ``[P,J]``, labels_b: ``[P,K]`` int labels at the points.
        valid_a, valid_b: optional bool ``[P,J]`` / ``[P,K]`` (False = padding, never used).
    Returns:
        ``(same [P,J,K] bool, counts [P,J,K] bool)``.
    """
    la, lb = labels_a[:, :, None], labels_b[:, None, :]
    counts = (la != ignore_value) | (lb != ignore_value)
    if valid_a is not None:
        counts = counts & valid_a[:, :, None]
    if valid_b is not None:
        counts = counts & valid_b[:, None, :]
    same = (la == lb) & counts
    return same, counts


def balanced_pair_loss(logits: torch.Tensor, same: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Class-balanced 2-way cross-entropy.

    ``(mean CE over counted positive pairs + mean CE over counted negative pairs) / 2``. When one
    of the two groups is empty the other one carries the whole weight; with no counted pair at all
    the result is ``0 * logits.sum()`` (still connected to the graph).

    Args:
        logits: ``[..., 2]``; same, counts: bool ``[...]``.
    """
    ce = F.cross_entropy(logits.reshape(-1, 2).float(), same.reshape(-1).long(), reduction="none")
    pos = (same & counts).reshape(-1).float()
    neg = (~same & counts).reshape(-1).float()
    n_pos, n_neg = pos.sum(), neg.sum()
    terms = []
    if n_pos > 0:
        terms.append((ce * pos).sum() / n_pos)
    if n_neg > 0:
        terms.append((ce * neg).sum() / n_neg)
    if not terms:
        return logits.sum() * 0.0
    return sum(terms) / len(terms)


def simnet_pair_loss(
    simnet: SimNet,
    feat_a: torch.Tensor,
    feat_b: torch.Tensor,
    labels_a: torch.Tensor,
    labels_b: torch.Tensor,
    valid_a: Optional[torch.Tensor] = None,
    valid_b: Optional[torch.Tensor] = None,
    ignore_value: int = 255,
) -> torch.Tensor:
    """L_sim on given points: features ``[P,J,C]``/``[P,K,C]``, labels ``[P,J]``/``[P,K]``.

    One batched SimNet call over all ``P*J*K`` cross pairs, then ``balanced_pair_loss``.
    """
    logits = simnet.pair_logits(feat_a, feat_b)
    same, counts = pair_targets(labels_a, labels_b, valid_a, valid_b, ignore_value)
    return balanced_pair_loss(logits, same, counts)


def gather_points(maps: torch.Tensor, batch_idx: torch.Tensor, point_idx: torch.Tensor) -> torch.Tensor:
    """Read flattened maps at points.

    Args:
        maps: ``[B, C, N]`` (or ``[B, N]``).
        batch_idx: ``int64 [P]`` image of each row; point_idx: ``int64 [P, J]`` flat pixel indices.
    Returns:
        ``[P, J, C]`` (or ``[P, J]``).
    """
    if maps.dim() == 2:
        return torch.gather(maps[batch_idx], 1, point_idx)
    sel = maps[batch_idx]  # [P, C, N]
    out = torch.gather(sel, 2, point_idx[:, None, :].expand(-1, sel.shape[1], -1))
    return out.transpose(1, 2)


def sample_pair_points(
    labels: torch.Tensor,
    valid: torch.Tensor,
    pairs: torch.Tensor,
    num_points: int,
    focus_ratio: float,
    num_classes: int,
    ignore_value: int = 255,
    generator: Optional[torch.Generator] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class-aware point sampling for SimNet training (release rule).

    For each pair ``(i, j)`` one base class present in both images is chosen at random;
    ``round(focus_ratio * J)`` points per image are drawn from that class region and the rest
    uniformly over the valid pixels. Pairs without a shared base class draw all ``J`` points
    uniformly over valid pixels.

    Args:
        labels: ``int64 [B, N]`` base labels at feature resolution (``ignore_value`` = not base).
        valid: ``bool [B, N]`` real image pixels.
        pairs: ``int64 [P, 2]`` image indices ``(i, j)``.
    Returns:
        ``idx_i [P, J]``, ``idx_j [P, J]`` flat pixel indices, and ``focus_class [P]`` (-1 = none).
    """
    P = pairs.shape[0]
    device = labels.device
    base = (labels != ignore_value) & valid
    if base.any() and int(labels[base].max()) >= num_classes:
        raise ValueError(
            f"sample_pair_points: label {int(labels[base].max())} >= num_classes {num_classes}; "
            "targets['sem_seg'] must hold class ids 0..K-1 or the ignore value"
        )
    safe = torch.where(base, labels, torch.full_like(labels, num_classes))
    present = torch.zeros(labels.shape[0], num_classes + 1, dtype=torch.bool, device=device)
    present.scatter_(1, safe, True)
    present = present[:, :num_classes]
    shared = present[pairs[:, 0]] & present[pairs[:, 1]]  # [P, K]
    has_shared = shared.any(1)
    focus = sample_points(shared, 1, generator)[:, 0]
    focus = torch.where(has_shared, focus, torch.full_like(focus, -1))

    imgs = torch.cat([pairs[:, 0], pairs[:, 1]])  # [2P]: rows 0..P-1 = side i, P..2P-1 = side j
    focus2 = torch.cat([focus, focus])
    n_focus = int(round(focus_ratio * num_points))
    uniform = sample_points(valid[imgs], num_points, generator)  # [2P, J]
    idx = uniform
    if n_focus > 0:
        region = labels[imgs] == focus2[:, None]
        region &= valid[imgs] & (focus2[:, None] >= 0)
        focused = sample_points(region, n_focus, generator)
        head = torch.where(has_shared.repeat(2)[:, None], focused, uniform[:, :n_focus])
        idx = torch.cat([head, uniform[:, n_focus:]], dim=1)
    return idx[:P], idx[P:], focus
