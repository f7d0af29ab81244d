"""The two losses CMT-DeepLab adds (docs/cmt.md), used by the criterion with the CMT decoder.

* ``loss_approx`` (paper Eq. 13, the mask approximation loss): the reference points of every
  Hungarian-matched centre are pulled towards its ground-truth mask: L1 between the points' extreme
  coordinates (min/max of y and of x) and the mask's extreme pixels, plus L1 between their mean and
  the mask's centre of mass. Coordinates are pixel centres (i + 0.5) / H of the padded batch image,
  as the decoder's coordinate grid.
* ``loss_contrast`` (paper Eq. 14, the pixel-wise contrastive loss): |A| labelled pixels per image,
  sampled without replacement with probability inversely proportional to the area of their mask
  (every mask equally likely, the paper's size bias), contrasted on the L2-normalised mask features
  with the pixels of the same mask as positives.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .mask_terms import matched_has_mask
from .pair_losses import small_targets

__all__ = ["mask_extremes_and_centres", "mask_geometry", "with_mask_geometry", "approximation_loss",
           "mask_approximation_loss", "loss_approx_layers", "sample_balanced_pixels",
           "pixel_contrastive_loss", "loss_approx", "loss_contrast"]

_MASKED = -1e9  # a logit whose exp is exactly 0, without the NaN gradients of -inf rows


def mask_extremes_and_centres(masks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """masks [M,H,W] in {0,1} -> (extremes [M,4] = (y_min, y_max, x_min, x_max), centres [M,2] =
    mean (y, x), areas [M]), in pixel-centre coordinates (i + 0.5) / H, (j + 0.5) / W; an empty
    mask has area 0 and meaningless extremes. Two passes over the masks (row and column counts)."""
    m = masks > 0.5
    _, h, w = m.shape
    ys = (torch.arange(h, device=m.device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=m.device, dtype=torch.float32) + 0.5) / w
    rows, cols = m.sum(2, dtype=torch.float32), m.sum(1, dtype=torch.float32)  # [M,H], [M,W]
    area = rows.sum(1)
    big = torch.tensor(2.0, device=m.device)  # beyond every normalised coordinate
    ext = torch.stack([torch.where(rows > 0, ys, big).amin(1), torch.where(rows > 0, ys, -big).amax(1),
                       torch.where(cols > 0, xs, big).amin(1), torch.where(cols > 0, xs, -big).amax(1)], 1)
    cen = torch.stack([rows @ ys, cols @ xs], 1) / area.clamp(min=1)[:, None]
    return ext, cen, area


def mask_geometry(masks: torch.Tensor) -> torch.Tensor:
    """masks [M,H,W] -> [M,7]: the extremes, centres and area of ``mask_extremes_and_centres``."""
    ext, cen, area = mask_extremes_and_centres(masks)
    return torch.cat([ext, cen, area[:, None]], 1)


def with_mask_geometry(targets: Sequence[dict]) -> List[dict]:
    """Shallow copies of ``targets`` with ``mask_geometry [T,7]`` of their masks, computed in one
    pass over the batch: every decoder layer's approximation loss then reads 7 numbers per matched
    target instead of reducing its full-resolution mask again."""
    if not targets:
        return []
    geometry = mask_geometry(torch.cat([tg["masks"] for tg in targets]))
    parts = geometry.split([tg["masks"].shape[0] for tg in targets])
    return [{**tg, "mask_geometry": g} for tg, g in zip(targets, parts)]


def approximation_loss(refs: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
    """Per matched mask, L_ext / 4 + L_cen / 2 terms of Eq. 13: refs [M,P,2] (y, x) in [0,1] and
    the masks' ``mask_geometry`` [M,7] -> [M] (0 for an empty mask). Summed over masks and divided
    by K this is Eq. 13's L_loc."""
    ext, cen, area = geometry[:, :4], geometry[:, 4:6], geometry[:, 6]
    ry, rx = refs[..., 0], refs[..., 1]
    pred_ext = torch.stack([ry.amin(1), ry.amax(1), rx.amin(1), rx.amax(1)], 1)
    return ((pred_ext - ext).abs().mean(1) + (refs.mean(1) - cen).abs().mean(1)) * (area > 0)


