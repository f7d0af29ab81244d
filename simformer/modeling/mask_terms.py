"""The per-layer mask terms of the weak-shot criterion (docs/method.md sections 2 and 5): MaskFormer's
focal + dice loss on queries matched to targets with a mask, and SimFormer's complementary loss on
images with a novel (mask-less) target. ``criterion.py`` looks them up by name.

Matches are MaskFormer's ``indices``: one ``(query_idx, target_idx)`` pair of ``int64 [M_b]`` per
image. Targets are the dicts described in ``WeakShotCriterion.forward``.
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F

from .losses import dice_loss, sigmoid_focal_loss
from .point_sampling import PointSampler, point_sample

__all__ = ["flat_indices", "has_mask", "matched_has_mask", "matched_with_masks", "loss_masks", "with_complement", "loss_complementary"]


def flat_indices(indices, device) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(batch_idx, query_idx, target_idx) of all matches, concatenated over images."""
    b = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(indices)]).to(device)
    q = torch.cat([q for q, _ in indices]).to(device)
    t = torch.cat([t for _, t in indices]).to(device)
    return b, q, t


def has_mask(target: dict) -> torch.Tensor:
    """``bool [T]``: which targets carry a mask (all of them when the key is absent)."""
    hm = target.get("has_mask")
    if hm is None:
        return torch.ones(target["labels"].shape[0], dtype=torch.bool, device=target["labels"].device)
    return hm.bool()


