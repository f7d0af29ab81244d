"""Proposal analysis: are the masks wrong, or is the class assigned to them wrong? (docs/proposals.md)

For every class c, summed over a dataset as intersection / union pixel counts (so each figure is one
dataset-level IoU, like the confusion-matrix mIoU of :mod:`simformer.evaluation.sem_seg`):

* **achieved**: the model's semantic prediction (argmax of its score maps) against the GT:
  ``I = |pred==c & gt==c|``, ``U = |pred==c | gt==c|`` over the valid (non-ignore) pixels of every
  image. This is the evaluator's per-class IoU.
* **oracle**: per image in which c is *present* in the GT, the single proposal (query mask,
  binarised at 0.5) with the highest IoU against c's GT mask; its I and U are added to c's sums.
  Images without c add nothing: the oracle is an upper bound on mask quality *given* that the class
  is there (it never pays for false positives on images without the class, which the achieved
  figure does; that part of the gap is a class-assignment error by construction).
* **union**: per image with c present, the greedy union of proposals: start from the oracle's
  proposal and repeatedly add the proposal whose addition gives the highest IoU of the union, as
  long as that IoU increases. Always >= the oracle, image by image.

All proposal-versus-class IoUs of an image come from one matrix product of the flattened binary
masks ``[N,P] @ [P,C]`` (P valid pixels, C classes present); each greedy step is two such products
over all proposals and all still-improving classes at once, and there are at most N steps.

The MM-Former release's oracle script takes ``topk(2)`` and index 1, i.e. the *second*-best
proposal; here the oracle is the best one, by definition.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np
import torch

__all__ = ["ProposalAccumulator", "image_proposal_counts", "oracle_choice", "greedy_union", "SUM_KEYS"]

# Per-class int64 sums kept by the accumulator.
SUM_KEYS = ("achieved_i", "achieved_u", "oracle_i", "oracle_u", "union_i", "union_u", "gt_pixels", "images")


def _as_tensor(x) -> torch.Tensor:
    return x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))


def oracle_choice(inter: torch.Tensor, union: torch.Tensor) -> torch.Tensor:
    """Index of the best proposal per class: argmax over N of ``inter / union`` (first on ties).

    inter, union: int64 ``[N, C]`` (union > 0). Returns int64 ``[C]``.
    """
    iou = inter.double() / union.double()
    return iou.argmax(0)


def greedy_union(masks: torch.Tensor, gt_masks: torch.Tensor, start: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Greedy union of proposals per class, vectorised over proposals and classes.

    Args:
        masks: binary proposals ``[N, P]`` (float or bool) over P pixels.
        gt_masks: binary GT masks ``[C, P]`` of C classes, each non-empty.
        start: int64 ``[C]``: the first proposal of each class (the oracle's choice).

    Step: for every class still improving and every proposal n, the union with n has
    ``I' = I + |M_n & G & ~U|`` and ``U' = U + |M_n & ~G & ~U|`` (two matrix products); the
    proposal with the highest ``I'/U'`` (first on ties) is added when ``I'/U' > I/U`` (compared
    exactly as ``I'*U > I*U'`` on integers); a class stops at its first step without an increase.
    A proposal already in the union adds nothing, so there are at most N steps.

    Returns ``{"inter": int64 [C], "union": int64 [C], "chosen": bool [C, N]}``.
    """
    m = masks.float()
    g = gt_masks.bool()
    n, c = m.shape[0], g.shape[0]
    mb = m.bool()
    cur = mb[start]  # [C, P]
    inter = (cur & g).sum(1)
    union = (cur | g).sum(1)
    chosen = torch.zeros(c, n, dtype=torch.bool)
    chosen[torch.arange(c), start] = True
    active = torch.ones(c, dtype=torch.bool)
    for _ in range(n):
        idx = torch.nonzero(active).flatten()
        if idx.numel() == 0:
            break
        free = ~cur[idx]
        gi = g[idx]
        gain_i = _count(m, free & gi)  # [N, Ca]
        gain_u = _count(m, free & ~gi)
        new_i, new_u = inter[idx][None] + gain_i, union[idx][None] + gain_u
        better = new_i * union[idx][None] > inter[idx][None] * new_u
        score = torch.where(better, new_i.double() / new_u.double(), torch.full_like(new_i, -1, dtype=torch.float64))
        best = score.argmax(0)
        improved = better.any(0)
        active[idx[~improved]] = False
        up, pick = idx[improved], best[improved]
        if up.numel() == 0:
            break
        cols = torch.nonzero(improved).flatten()
        inter[up] = new_i[pick, cols]
        union[up] = new_u[pick, cols]
        cur[up] |= mb[pick]
        chosen[up, pick] = True
    return {"inter": inter, "union": union, "chosen": chosen}