def mask_approximation_loss(refs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``approximation_loss`` from the masks themselves: refs [M,P,2], masks [M,H,W] -> [M]."""
    return approximation_loss(refs, mask_geometry(masks))


def sample_balanced_pixels(labels: torch.Tensor, usable: torch.Tensor, num: int,
                           generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Draw ``min(num, N)`` pixels per row without replacement, P(pixel) proportional to 1 / (pixels
    of its label in the row) over the usable ones (Gumbel top-k, vectorised over the batch).

    labels int64 [B,N], usable bool [B,N] -> (index [B,n] into N, ok bool [B,n]); a row with fewer
    than n usable pixels has its extra draws marked not ok."""
    b, n_pix = labels.shape
    safe = torch.where(usable, labels, torch.zeros_like(labels))
    bins = int(safe.max()) + 1 if safe.numel() else 1
    counts = torch.zeros(b, bins, dtype=torch.float32, device=labels.device)
    counts.scatter_add_(1, safe, usable.float())
    area = counts.gather(1, safe).clamp(min=1)
    u = torch.rand(b, n_pix, generator=generator, device=labels.device if generator is None else generator.device)
    u = u.to(labels.device).clamp(1e-12, 1 - 1e-7)
    keys = torch.where(usable, -area.log() - (-u.log()).log(), torch.full_like(area, -float("inf")))
    top = keys.topk(min(int(num), n_pix), dim=1)
    return top.indices, torch.isfinite(top.values)


def pixel_contrastive_loss(feats: torch.Tensor, labels: torch.Tensor, ok: torch.Tensor,
                           temperature: float) -> torch.Tensor:
    """Eq. 14 averaged over the anchors: feats [B,n,D] (L2-normalised here), labels [B,n], ok bool
    [B,n]. Per image, anchor a: -mean_{p in P(a)} log(exp(f_a f_p / tau) / sum_{b in A} exp(f_a f_b /
    tau)) with P(a) = the sampled pixels of a's mask and A = the image's sampled pixels, a itself
    included in both as printed (so P(a) is never empty). Returns a scalar (mean over ok anchors)."""
    f = F.normalize(feats.float(), dim=-1)
    sim = (f @ f.transpose(1, 2)) / float(temperature)  # [B,n,n]
    sim = sim.masked_fill(~ok[:, None, :], _MASKED)
    logp = sim.log_softmax(-1)
    pos = (labels[:, :, None] == labels[:, None, :]) & ok[:, :, None] & ok[:, None, :]
    per_anchor = -(logp * pos).sum(-1) / pos.sum(-1).clamp(min=1)
    return (per_anchor * ok).sum() / ok.sum().clamp(min=1)


def loss_approx(outputs: dict, targets: Sequence[dict], indices, num_masks: float) -> torch.Tensor:
    """Eq. 13 on the matched queries whose targets have a mask, normalised by the number of mask
    targets (the K of Eq. 13, as the focal / dice losses); needs ``outputs["pred_refs"]`` [B,Q,P,2].
    Reads the targets' ``mask_geometry`` (``with_mask_geometry``; computed here when absent)."""
    return loss_approx_layers([outputs.get("pred_refs")], targets, [indices], num_masks)[0]


def loss_approx_layers(refs: Sequence[torch.Tensor], targets: Sequence[dict], indices_per_layer: Sequence,
                       num_masks: float) -> List[torch.Tensor]:
    """``loss_approx`` of L decoder layers at once: refs[l] [B,Q,P,2] with that layer's matches
    indices_per_layer[l] -> L scalars, each bit for bit the single-layer value.

    One selection over the stacked layers and one ``approximation_loss`` replace L of each (the
    per-match terms are row-wise, so batching them changes no value; each layer's terms are then
    summed on their own, in the same order as alone): at batch 8 and 6 layers this removes several
    hundred small operators per training step (docs/benchmarks.md, section 7). A layer without
    reference points (None) is a KeyError naming the config keys."""
    if any(r is None for r in refs):
        raise KeyError("loss_approx needs 'pred_refs' from the decoder: MODEL.MASK_FORMER.DECODER 'cmt' with "
                       "MODEL.MASK_FORMER.CMT.LOCATION True (or set CMT.APPROX_WEIGHT 0).")
    if not all("mask_geometry" in tg for tg in targets):
        targets = with_mask_geometry(targets)
    per_layer = [matched_has_mask(targets, indices) for indices in indices_per_layer]
    keep = [k for _, _, _, k in per_layer]
    sizes = [int(k.sum()) for k in keep]
    stacked = torch.stack(list(refs))  # [L,B,Q,P,2]
    if sum(sizes) == 0:
        return list((stacked.sum((1, 2, 3, 4)) * 0.0).unbind())
    layer = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(sizes)])
    b = torch.cat([bi[k] for bi, _, _, k in per_layer])
    q = torch.cat([qi[k] for _, qi, _, k in per_layer])
    t = torch.cat([ti[k] for _, _, ti, k in per_layer])
    geometry = torch.cat([tg["mask_geometry"] for tg in targets])
    dev = stacked.device
    src = stacked[layer.to(dev), b.to(dev), q.to(dev)].float()  # [M,P,2], layer by layer in match order
    terms = approximation_loss(src, geometry[t.to(geometry.device)].to(dev)).split(sizes)
    return [terms_l.sum() / num_masks if n else refs[i].sum() * 0.0 for i, (terms_l, n) in enumerate(zip(terms, sizes))]


def loss_contrast(outputs: dict, targets: Sequence[dict], *, num_samples: int, temperature: float,
                  ignore_value: int = 255, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Eq. 14 on ``outputs["mask_features"]`` [B,C,h,w]: labels of ``targets[b]["sem_seg"]`` taken at
    the feature grid (nearest), usable = valid and not ``ignore_value`` (void and, in the weak-shot
    setting, novel pixels, which have no mask)."""
    feats = outputs["mask_features"]
    c = feats.shape[1]
    labels, valid = small_targets(targets, feats.shape[-2:])
    labels, valid = labels.to(feats.device), valid.to(feats.device)
    usable = valid & (labels != ignore_value)
    if not usable.any():
        return feats.sum() * 0.0
    idx, ok = sample_balanced_pixels(labels, usable, num_samples, generator)
    f = feats.flatten(2).transpose(1, 2).gather(1, idx[..., None].expand(-1, -1, c))
    return pixel_contrastive_loss(f, labels.gather(1, idx), ok, temperature)