def matched_has_mask(targets: Sequence[dict], indices
                     ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """All matches of the batch on the CPU: ``(batch_idx, query_idx, flat_target_idx, has_mask)``,
    ``flat_target_idx`` indexing the batch's concatenated targets; the has-mask flags are copied
    from the targets' device once per call (one synchronisation, not one per image)."""
    b, q, t = flat_indices(indices, "cpu")
    counts = torch.tensor([0] + [tg["labels"].shape[0] for tg in targets[:-1]], dtype=torch.long)
    flat_t = counts.cumsum(0)[b] + t
    return b, q, flat_t, torch.cat([has_mask(tg) for tg in targets]).cpu()[flat_t]


def matched_with_masks(per_query: torch.Tensor, targets: Sequence[dict], indices, key: str = "masks"
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The rows of ``per_query [B,Q,...]`` matched to targets that carry a mask, and those targets'
    ``key`` rows (``masks [T,H,W]``, or any per-target tensor such as ``mask_geometry [T,7]``).

    Returns ``src [M,...]`` (float) and ``tgt [M,...]`` on ``per_query``'s device, image by image in
    match order. Queries matched to mask-less (novel) targets are left out: no gradient reaches them.
    The selection is one flat index over the batch (``matched_has_mask``).
    """
    b, q, flat_t, keep = matched_has_mask(targets, indices)
    values = torch.cat([tg[key] for tg in targets])
    src = per_query[b[keep].to(per_query.device), q[keep].to(per_query.device)]
    return src.float(), values[flat_t[keep].to(values.device)].to(per_query.device)


def loss_masks(pred_masks: torch.Tensor, targets: Sequence[dict], indices, num_masks: float,
               sampler: PointSampler) -> Dict[str, torch.Tensor]:
    """``loss_mask`` (sigmoid focal) and ``loss_dice`` of the queries matched to targets WITH a mask.

    ``pred_masks [B,Q,h,w]`` logits are upsampled to the target resolution (padding counts as
    background, as in MaskFormer) or read at sampled points; sums are divided by ``num_masks``.
    Queries matched to mask-less (novel) targets never enter: exactly zero gradient.
    """
    src, tgt = matched_with_masks(pred_masks, targets, indices)  # [M, h, w], [M, H, W]
    if src.shape[0] == 0:
        zero = pred_masks.sum() * 0.0
        return {"loss_mask": zero, "loss_dice": zero.clone()}
    tgt = tgt.float()
    if sampler.enabled:
        with torch.no_grad():
            coords = sampler.coords(src[:, None])
            tgt_pts = point_sample(tgt[:, None], coords, mode="nearest")[:, 0]
        src_pts = point_sample(src[:, None], coords)[:, 0]
    else:
        src_pts = F.interpolate(src[:, None], size=tgt.shape[-2:], mode="bilinear", align_corners=False)
        src_pts, tgt_pts = src_pts[:, 0].flatten(1), tgt.flatten(1)
    return {
        "loss_mask": sigmoid_focal_loss(src_pts, tgt_pts).sum() / num_masks,
        "loss_dice": dice_loss(src_pts, tgt_pts).sum() / num_masks,
    }


def with_complement(targets: Sequence[dict]) -> List[dict]:
    """Shallow copies of ``targets`` with ``complement [H,W]`` = 1 - the union of the image's binary
    targets that carry a mask (the complementary loss's target), for the whole batch in one
    vectorised pass, so that every decoder layer's complementary loss reads it."""
    if not targets:
        return []
    masks = torch.cat([tg["masks"] for tg in targets]).float()  # [sum T, H, W]
    flags = torch.cat([has_mask(tg) for tg in targets]).to(masks.device)
    image = torch.repeat_interleave(torch.arange(len(targets), device=masks.device),
                                    torch.tensor([tg["masks"].shape[0] for tg in targets], device=masks.device))
    union = masks.new_zeros((len(targets),) + masks.shape[1:]).index_add_(0, image, masks * flags[:, None, None])
    return [{**tg, "complement": c} for tg, c in zip(targets, 1.0 - union.clamp(max=1.0))]


def loss_complementary(pred_masks: torch.Tensor, targets: Sequence[dict], indices, *, ignore_prob: float,
                       sampler: PointSampler) -> Dict[str, torch.Tensor]:
    """L_comp (paper 3.5) on images with >= 1 matched mask-less target; mean over those images.

    Prediction = pixel-wise max of the novel-matched query masks and the constant ``ignore_prob``
    (gamma); target = 1 - union of the image's base masks (the targets' ``complement``, from
    ``with_complement``; computed here when absent); valid pixels only.
    """
    device = pred_masks.device
    b, q, _, keep = matched_has_mask(targets, indices)
    b, q, novel = b.to(device), q.to(device), ~keep.to(device)
    if not novel.any():
        zero = pred_masks.sum() * 0.0
        return {"loss_comp_mask": zero, "loss_comp_dice": zero.clone()}
    b, q = b[novel], q[novel]
    imgs = torch.unique(b)  # sorted images with a novel-matched query
    slot_img = torch.searchsorted(imgs, b)  # row of each query's image among `imgs`
    # slot of each query within its image (for a padded [n_img, max_q, ...] layout)
    order = torch.arange(b.numel(), device=device)
    first = torch.zeros(imgs.numel(), dtype=torch.long, device=device).scatter_reduce(
        0, slot_img, order, reduce="amin", include_self=False
    )
    slot_q = order - first[slot_img]
    n_img, max_q = imgs.numel(), int(slot_q.max()) + 1
    # max_q sigmoid(x_q) v gamma == sigmoid(max_q x_q v logit(gamma)): work with logits (stable BCE)
    floor = math.log(ignore_prob / (1 - ignore_prob))

    H, W = targets[0]["masks"].shape[-2:]
    if not all("complement" in tg for tg in targets):
        targets = with_complement(targets)
    with torch.no_grad():
        comp_t = torch.stack([tg["complement"] for tg in targets]).to(device)[imgs]  # [n_img, H, W]
        valid = torch.stack([tg["valid"] for tg in targets]).to(device).float()[imgs]

    src = pred_masks[b, q].float()  # [M, h, w]
    if sampler.enabled:
        with torch.no_grad():
            coarse = torch.full((n_img, max_q) + src.shape[-2:], floor, device=device)
            coarse[slot_img, slot_q] = src
            coarse = coarse.amax(1, keepdim=True).clamp(min=floor)
            coords = sampler.coords(coarse)  # [n_img, P, 2]
            tgt_pts = point_sample(comp_t[:, None], coords, mode="nearest")[:, 0]
            w_pts = point_sample(valid[:, None], coords, mode="nearest")[:, 0]
        vals = point_sample(src[:, None], coords[slot_img])[:, 0]  # [M, P]
    else:
        vals = F.interpolate(src[:, None], size=(H, W), mode="bilinear", align_corners=False)
        vals = vals[:, 0].flatten(1)  # [M, H*W]
        tgt_pts, w_pts = comp_t.flatten(1), valid.flatten(1)
    padded = torch.full((n_img, max_q, vals.shape[1]), floor, device=device, dtype=vals.dtype)
    padded = padded.index_put((slot_img, slot_q), vals)
    logit = padded.max(1).values.clamp(min=floor)  # [n_img, N]
    return {
        "loss_comp_mask": sigmoid_focal_loss(logit, tgt_pts, w_pts).mean(),
        "loss_comp_dice": dice_loss(logit, tgt_pts, w_pts).mean(),
    }
