"""GF-SAM's building blocks on plain tensors (docs/gfsam.md): positive-negative alignment
(GF-SAM paper Eq. 1-3), the polarity map (Eq. 4), the point-mask coverage graph and its weakly
connected components (Sec. 4.2), mask growth (Algorithm 1) and the distance-normalised
self-consistency test of overshooting gating (Eq. 6). ``gfsam.py`` wires them to ``View``s.

Shapes: C channels; a feature map is flattened to ``[C, n]`` (n = h*w cells, row-major);
N points, M masks, K clusters. Everything is vectorised; the only Python loop is Algorithm 1's
rank loop (sequential by definition), which runs over all clusters at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

# The official code's epsilon in the min-max normalisation and the mask-score denominators.
EPS = 1e-6


def correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Eq. 1: ReLU of the cosine similarity. a [C,Na], b [C,Nb] -> [Na,Nb]."""
    a = F.normalize(a.double(), dim=0, eps=1e-12)
    b = F.normalize(b.double(), dim=0, eps=1e-12)
    return (a.T @ b).clamp_min(0.0)


def cell_fraction(masks: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """The share of each feature cell a mask covers (area resampling; the operator I(.) of Eq. 2
    and 5). masks [..., H, W] bool/float -> float64 [..., h*w]."""
    lead = masks.shape[:-2]
    x = masks.reshape(-1, 1, *masks.shape[-2:]).double()
    x = F.interpolate(x, size=tuple(size), mode="area")
    return x.reshape(*lead, size[0] * size[1])


@dataclass(frozen=True)
class Alignment:
    """The three similarity maps of Sec. 4.1 over the query cells, each float64 [n], averaged over
    the shots (as the official code averages its per-shot maps)."""

    pos_mean: torch.Tensor  # S+_mean, Eq. 2
    pos_max: torch.Tensor  # S+_max, Eq. 2
    neg_mean: torch.Tensor  # S-_mean (Eq. 2 over the reference background)


def align(query: torch.Tensor, shots: Sequence[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> Alignment:
    """Positive-negative alignment. query [C,n]; each shot (features [C,m], fg [m], bg [m]) with
    fg/bg the cell shares of the reference foreground / labelled background."""
    pm, px, nm = [], [], []
    for feat, fg, bg in shots:
        corr = correlation(query, feat)  # C(i, j), Eq. 1
        fg, bg = fg.double(), bg.double()
        pm.append(corr @ fg / fg.sum().clamp_min(EPS))
        px.append((corr * fg).amax(1))
        nm.append(corr @ bg / bg.sum().clamp_min(EPS))
    return Alignment(torch.stack(pm).mean(0), torch.stack(px).mean(0), torch.stack(nm).mean(0))


def minmax(x: torch.Tensor) -> torch.Tensor:
    """The min-max normalisation M(.) of Eq. 3 (with the official code's epsilon)."""
    return (x - x.min()) / (x.max() - x.min() + EPS)


def point_map(al: Alignment) -> torch.Tensor:
    """Eq. 3: S_p = M(S+_mix) where M(S+_mix) > M(S-_mean), else 0; S+_mix = S+_mean * S+_max. [n]"""
    mix = minmax(al.pos_mean * al.pos_max)
    return mix * (mix > minmax(al.neg_mean))


def select_points(sp: torch.Tensor, max_points: int) -> torch.Tensor:
    """The N = floor(sum S_p) highest cells of S_p (Sec. 4.1), at most ``max_points`` (the official
    code's cap of 128, not in the paper) and at least 1 when S_p is not all zero (as the code).
    sp [n] -> cell indices long [N], highest first (ties: lower index first)."""
    total = float(sp.sum())
    n = min(int(total), int(max_points))
    if n == 0 and total > 0:
        n = 1
    return torch.sort(sp, descending=True, stable=True).indices[:n]


def polarity(al: Alignment) -> torch.Tensor:
    """Eq. 4: +1 where S+_mean^2 > s_mid * S-_mean, else -1; s_mid = (max + min) / 2 of S+_mean. [n]"""
    s_mid = (al.pos_mean.max() + al.pos_mean.min()) / 2
    return torch.where(al.pos_mean * al.pos_mean > s_mid * al.neg_mean, 1.0, -1.0).double()


def growth_order_score(al: Alignment, masks: torch.Tensor) -> torch.Tensor:
    """The key Algorithm 1 visits a cluster's masks by (descending): the mask's mean of
    S+_mean^2 - s_mid * S-_mean (the official code's ordering; the paper words it as the share of
    positive cells). masks [M,n] cell shares -> [M]."""
    s_mid = (al.pos_mean.max() + al.pos_mean.min()) / 2
    margin = al.pos_mean * al.pos_mean - s_mid * al.neg_mean
    return masks @ margin / (masks.sum(1) + EPS)


def components(num_points: int, prompt_point: torch.Tensor, prompt_mask: torch.Tensor, cover: torch.Tensor,
               connection: str = "weak") -> Tuple[int, torch.Tensor, torch.Tensor]:
    """Clusters of the point-mask coverage graph (Sec. 4.2).

    Nodes: N points then M masks. Edges: point -> mask for each prompt (prompt_point[e] prompted
    prompt_mask[e]); mask -> point where ``cover`` [M,N] (bool) says the mask covers the point.
    With one mask per point this is the paper's graph with each point merged into its mask's node.
    Returns (K, point cluster long [N], mask cluster long [M]) with clusters numbered 0..K-1 in
    order of their first point.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    m = cover.shape[0]
    mi, pi = np.nonzero(cover.cpu().numpy())
    rows = np.concatenate([prompt_point.cpu().numpy(), num_points + mi])
    cols = np.concatenate([num_points + prompt_mask.cpu().numpy(), pi])
    size = num_points + m
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(size, size)).tocsr()
    _, labels = connected_components(graph, directed=True, connection=connection, return_labels=True)
    # renumber by first point; every mask shares a component with the point that prompted it
    _, first, inverse = np.unique(labels[:num_points], return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    lut = np.full(labels.max() + 1 if size else 1, -1, np.int64)
    lut[labels[:num_points][first]] = rank
    point_cluster = torch.from_numpy(rank[inverse.reshape(-1)].copy())
    mask_cluster = torch.from_numpy(lut[labels[num_points:]].copy())
    return len(first), point_cluster, mask_cluster


def mask_growth(masks: torch.Tensor, cluster: torch.Tensor, order: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Algorithm 1 for every cluster at once: visit each cluster's masks by descending ``order``;
    a mask is positive when the polarity sum over its part outside the cluster's grown mask is
    > 0 (Eq. 5 on that part), and then that part joins the grown mask.

    masks [M,n] cell shares; cluster long [M]; order [M]; sign [n] (+1/-1, Eq. 4) -> bool [M].
    """
    m = masks.shape[0]
    positive = torch.zeros(m, dtype=torch.bool)
    if m == 0:
        return positive
    idx = torch.sort(-order.double(), stable=True).indices
    idx = idx[torch.sort(cluster[idx], stable=True).indices]  # by cluster, then by order
    counts = torch.bincount(cluster)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(m) - starts[cluster[idx]]
    grown = torch.zeros(len(counts), masks.shape[1], dtype=torch.float64)
    masks, sign = masks.double(), sign.double()
    for r in range(int(counts.max())):  # sequential by definition; all clusters step together
        sel = idx[rank == r]
        cl = cluster[sel]
        residual = masks[sel] * (1.0 - grown[cl])
        ok = (residual * sign).sum(1) > 0
        grown[cl[ok]] += residual[ok]  # one mask per cluster per step: no index collisions
        positive[sel[ok]] = True
    return positive


def self_consistency(point_corr: torch.Tensor, unions: torch.Tensor, point_xy: torch.Tensor,
                     point_cluster: torch.Tensor) -> torch.Tensor:
    """Overshooting gating (Eq. 6 and Fig. 3): score every point against every cluster by the
    union-weighted mean similarity divided by the grid distance to the cluster's nearest point
    (a zero distance counts as 1, as the official code does); a point is consistent when its
    best cluster is its own, and a cluster whose consistent points are fewer than its
    inconsistent ones loses them all.

    point_corr [N,n] = Eq. 1 between each point's feature and every cell; unions [K,n] cell shares
    of each cluster's mask union; point_xy [N,2] grid coordinates; point_cluster long [N] -> bool [N].
    """
    n, k = point_corr.shape[0], unions.shape[0]
    sim = point_corr.double() @ unions.double().T / unions.double().sum(1).clamp_min(EPS)  # [N,K]
    d = torch.cdist(point_xy.double(), point_xy.double())  # [N,N]
    dist = torch.full((n, k), float("inf"), dtype=torch.float64)
    dist = dist.scatter_reduce(1, point_cluster.expand(n, n), d, reduce="amin")
    dist = torch.where(dist == 0, torch.ones_like(dist), dist)
    best = (sim / dist).argmax(1)
    consistent = best == point_cluster
    n_cons = torch.bincount(point_cluster, weights=consistent.double(), minlength=k)
    n_all = torch.bincount(point_cluster, minlength=k).double()
    return consistent & (n_cons >= n_all - n_cons)[point_cluster]
