"""Semantic inference from mask-classification outputs, post-processing and test-time augmentation."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["semantic_inference", "sem_seg_postprocess", "shortest_edge_size", "tta_inference"]


def semantic_inference(mask_cls: torch.Tensor, mask_pred: torch.Tensor) -> torch.Tensor:
    """Per-class score maps: sum_q softmax(cls_q)[k] * sigmoid(mask_q), "no object" dropped.

    mask_cls: class logits [B,Q,K+1] (or [Q,K+1]); mask_pred: mask logits [B,Q,H,W] (or [Q,H,W]).
    Returns [B,K,H,W] (or [K,H,W] for unbatched input).
    """
    if mask_cls.dim() == 2 and mask_pred.dim() == 3:
        return semantic_inference(mask_cls[None], mask_pred[None])[0]
    if mask_cls.dim() != 3 or mask_pred.dim() != 4 or mask_cls.shape[:2] != mask_pred.shape[:2]:
        raise ValueError(
            "semantic_inference: expected mask_cls [B,Q,K+1] and mask_pred [B,Q,H,W] with the same "
            f"B,Q; got {tuple(mask_cls.shape)} and {tuple(mask_pred.shape)}."
        )
    probs = F.softmax(mask_cls, dim=-1)[..., :-1]
    return torch.einsum("bqk,bqhw->bkhw", probs, mask_pred.sigmoid())


def sem_seg_postprocess(result: torch.Tensor, img_size: Sequence[int], out_h: int, out_w: int) -> torch.Tensor:
    """Crop the padding off score maps and resize them to the original image size.

    result: [K,Hp,Wp] at the padded network-input resolution; img_size: (h, w) of the image inside
    it (before padding); out_h, out_w: original image size. Bilinear, align_corners=False.
    Returns [K,out_h,out_w].
    """
    h, w = int(img_size[0]), int(img_size[1])
    if result.dim() != 3 or h > result.shape[-2] or w > result.shape[-1] or h <= 0 or w <= 0:
        raise ValueError(
            f"sem_seg_postprocess: result {tuple(result.shape)} must be [K,H,W] with H>={h}, W>={w} > 0."
        )
    cropped = result[None, :, :h, :w]
    return F.interpolate(cropped, size=(int(out_h), int(out_w)), mode="bilinear", align_corners=False)[0]


def shortest_edge_size(h: int, w: int, short: int, max_size: int) -> tuple[int, int]:
    """Output (h, w) when resizing the short side to ``short`` with the long side capped at
    ``max_size`` (0 = no cap): the test mapper's own arithmetic (detectron2 ResizeShortestEdge)."""
    from simformer.data.transforms import compute_resized_shape

    return compute_resized_shape(h, w, short, max_size)


def tta_inference(
    predict_fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    *,
    min_sizes: Sequence[int],
    max_size: int,
    flip: bool,
    out_h: int,
    out_w: int,
) -> torch.Tensor:
    """Multi-scale (+ horizontal flip) test-time augmentation; probability maps averaged.

    predict_fn(images) contract: ``images`` is float32 [N,3,h,w], RGB 0..255, not normalised and
    not padded (N = 2 when ``flip``: the image and its mirror; else 1). It must return score maps
    [N,K,h,w] at exactly that input size (the caller normalises, pads, runs the model,
    ``semantic_inference`` and crops the padding off). Each scale's maps are resized bilinearly to
    (out_h, out_w), mirrored maps flipped back, and all are averaged.

    image: float32 [3,H,W] 0..255 (the original image, or any resized copy of it); scales are
    short-side sizes ``min_sizes`` with the long side capped at ``max_size`` (0 = no cap).
    Returns [K,out_h,out_w].
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"tta_inference: image must be [3,H,W], got {tuple(image.shape)}.")
    if len(min_sizes) == 0:
        raise ValueError("tta_inference: min_sizes is empty; set TEST.AUG.MIN_SIZES.")
    img = image.float()[None]
    h0, w0 = img.shape[-2:]
    total = None
    count = 0
    for short in min_sizes:
        nh, nw = shortest_edge_size(h0, w0, int(short), int(max_size))
        if (nh, nw) == (h0, w0):
            scaled = img
        else:
            # antialias matches PIL bilinear (detectron2's image resize) when shrinking
            scaled = F.interpolate(img, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        batch = torch.cat([scaled, scaled.flip(-1)]) if flip else scaled
        probs = predict_fn(batch)
        if probs.dim() != 4 or probs.shape[0] != batch.shape[0] or probs.shape[-2:] != (nh, nw):
            raise ValueError(
                f"tta_inference: predict_fn returned {tuple(probs.shape)} for input {tuple(batch.shape)}; "
                f"expected [{batch.shape[0]},K,{nh},{nw}]."
            )
        if flip:
            probs = torch.stack([probs[0], probs[1].flip(-1)])
        probs = F.interpolate(probs.float(), size=(int(out_h), int(out_w)), mode="bilinear", align_corners=False)
        s = probs.sum(0)
        total = s if total is None else total + s
        count += probs.shape[0]
    return total / count
