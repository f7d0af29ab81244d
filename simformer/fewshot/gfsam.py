"""GF-SAM (Zhang et al., "Bridge the Points: Graph-based Few-shot Segment Anything
Semantically", NeurIPS 2024) over the suite's own proposals (docs/gfsam.md).

The mask generator is the query ``View``'s proposal set instead of SAM: "prompting" it with a point
returns the proposals whose probability at the point exceeds 0.5, ranked by their confidence there
(score x probability); the feature extractor is the view's feature map ``FEWSHOT.GFSAM.FEATURE``
instead of DINOv2. Steps (paper sections / equations; the tensor work is in ``gfsam_graph``):

1. positive-negative alignment (Eq. 1-3) -> point cells on the query feature grid (<= MAX_POINTS);
2. each point prompts the proposals (its top PROMPT_MASKS containing proposals);
3. the point-mask coverage graph -> weakly connected clusters (Sec. 4.2);
4. positive gating: Algorithm 1 (mask growth) per cluster with the polarity map (Eq. 4-5);
5. overshooting gating: distance-normalised self-consistency, per-cluster majority (Eq. 6);
6. the union of the masks that pass both; when none does, the fallback mask (official code).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from .base import FOREGROUND_THRESHOLD, View, register_method
from .gfsam_graph import (align, cell_fraction, components, correlation, growth_order_score, mask_growth,
                          point_map, polarity, select_points, self_consistency)


@dataclass(frozen=True)
class Selection:
    """What GF-SAM decided for one query (for inspection and tests). N points, M mask nodes.

    cells long [N] (query feature cells, row-major), pixels long [N,2] (y, x) of the prompts,
    masks long [M] (proposal indices), prompt_point/prompt_mask long [E] (prompt edges),
    point_cluster [N] / mask_cluster [M], positive bool [M] (Algorithm 1), consistent bool [N]
    (overshooting gating), kept bool [M], fallback (True when ``kept`` is the fallback mask),
    foreground float32 [H,W] (1 inside the union of kept masks, else 0).
    """

    cells: torch.Tensor
    pixels: torch.Tensor
    masks: torch.Tensor
    prompt_point: torch.Tensor
    prompt_mask: torch.Tensor
    point_cluster: torch.Tensor
    mask_cluster: torch.Tensor
    positive: torch.Tensor
    consistent: torch.Tensor
    kept: torch.Tensor
    fallback: bool
    foreground: torch.Tensor


def _shot(view: View, feature: str):
    """(features [C,m], foreground cell shares [m], labelled-background cell shares [m])."""
    feat = view.features[feature]
    valid = torch.ones_like(view.mask) if view.valid is None else view.valid
    fg = cell_fraction(view.mask & valid, feat.shape[-2:])
    bg = cell_fraction(~view.mask & valid, feat.shape[-2:])
    return feat.reshape(feat.shape[0], -1), fg, bg


class GFSAM:
    """The ``gfsam`` few-shot method. Keyword arguments mirror ``FEWSHOT.GFSAM.*``."""

    name = "gfsam"

    def __init__(self, *, feature: str = "res4", max_points: int = 128, prompt_masks: int = 1,
                 connection: str = "weak", positive_gating: bool = True, overshoot_gating: bool = True):
        if int(max_points) < 1:
            raise ValueError(f"FEWSHOT.GFSAM.MAX_POINTS must be >= 1, got {max_points}")
        if int(prompt_masks) < 1:
            raise ValueError(f"FEWSHOT.GFSAM.PROMPT_MASKS must be >= 1, got {prompt_masks}")
        if connection not in ("weak", "strong"):
            raise ValueError(f"FEWSHOT.GFSAM.CONNECTION must be 'weak' or 'strong', got '{connection}'")
        self.feature, self.max_points, self.prompt_masks = str(feature), int(max_points), int(prompt_masks)
        self.connection = connection
        self.positive_gating, self.overshoot_gating = bool(positive_gating), bool(overshoot_gating)

    # ------------------------------------------------------------------------------------------
    def predict(self, query: View, supports: Sequence[View]) -> torch.Tensor:
        """float32 [H,W]: 1 on the union of the selected proposals, 0 elsewhere."""
        return self.select(query, supports).foreground

    def _check(self, query: View, supports: Sequence[View]) -> None:
        if not supports:
            raise ValueError("gfsam needs at least one support view")
        for i, view in enumerate([query, *supports]):
            if self.feature not in view.features:
                raise KeyError(f"FEWSHOT.GFSAM.FEATURE '{self.feature}' is not among the view's features "
                               f"{sorted(view.features)}; set it to one of them")
            if i and view.mask is None:
                raise ValueError(f"support {i - 1} has no mask; build supports with View.with_mask")

    def select(self, query: View, supports: Sequence[View]) -> Selection:
        self._check(query, supports)
        H, W = query.size
        qf = query.features[self.feature]
        h, w = qf.shape[-2:]
        qf = qf.reshape(qf.shape[0], -1)
        shots = [_shot(s, self.feature) for s in supports]
        al = align(qf, shots)
        cells = select_points(point_map(al), self.max_points)
        if not any(bool(fg.sum() > 0) for _, fg, _ in shots):
            cells = cells[:0]  # no reference foreground: nothing to match (the code pastes a box)
        # each cell's centre pixel is its prompt (the code uses the cell's corner, App. A.2)
        ys = ((cells // w).double().add(0.5).mul(H / h)).long().clamp_(0, H - 1)
        xs = ((cells % w).double().add(0.5).mul(W / w)).long().clamp_(0, W - 1)

        # "prompting": the PROMPT_MASKS most confident proposals containing each point
        probs = query.proposals[:, ys, xs].T.double()  # [N0,P]
        conf = torch.where(probs > FOREGROUND_THRESHOLD, probs * query.scores.double()[None], float("-inf"))
        top = torch.sort(conf, dim=1, descending=True, stable=True)
        k = min(self.prompt_masks, conf.shape[1])
        hit = torch.isfinite(top.values[:, :k])  # [N0,k]
        has = hit.any(1)  # a point no proposal contains has no mask: it is not a prompt
        cells, ys, xs, hit, top_idx = cells[has], ys[has], xs[has], hit[has], top.indices[has, :k]
        n = len(cells)
        prompt_point = torch.arange(n)[:, None].expand(n, k)[hit]
        masks, prompt_mask = torch.unique(top_idx[hit], return_inverse=True)
        binary = query.proposals[masks] > FOREGROUND_THRESHOLD  # [M,H,W]
        m = len(masks)
        empty = torch.zeros(H, W, dtype=torch.float32)
        if m == 0:
            none = torch.zeros(0, dtype=torch.bool)
            return Selection(cells, torch.stack([ys, xs], 1), masks, prompt_point, prompt_mask,
                             torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), none, none, none,
                             False, empty)

        cover = binary[:, ys, xs]  # [M,N]: mask covers point
        n_clusters, point_cluster, mask_cluster = components(n, prompt_point, prompt_mask, cover, self.connection)
        small = cell_fraction(binary, (h, w))  # [M,n] I(y_l)
        sign = polarity(al)
        if self.positive_gating:
            positive = mask_growth(small, mask_cluster, growth_order_score(al, small), sign)
        else:
            positive = torch.ones(m, dtype=torch.bool)
        if self.overshoot_gating:
            unions = torch.zeros(n_clusters, H, W, dtype=torch.float32)
            unions.index_add_(0, mask_cluster, binary.float())
            unions = cell_fraction(unions.clamp_(max=1.0), (h, w))
            xy = torch.stack([cells // w, cells % w], 1)
            consistent = self_consistency(correlation(qf[:, cells], qf), unions, xy, point_cluster)
        else:
            consistent = torch.ones(n, dtype=torch.bool)

        # keep a positive mask prompted by a consistent point (P+ and P_sc, "Mask Merging")
        by_consistent = torch.zeros(m, dtype=torch.bool)
        by_consistent[prompt_mask[consistent[prompt_point]]] = True
        kept = positive & by_consistent
        fallback = not bool(kept.any())
        if fallback:
            kept = self._fallback(small, sign, positive, consistent, prompt_point, prompt_mask)
        foreground = binary[kept].any(0).float()
        return Selection(cells, torch.stack([ys, xs], 1), masks, prompt_point, prompt_mask, point_cluster,
                         mask_cluster, positive, consistent, kept, fallback, foreground)

    @staticmethod
    def _fallback(small, sign, positive, consistent, prompt_point, prompt_mask) -> torch.Tensor:
        """The official code's last resort: among the masks of points that pass exactly one gate
        (all masks when there are none), the one with the highest Eq. 5 polarity sum."""
        m = small.shape[0]
        pos_point = torch.zeros(len(consistent), dtype=torch.bool)
        pos_point[prompt_point[positive[prompt_mask]]] = True
        one_gate = pos_point ^ consistent
        cand = torch.zeros(m, dtype=torch.bool)
        cand[prompt_mask[one_gate[prompt_point]]] = True
        if not cand.any():
            cand[:] = True
        score = torch.where(cand, small @ sign, float("-inf"))
        kept = torch.zeros(m, dtype=torch.bool)
        kept[score.argmax()] = True
        return kept


_KEYS = {"feature": "FEATURE", "max_points": "MAX_POINTS", "prompt_masks": "PROMPT_MASKS",
         "connection": "CONNECTION", "positive_gating": "POSITIVE_GATING", "overshoot_gating": "OVERSHOOT_GATING"}


@register_method("gfsam")
def build_gfsam(cfg, **kwargs) -> GFSAM:
    """GF-SAM from ``cfg.FEWSHOT.GFSAM``; keyword arguments named like the constructor's override
    the config (others, meant for other methods, are ignored)."""
    node: Optional[object] = getattr(getattr(cfg, "FEWSHOT", None), "GFSAM", None) if cfg is not None else None
    params = {arg: getattr(node, key) for arg, key in _KEYS.items() if node is not None and hasattr(node, key)}
    params.update({k: v for k, v in kwargs.items() if k in _KEYS})
    return GFSAM(**params)
