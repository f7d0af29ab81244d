"""MM-Former's mask matching over the suite's proposals (docs/mm_former.md).

MM-Former (Jiao et al., "Mask Matching Transformer for Few-Shot Segmentation", NeurIPS 2022)
decomposes the query into N class-agnostic proposals and matches them to the support:

- ``mm-match`` (training-free, the paper's heuristic baseline of Table 3a): per proposal the cosine
  similarity (Eq. 4, first line) between its masked-average-pooled prototype on the query features
  and the support prototype (mean over shots); the highest-similarity proposal is the answer
  (``MATCH_TEMPERATURE`` 0), or with a temperature > 0 the softmax-weighted sum of proposals.
- ``mm-former`` (trained): the Learnable Matching block, ``M_hat = M x MLP(S)`` (Eq. 4), an
  N -> 5N -> N MLP from the N similarities to N coefficients; output = the weighted sum of the
  proposal masks. Loss (Sec. 2.4): 10 x dice on M_hat + 6 x the BCE term of Eq. 5 on the
  highest- and lowest-IoU proposals.

Features: the backbone maps ("pre-decoder", Table 3b: before the pixel decoder's context modelling
matches better), by default res3, res4 and res5 as the paper's F^3..F^5. Without the paper's learnt
256-d projections, every level is L2-normalised on its own so that the similarity is the mean of the
per-level cosines (the cosine of the concatenation of unit-norm level prototypes).
The optional Self-Alignment block (non-parametric, Sec. 2.3) re-weights channels first.

Shapes: proposals [N,H,W] in [0,1]; features [C,h,w]; similarities [N]; prototypes [N,C] / [C].
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .base import View, register_method

_EPS = 1e-7


# ------------------------------------------------------------------------------------------------
# prototypes and similarities
# ------------------------------------------------------------------------------------------------
def resize_masks(masks: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """[N,H,W] or [H,W] float -> same leading dims at ``size``: bilinear, antialiased when shrinking
    (a plain bilinear sample at stride 16-32 would miss thin objects)."""
    squeeze = masks.dim() == 2
    m = masks.float()[None] if squeeze else masks.float()
    if tuple(m.shape[-2:]) != tuple(size):
        shrink = size[0] < m.shape[-2] or size[1] < m.shape[-1]
        m = F.interpolate(m[None], size=size, mode="bilinear", align_corners=False, antialias=shrink)[0]
    return m[0] if squeeze else m


def masked_average_pool(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Masked global average pooling: ``sum_xy f(x,y) m(x,y) / (sum_xy m(x,y) + eps)``.

    features [C,h,w]; masks [H,W] or [N,H,W] probabilities (resized to h,w by :func:`resize_masks`)
    -> [C] or [N,C]. An empty mask gives the zero vector (cosine 0 with anything)."""
    m = resize_masks(masks, tuple(features.shape[-2:]))
    flat = m.reshape(-1, m.shape[-2] * m.shape[-1]) if m.dim() == 3 else m.reshape(1, -1)
    feats = features.reshape(features.shape[0], -1).float()  # [C,hw]
    pooled = flat @ feats.T / (flat.sum(1, keepdim=True) + _EPS)  # [N,C]
    return pooled if masks.dim() == 3 else pooled[0]


def self_align(features: torch.Tensor) -> torch.Tensor:
    """The Self-Alignment block (Sec. 2.3, as the official release computes it): the channel mean
    F_avg [h,w] -> softmax over positions -> A = F softmax(F_avg)^T [C] -> F * sigmoid(A).
    [C,h,w] -> [C,h,w]; no parameters."""
    flat = features.reshape(features.shape[0], -1).float()
    attn = flat.mean(0).softmax(0)  # [hw]
    return features * torch.sigmoid(flat @ attn)[:, None, None]


def _level_features(view: View, keys: Sequence[str], align: bool) -> list:
    missing = [k for k in keys if k not in view.features]
    if missing:
        raise KeyError(f"FEWSHOT.MM_FORMER.FEATURES names {missing}, but the proposal source gives "
                       f"{sorted(view.features)}; set FEWSHOT.MM_FORMER.FEATURES to some of those")
    return [self_align(view.features[k]) if align else view.features[k].float() for k in keys]


