"""SimNet (docs/method.md section 4): a pixel-pair similarity classifier (its losses and point
sampling are in pair_losses.py).

SimNet sees the concatenation of two pixel embeddings and predicts 2-way logits
(index 1 = "same class"). It is trained on base pixel pairs drawn across the two images of a
training pair; its probabilities on novel pixel pairs are distilled into the segmenter.

Architecture (release code, 1x1 convs written as linear layers over the pair batch)::

    Linear(2C, H) + BN + ReLU
    num_blocks x [Linear(H, H) + BN + ReLU, Linear(H, H) + BN, + skip, ReLU]
    Linear(H, 2)
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["SimNet"]


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

        Same result as ``self(cat(a_j, b_k) for every (j, k)).reshape(P, J, K, 2)`` but the first (linear) layer
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
