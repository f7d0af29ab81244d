"""Built-in few-shot methods: ``prototype`` (PANet-style baseline) and ``oracle`` (upper bound).

``prototype`` (Wang et al., "PANet: Few-Shot Image Semantic Segmentation with Prototype Alignment",
ICCV 2019, eq. 1-2): the support prototype is the masked average of the support's feature map
upsampled to the mask size; the query's foreground is where the cosine similarity between the
prototype and the query feature at each location, upsampled bilinearly to the image, exceeds
``FEWSHOT.PROTOTYPE.THRESHOLD``. With several shots the per-shot prototypes are averaged (PANet).
The upsampled masked average is computed without materialising the upsampled map: bilinear
upsampling is separable, up(F) = A_h F A_w^T with interpolation matrices A_h [H,h], A_w [W,w],
so sum(up(F) * M) = sum(F * (A_h^T M A_w)).

``oracle``: the single query proposal with the highest IoU against the query's ground truth (the
MM-Former paper's oracle, by definition the best proposal). It is the only built-in method that
sees the query label (``needs_query_gt``); the runner gives the query mask to no other method.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .base import FOREGROUND_THRESHOLD, View, register_method


def interpolation_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """float32 [n_out, n_in]: 1-D linear upsampling as ``F.interpolate(..., align_corners=False)``
    does it (2-D bilinear is the product of two of these)."""
    eye = torch.eye(n_in, dtype=torch.float32)[:, None, :]                  # n_in one-hot signals
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[:, 0, :].T


def masked_average_prototype(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PANet masked average pooling: the mean of the bilinearly upsampled ``features`` over ``mask``.

    Args:
        features: float [C,h,w] at the feature map's stride.
        mask: bool [H,W] at the image size (non-empty).
    Returns:
        float [C].
    """
    m = mask.float()
    total = m.sum()
    if total <= 0:
        raise ValueError("prototype: a support mask is empty; every support must hold pixels of the class")
    a_h = interpolation_matrix(features.shape[-2], m.shape[0])              # [H,h]
    a_w = interpolation_matrix(features.shape[-1], m.shape[1])              # [W,w]
    weights = a_h.T @ m @ a_w                                               # [h,w]
    return torch.einsum("chw,hw->c", features.float(), weights) / total


def cosine_to_probability(cos: torch.Tensor, threshold: float) -> torch.Tensor:
    """Map cosine similarity in [-1,1] to [0,1], piecewise linearly, with ``threshold`` -> 0.5, 1 -> 1 and
    -1 -> 0, so that probability > 0.5 exactly where cosine > threshold."""
    c = cos.clamp(-1.0, 1.0)
    t = float(threshold)
    # just above the threshold the linear piece rounds to 0.5: keep it above 0.5, so the equivalence is exact
    above = (0.5 + 0.5 * (c - t) / (1.0 - t)).clamp(min=float(torch.nextafter(torch.tensor(0.5), torch.tensor(1.0))))
    return torch.where(c > t, above, 0.5 * (c + 1.0) / (t + 1.0))


def _feature(view: View, key: str, who: str) -> torch.Tensor:
    if key not in view.features:
        raise ValueError(f"{who}: the proposal source gives no feature map '{key}' (it gives "
                         f"{sorted(view.features)}); set FEWSHOT.PROTOTYPE.FEATURE to one of them")
    return view.features[key]


class PrototypeMethod:
    """Args:
        feature: the feature map name in ``View.features`` ("res2".."res5", "mask_features").
        threshold: cosine similarity above which a query location is foreground (-1 < t < 1).
    """

    name = "prototype"
    needs_query_gt = False

    def __init__(self, *, feature: str = "mask_features", threshold: float = 0.8):
        if not -1.0 < float(threshold) < 1.0:
            raise ValueError(f"FEWSHOT.PROTOTYPE.THRESHOLD must lie in (-1, 1), got {threshold}")
        self.feature = feature
        self.threshold = float(threshold)

    def prototype(self, supports: Sequence[View]) -> torch.Tensor:
        """float [C]: the mean of the supports' masked-average prototypes."""
        protos = [masked_average_prototype(_feature(s, self.feature, self.name), s.mask) for s in supports]
        return torch.stack(protos).mean(0)

    def similarity(self, query: View, supports: Sequence[View]) -> torch.Tensor:
        """float [H,W]: cosine(prototype, query feature) upsampled bilinearly to the query image."""
        feats = _feature(query, self.feature, self.name).float()          # [C,h,w]
        proto = self.prototype(supports)
        cos = F.cosine_similarity(feats, proto[:, None, None], dim=0, eps=1e-8)  # [h,w]
        return F.interpolate(cos[None, None], size=query.size, mode="bilinear", align_corners=False)[0, 0]

    def predict(self, query: View, supports: Sequence[View]) -> torch.Tensor:
        return cosine_to_probability(self.similarity(query, supports), self.threshold)


def proposal_ious(proposals: torch.Tensor, gt: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """IoU of every proposal binarised as the evaluator does (> FOREGROUND_THRESHOLD) with ``gt``.

    Args:
        proposals: float [N,H,W]; gt: bool [H,W]; valid: bool [H,W] or None.
    Returns:
        float64 [N] (0 where the union is empty).
    """
    binary = proposals > FOREGROUND_THRESHOLD
    v = torch.ones_like(gt, dtype=torch.bool) if valid is None else valid.bool()
    g = (gt.bool() & v)[None]
    inter = (binary & g).flatten(1).sum(1).double()
    union = ((binary & v[None]) | g).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))


class OracleMethod:
    """The best single query proposal against the query ground truth (an upper bound, not a method)."""

    name = "oracle"
    needs_query_gt = True

    def predict(self, query: View, supports: Sequence[View]) -> torch.Tensor:
        if query.mask is None:
            raise ValueError("oracle needs the query's ground truth (View.mask); the runner passes it to methods "
                             "with needs_query_gt = True")
        best = int(torch.argmax(proposal_ious(query.proposals, query.mask, query.valid)))
        return query.proposals[best]


@register_method("prototype")
def build_prototype(cfg, **kwargs) -> PrototypeMethod:
    p = cfg.FEWSHOT.PROTOTYPE
    return PrototypeMethod(feature=kwargs.get("feature", p.FEATURE), threshold=kwargs.get("threshold", p.THRESHOLD))


@register_method("oracle")
def build_oracle(cfg, **kwargs) -> OracleMethod:
    return OracleMethod()