def query_prototypes(query: View, keys: Sequence[str], align: bool) -> list:
    """Per feature level, the N proposals' prototypes, each row L2-normalised: list of [N,C_l]."""
    return [F.normalize(masked_average_pool(f, query.proposals), dim=1, eps=_EPS)
            for f in _level_features(query, keys, align)]


def support_prototypes(supports: Sequence[View], keys: Sequence[str], align: bool) -> list:
    """Per level, the mean over shots of the support masks' prototypes (paper: K-shot = averaged
    P_S^gt), L2-normalised: list of [C_l]."""
    if not supports:
        raise ValueError("a few-shot episode needs at least one support view")
    per_shot = []
    for s in supports:
        if s.mask is None:
            raise ValueError("a support View has no mask; build it with View.with_mask(...)")
        m = s.mask.float() if s.valid is None else (s.mask & s.valid).float()
        per_shot.append([masked_average_pool(f, m) for f in _level_features(s, keys, align)])
    return [F.normalize(torch.stack(level).mean(0), dim=0, eps=_EPS) for level in zip(*per_shot)]


def proposal_similarities(query: View, supports: Sequence[View], keys: Sequence[str] = ("res3", "res4", "res5"),
                          align: bool = True) -> torch.Tensor:
    """S [N] (Eq. 4, first line): the mean over feature levels of cos(P_S^gt, P_Q^n)."""
    return match_prototypes(query_prototypes(query, keys, align), support_prototypes(supports, keys, align))


def match_prototypes(query_protos: Sequence[torch.Tensor], support_protos: Sequence[torch.Tensor]) -> torch.Tensor:
    """Unit-norm level prototypes ([N,C_l] and [C_l] per level) -> S [N], the mean of the level cosines."""
    return torch.stack([qp @ sp for qp, sp in zip(query_protos, support_protos)]).mean(0)


# ------------------------------------------------------------------------------------------------
# the learnable matching block and its loss
# ------------------------------------------------------------------------------------------------
SIM_NORMS = ("none", "zscore")