def _count(m: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    """Exact pixel counts ``|M_n & S_c|`` as int64 ``[N, C]`` from ``m [N,P]`` and ``sel bool [C,P]``.

    float32 sums of 0/1 are exact below 2^24 pixels; larger images use float64."""
    dtype = torch.float32 if m.shape[1] < 2 ** 24 else torch.float64
    return torch.matmul(m.to(dtype), sel.to(dtype).T).round().long()


def image_proposal_counts(mask_probs, pred, gt, num_classes: int, *, ignore_label: int = 255,
                          threshold: float = 0.5, name: str = "<unnamed image>") -> Dict[str, np.ndarray]:
    """One image's per-class counts (each int64 ``[K]``, keys :data:`SUM_KEYS`).

    Args:
        mask_probs: proposal probabilities ``[N, H, W]`` (or a bool mask); a pixel belongs to a
            proposal when its probability is > ``threshold``.
        pred: predicted class ids ``[H, W]`` (values >= K, e.g. 255, = no class: a miss).
        gt: GT class ids ``[H, W]``; ``ignore_label`` pixels are excluded from every count.
        name: the image, for error messages.
    """
    probs, pred, gt = _as_tensor(mask_probs), _as_tensor(pred), _as_tensor(gt)
    if probs.dim() != 3 or probs.shape[-2:] != gt.shape or pred.shape != gt.shape:
        raise ValueError(f"{name}: proposals {tuple(probs.shape)}, prediction {tuple(pred.shape)} and GT "
                         f"{tuple(gt.shape)} must be [N,H,W], [H,W], [H,W] at the same H, W")
    k = int(num_classes)
    gt, pred = gt.long().cpu().flatten(), pred.long().cpu().flatten()
    valid = gt != ignore_label
    g = gt[valid]
    if g.numel() and (g.min() < 0 or g.max() >= k):
        raise ValueError(f"{name}: GT holds ids outside 0..{k - 1} (and != {ignore_label}): {int(g.max())}")
    p = pred[valid]
    gt_pixels = torch.bincount(g, minlength=k)[:k]
    achieved_i = torch.bincount(g[p == g], minlength=k)[:k]
    pred_pixels = torch.bincount(p[(p >= 0) & (p < k)], minlength=k)[:k]
    out = {key: torch.zeros(k, dtype=torch.long) for key in SUM_KEYS}
    out.update(achieved_i=achieved_i, achieved_u=gt_pixels + pred_pixels - achieved_i, gt_pixels=gt_pixels)
    present = torch.nonzero(gt_pixels > 0).flatten()
    out["images"][present] = 1
    if present.numel():
        masks = (probs.bool() if probs.dtype == torch.bool else probs.float() > threshold).cpu().flatten(1)[:, valid]
        if masks.shape[0] == 0:  # no proposals: the best "proposal" is empty, I = 0, U = |G|
            for key in ("oracle_u", "union_u"):
                out[key][present] = gt_pixels[present]
        else:
            gt_masks = g[None] == present[:, None]  # [C, P]
            m = masks.float()
            inter = _count(m, gt_masks)  # [N, C]
            union = m.sum(1, keepdim=True).long() + gt_pixels[present][None] - inter
            best = oracle_choice(inter, union)
            cols = torch.arange(present.numel())
            out["oracle_i"][present] = inter[best, cols]
            out["oracle_u"][present] = union[best, cols]
            greedy = greedy_union(m, gt_masks, best)
            out["union_i"][present] = greedy["inter"]
            out["union_u"][present] = greedy["union"]
    return {key: v.numpy().astype(np.int64) for key, v in out.items()}


class ProposalAccumulator:
    """Sums :func:`image_proposal_counts` over a dataset; per-class IoUs and group means.

    Args:
        class_names: the K class names.
        novel_mask: bool ``[K]`` (True = novel); None = no base/novel grouping.
        ignore_label: GT value excluded everywhere.
        threshold: proposal binarisation threshold on the mask probabilities.
    """

    def __init__(self, class_names, novel_mask: Optional[np.ndarray] = None, *, ignore_label: int = 255,
                 threshold: float = 0.5):
        self.class_names = list(class_names)
        k = len(self.class_names)
        if novel_mask is not None:
            novel_mask = np.asarray(novel_mask, dtype=bool)
            if novel_mask.shape != (k,):
                raise ValueError(f"novel_mask must have shape ({k},), got {novel_mask.shape}")
        self.novel_mask = novel_mask
        self.ignore_label = int(ignore_label)
        self.threshold = float(threshold)
        self.reset()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def reset(self) -> None:
        self.sums = {key: np.zeros(self.num_classes, dtype=np.int64) for key in SUM_KEYS}
        self.num_images = 0
        self.num_proposals = None
        self.object_queries = 0
        self.images_with_class_probs = 0

    def process(self, mask_probs, pred, gt, name: str = "<unnamed image>", class_probs=None) -> None:
        """Add one image: proposals ``[N,H,W]``, prediction ``[H,W]``, GT ``[H,W]`` (same H, W), and
        optionally the proposals' class probabilities ``[N,K+1]`` (last = "no object") to count the
        queries that predict a class (argmax not "no object", MaskFormer's keep rule)."""
        counts = image_proposal_counts(mask_probs, pred, gt, self.num_classes, ignore_label=self.ignore_label,
                                       threshold=self.threshold, name=name)
        for key in SUM_KEYS:
            self.sums[key] += counts[key]
        self.num_images += 1
        self.num_proposals = int(mask_probs.shape[0])
        if class_probs is not None:
            class_probs = _as_tensor(class_probs)
            if class_probs.shape != (mask_probs.shape[0], self.num_classes + 1):
                raise ValueError(f"{name}: class_probs must be [N, K+1] = [{mask_probs.shape[0]}, "
                                 f"{self.num_classes + 1}], got {tuple(class_probs.shape)}")
            self.object_queries += int((class_probs.argmax(-1) != self.num_classes).sum())
            self.images_with_class_probs += 1

    def synchronize(self) -> None:
        """Sum the counts of every rank (no-op in one process)."""
        from simformer.utils import comm

        if comm.get_world_size() == 1:
            return
        flat = {f"{key}/{c}": int(v) for key in SUM_KEYS for c, v in enumerate(self.sums[key])}
        flat.update(num_images=self.num_images, object_queries=self.object_queries,
                    images_with_class_probs=self.images_with_class_probs)
        total = comm.all_reduce_sum(flat)
        self.sums = {key: np.array([total[f"{key}/{c}"] for c in range(self.num_classes)], dtype=np.int64)
                     for key in SUM_KEYS}
        self.num_images = total["num_images"]
        self.object_queries = total["object_queries"]
        self.images_with_class_probs = total["images_with_class_probs"]

    def per_class_iou(self, kind: str) -> np.ndarray:
        """Percent IoU ``[K]`` of ``kind`` in achieved / oracle / union; NaN for a class without
        GT pixels in the dataset (excluded from the means, as the evaluator's "current" convention)."""
        i, u = self.sums[f"{kind}_i"], self.sums[f"{kind}_u"]
        iou = np.full(self.num_classes, np.nan)
        ok = (self.sums["gt_pixels"] > 0) & (u > 0)
        iou[ok] = 100.0 * i[ok] / u[ok]
        return iou

    def group_means(self, kind: str) -> Dict[str, Optional[float]]:
        """Mean IoU of ``kind`` over base, novel and all classes with GT pixels (None = no class)."""
        iou = self.per_class_iou(kind)
        groups = {"all": np.ones(self.num_classes, dtype=bool)}
        if self.novel_mask is not None and self.novel_mask.any():
            groups.update(base=~self.novel_mask, novel=self.novel_mask)
        out = {"base": None, "novel": None, "all": None}
        for group, sel in groups.items():
            v = iou[sel & ~np.isnan(iou)]
            out[group] = float(v.mean()) if v.size else None
        return out

    def summary(self) -> dict:
        """metrics.json content: means per kind and group, and the oracle gaps (oracle - achieved)."""
        means = {kind: self.group_means(kind) for kind in ("achieved", "oracle", "union")}
        gap = {g: (None if means["oracle"][g] is None or means["achieved"][g] is None
                   else means["oracle"][g] - means["achieved"][g]) for g in ("base", "novel", "all")}
        # Queries predicting a class per image: 0 means the classifier answers "no object" for
        # every query, whatever the masks (docs/proposals.md, "64 queries").
        per_image = (self.object_queries / self.images_with_class_probs) if self.images_with_class_probs else None
        return {"num_images": self.num_images, "num_proposals": self.num_proposals, "threshold": self.threshold,
                **means, "oracle_gap": gap, "oracle_gap_novel": gap["novel"], "object_queries_per_image": per_image}

    def rows(self) -> list:
        """One dict per class: class_id, class_name, novel, the three IoUs (percent; NaN =
        undefined) and the I/U sums."""
        ious = {kind: self.per_class_iou(kind) for kind in ("achieved", "oracle", "union")}
        novel = self.novel_mask if self.novel_mask is not None else np.zeros(self.num_classes, dtype=bool)
        rows = []
        for c, name in enumerate(self.class_names):
            row = {"class_id": c, "class_name": name, "novel": bool(novel[c])}
            row.update({f"{kind}_iou": (None if math.isnan(ious[kind][c]) else float(ious[kind][c]))
                        for kind in ious})
            row.update({key: int(self.sums[key][c]) for key in SUM_KEYS})
            rows.append(row)
        return rows