class MaskMatchingModule(nn.Module):
    """The Learnable Matching block: coefficients = fc2(relu(fc1(S))), fc1: N -> mult*N,
    fc2: mult*N -> N (the release: N -> 5N -> N); ``M_hat = sum_n coef_n M_n`` (Eq. 4).
    ``sim_norm`` "zscore" standardises S over the N proposals first (not in the paper: frozen
    features give compressed cosines; docs/mm_former.md section 2)."""

    def __init__(self, num_proposals: int, hidden_mult: int = 5, sim_norm: str = "none"):
        super().__init__()
        if num_proposals < 1 or hidden_mult < 1:
            raise ValueError(f"MaskMatchingModule needs num_proposals >= 1 and hidden_mult >= 1, got "
                             f"{num_proposals}, {hidden_mult}")
        if sim_norm not in SIM_NORMS:
            raise ValueError(f"FEWSHOT.MM_FORMER.SIM_NORM must be one of {SIM_NORMS}, got {sim_norm!r}")
        self.num_proposals = num_proposals
        self.hidden_mult = hidden_mult
        self.sim_norm = sim_norm
        self.fc1 = nn.Linear(num_proposals, num_proposals * hidden_mult)
        self.fc2 = nn.Linear(num_proposals * hidden_mult, num_proposals)

    def coefficients(self, sims: torch.Tensor) -> torch.Tensor:
        """sims [..., N] -> coefficients [..., N] (unbounded; the release applies no softmax)."""
        if sims.shape[-1] != self.num_proposals:
            raise ValueError(f"the matching module was built for N={self.num_proposals} proposals, got "
                             f"{sims.shape[-1]} similarities; train it on the proposal source used here")
        if self.sim_norm == "zscore":
            sims = (sims - sims.mean(-1, keepdim=True)) / (sims.std(-1, unbiased=False, keepdim=True) + 1e-6)
        return self.fc2(F.relu(self.fc1(sims)))

    def forward(self, sims: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
        """sims [B,N], proposals [B,N,H,W] -> M_hat [B,H,W] (or [N] + [N,H,W] -> [H,W])."""
        return torch.einsum("...n,...nhw->...hw", self.coefficients(sims), proposals.float())


def soft_iou(proposals: torch.Tensor, gt: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Soft IoU of each proposal with the GT: ``sum(p t) / (sum p + sum t - sum(p t))``.
    proposals [N,H,W] in [0,1], gt/valid [H,W] bool -> [N]."""
    v = torch.ones_like(gt, dtype=torch.float32) if valid is None else valid.float()
    p = proposals.float().flatten(1) * v.flatten()
    t = (gt.float() * v).flatten()
    inter = p @ t
    return inter / (p.sum(1) + t.sum() - inter + _EPS)


def dice_loss(pred: torch.Tensor, gt: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``1 - (2 sum(p t) + 1) / (sum p^2 + sum t^2 + 1)`` over valid pixels. pred [...,H,W]
    (unbounded: M_hat is a free weighted sum; the squared denominator keeps the loss >= 0 and
    penalises values above 1), gt/valid [...,H,W] -> [...]."""
    v = torch.ones_like(pred) if valid is None else valid.float()
    p, t = (pred * v).flatten(-2), (gt.float() * v).flatten(-2)
    return 1 - (2 * (p * t).sum(-1) + 1) / ((p * p).sum(-1) + (t * t).sum(-1) + 1)


def co_loss(values: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Eq. 5: min-max normalise ``values`` [...,N] over N, then
    ``-(log v_hat[pos] + log(1 - v_hat[neg])) / 2`` (pos: highest-IoU proposal, target 1; neg:
    lowest-IoU, target 0); the arguments of the logs are clamped at 1e-12 (finite loss and
    gradient at 0, as torch's BCE clamps its logs). pos/neg [...] long -> [...]."""
    lo, hi = values.min(-1, keepdim=True).values, values.max(-1, keepdim=True).values
    v = (values - lo) / (hi - lo + 1e-8)
    vp = v.gather(-1, pos[..., None])[..., 0]
    vn = v.gather(-1, neg[..., None])[..., 0]
    return -(torch.log(vp.clamp(min=1e-12)) + torch.log((1 - vn).clamp(min=1e-12))) / 2


def matcher_loss(coefs: torch.Tensor, proposals: torch.Tensor, gt: torch.Tensor, valid: Optional[torch.Tensor],
                 pos: torch.Tensor, neg: torch.Tensor, *, dice_weight: float = 10.0,
                 bce_weight: float = 6.0) -> Dict[str, torch.Tensor]:
    """lambda_1 x dice(M_hat, GT) + lambda_2 x L_co, averaged over the batch.

    coefs [B,N] (the module's coefficients), proposals [B,N,H,W], gt/valid [B,H,W], pos/neg [B].
    L_co is applied to the coefficients: in the paper it supervises the similarities through the
    learnt Cross-Alignment block; here the similarities come from frozen features (no parameter
    upstream), so the ranking constraint goes to the learnt coefficients instead."""
    pred = torch.einsum("bn,bnhw->bhw", coefs, proposals.float())
    dice = dice_loss(pred, gt, valid).mean()
    co = co_loss(coefs, pos, neg).mean()
    return {"loss": dice_weight * dice + bce_weight * co, "dice": dice, "co": co}


# ------------------------------------------------------------------------------------------------
# weights file
# ------------------------------------------------------------------------------------------------
def save_matcher(path: str, module: MaskMatchingModule, meta: dict) -> None:
    """matcher.pth: {"state_dict", "num_proposals", "hidden_mult", "sim_norm", "features", "self_align", ...}
    (tensors and plain types only, loadable with weights_only=True); atomic."""
    from simformer.utils.io import atomic_path

    payload = dict(meta)
    payload.update({"state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
                    "num_proposals": module.num_proposals, "hidden_mult": module.hidden_mult,
                    "sim_norm": module.sim_norm})
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_matcher(path: str) -> Tuple[MaskMatchingModule, dict]:
    """matcher.pth -> (module in eval mode, its metadata). Clear errors for a missing/foreign file."""
    if not path:
        raise ValueError("method mm-former needs trained weights: set FEWSHOT.MM_FORMER.WEIGHTS to a matcher.pth "
                         "written by `simformer train-matcher`")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"FEWSHOT.MM_FORMER.WEIGHTS {path} does not exist (train one with "
                                "`simformer train-matcher`)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable / unsafe file is one clear error
        raise ValueError(f"FEWSHOT.MM_FORMER.WEIGHTS {path} is not a readable matcher.pth "
                         f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    need = ("state_dict", "num_proposals", "hidden_mult", "sim_norm", "features", "self_align")
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in need):
        raise ValueError(f"FEWSHOT.MM_FORMER.WEIGHTS {path} is not a matcher.pth written by "
                         f"`simformer train-matcher` (needs keys {list(need)})")
    module = MaskMatchingModule(int(ckpt["num_proposals"]), int(ckpt["hidden_mult"]), str(ckpt["sim_norm"]))
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"FEWSHOT.MM_FORMER.WEIGHTS {path}: state dict does not fit N="
                         f"{ckpt['num_proposals']} x {ckpt['hidden_mult']} ({str(e).splitlines()[0]})") from None
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return module.eval(), meta


# ------------------------------------------------------------------------------------------------
# the two methods
# ------------------------------------------------------------------------------------------------
class MMMatch:
    """Training-free matching: weights = one-hot at argmax S (temperature 0, the paper's heuristic
    baseline) or softmax(S / temperature); output = sum_n weight_n M_n, [H,W] in [0,1]."""

    name = "mm-match"

    def __init__(self, *, features: Sequence[str] = ("res3", "res4", "res5"), self_align: bool = True,
                 temperature: float = 0.0):
        if temperature < 0:
            raise ValueError(f"FEWSHOT.MM_FORMER.MATCH_TEMPERATURE must be >= 0, got {temperature}")
        self.features, self.self_align, self.temperature = tuple(features), bool(self_align), float(temperature)

    def weights(self, sims: torch.Tensor) -> torch.Tensor:
        if self.temperature == 0:
            return F.one_hot(sims.argmax(), sims.shape[0]).float()
        return (sims / self.temperature).softmax(0)

    @torch.no_grad()
    def predict(self, query: View, supports: Sequence[View]) -> torch.Tensor:
        sims = proposal_similarities(query, supports, self.features, self.self_align)
        return torch.einsum("n,nhw->hw", self.weights(sims), query.proposals.float()).clamp(0, 1)


class MMFormer:
    """Trained matching: ``M_hat = sum_n MLP(S)_n M_n`` clamped to [0,1] (the evaluator thresholds
    at 0.5, as the release's argmax over [1 - M_hat, M_hat]). Features and Self-Alignment come
    from the weights file (what the module was trained on)."""

    name = "mm-former"

    def __init__(self, module: MaskMatchingModule, meta: dict, path: str = ""):
        self.module, self.meta, self.path = module.eval(), meta, path
        self.features, self.self_align = tuple(meta["features"]), bool(meta["self_align"])

    @torch.no_grad()
    def predict(self, query: View, supports: Sequence[View]) -> torch.Tensor:
        n = query.proposals.shape[0]
        if n != self.module.num_proposals:
            raise ValueError(f"FEWSHOT.MM_FORMER.WEIGHTS {self.path} was trained for N={self.module.num_proposals} "
                             f"proposals, the proposal source gives {n}; train a matcher on this source")
        sims = proposal_similarities(query, supports, self.features, self.self_align)
        return self.module(sims, query.proposals).clamp(0, 1)


@register_method("mm-match")
def build_mm_match(cfg, **kwargs) -> MMMatch:
    c = cfg.FEWSHOT.MM_FORMER
    return MMMatch(features=list(c.FEATURES), self_align=c.SELF_ALIGN, temperature=c.MATCH_TEMPERATURE)


@register_method("mm-former")
def build_mm_former(cfg, weights: Optional[str] = None, **kwargs) -> MMFormer:
    """``weights`` (optional) overrides FEWSHOT.MM_FORMER.WEIGHTS."""
    path = weights or cfg.FEWSHOT.MM_FORMER.WEIGHTS
    module, meta = load_matcher(path)
    return MMFormer(module, meta, path)
