"""Weak-shot pseudo-label refinement with GF-SAM (``simformer pseudo-label --refine gfsam``,
docs/gfsam.md "Pseudo-label refinement").

A training image knows its base pixels (GT) and only the presence of its novel classes. For a
novel class c that the image's mixed pseudo label (``pseudo_label.mixed_label``) already marks,
GF-SAM re-selects c's region among the image's proposals, with a *reference* training image as the
support: one that contains c and, when possible, shares no other novel class with the image (the
de-confounded pairing of ``simformer.data.reference``). The reference's novel pixels carry no GT,
so its support mask is its own mixed pseudo-label region of c, and its labelled pixels of other
classes (base GT, other novel regions) are the support background; its 255 pixels are unknown
(``View.valid`` False).
"""
from __future__ import annotations

import os
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from simformer.fewshot.base import FOREGROUND_THRESHOLD, View

IGNORE = 255


def reference_support(view: View, label: np.ndarray, class_id: int) -> View:
    """The reference ``view`` as the support of ``class_id``: mask = its pseudo label == class,
    valid = its labelled pixels. label uint8 [H,W] at the view's size."""
    lab = torch.as_tensor(np.asarray(label).astype(np.int64))
    return view.with_mask(lab == int(class_id), valid=lab != IGNORE)


def refine_pseudo_label(mixed_label: np.ndarray, image_labels: np.ndarray, novel_ids: Sequence[int],
                        query_view: View, references: Mapping[int, Tuple[View, np.ndarray]], method,
                        *, min_pixels: int = 1) -> np.ndarray:
    """The mixed label with each refinable novel region replaced by GF-SAM's selection.

    Args:
        mixed_label: uint8 [H,W], 255 = unlabelled (base GT + novel predictions, see ``mixed_label``).
        image_labels: bool [K] image-level presence; novel_ids: the novel class ids.
        query_view: the image's View (its proposals are what GF-SAM selects from).
        references: class id -> (reference View, the reference's mixed label uint8 [h,w]).
        method: a few-shot method (``predict(query, supports) -> [H,W]``), GF-SAM here.
        min_pixels: least pixels of the class in the reference's label to use it.
    Returns uint8 [H,W]. A class c is *refined* when it is novel, in ``image_labels``, has a region
    in ``mixed_label``, has a usable reference, and GF-SAM selects a non-empty set S_c. Then:
    - c's old region becomes free; pixels labelled by base GT or by unrefined novel classes are
      never changed; free pixels = 255 pixels plus the old regions of refined classes;
    - a free pixel selected by exactly one refined class gets that class; one selected by several
      keeps its old label when that is one of them, else becomes 255; an unselected free pixel is 255.
    Classes that are not refined keep their region as it is.
    """
    mixed = np.asarray(mixed_label, dtype=np.uint8)
    k = len(image_labels)
    classes, selections = [], []
    for c in sorted(int(i) for i in novel_ids):
        if c >= k or not image_labels[c] or c not in references or not (mixed == c).any():
            continue
        ref_view, ref_label = references[c]
        if int((np.asarray(ref_label) == c).sum()) < max(1, int(min_pixels)):
            continue
        sel = method.predict(query_view, [reference_support(ref_view, ref_label, c)]) > FOREGROUND_THRESHOLD
        if sel.any():
            classes.append(c)
            selections.append(sel.cpu().numpy())
    if not classes:
        return mixed.copy()
    ids = np.array(classes, dtype=np.uint8)
    sels = np.stack(selections)  # [R,H,W]
    free = (mixed == IGNORE) | np.isin(mixed, ids)
    count = sels.sum(0)
    out = np.where(free, IGNORE, mixed).astype(np.uint8)
    single = free & (count == 1)
    out[single] = ids[sels.argmax(0)][single]
    old_rank = np.full(256, -1, np.int64)
    old_rank[ids] = np.arange(len(ids))
    r = old_rank[mixed]  # index of the old label among the refined classes, -1 if none
    old_claims = (r >= 0) & np.take_along_axis(sels, np.maximum(r, 0)[None], 0)[0]
    keep_old = free & (count > 1) & old_claims
    out[keep_old] = mixed[keep_old]
    return out


def pick_reference(index: int, class_id: int, presence: np.ndarray, novel_mask: np.ndarray, usable: np.ndarray,
                   rng: np.random.Generator) -> Optional[int]:
    """A reference image for class ``class_id`` of image ``index``: drawn among the other images
    whose pseudo label has the class (``usable`` bool [N]) and whose novel classes meet the image's
    in exactly {class_id}; among all usable ones when none does; None when there is none.
    presence bool [N,K] (image-level labels), novel_mask bool [K]."""
    cand = np.asarray(usable, dtype=bool).copy()
    cand[index] = False
    shared = (presence[:, novel_mask] & presence[index, novel_mask]).sum(1)
    deconf = cand & (shared == 1)
    pool = np.flatnonzero(deconf if deconf.any() else cand)
    return int(rng.choice(pool)) if len(pool) else None


def refine_pseudo_labels(records: Sequence[dict], presence: np.ndarray, novel_mask: np.ndarray, mixed_dir: str,
                         out_dir: str, source, method, metric, *, seed: int, min_pixels: int,
                         rank: int = 0, world_size: int = 1) -> Dict[str, int]:
    """Refine every training image's mixed label (``mixed_dir/<image_id>.png``) into
    ``out_dir/<image_id>.png`` (atomically; existing files are kept and only scored) and score each
    against the full GT into ``metric`` (``SemSegEvaluator``). This rank handles records
    ``rank::world_size``. ``source``: a ProposalSource (image float32 [3,H,W] 0..255 -> View).
    The reference draw of image i uses ``numpy.random.default_rng([seed, i])`` (order-independent).
    Returns counts {"refined_images", "classes_with_reference", "skipped", "written",
    "labelled_pixels", "pixels"}.
    """
    from simformer.utils.io import read_image, read_label, save_label_png

    novel_mask = np.asarray(novel_mask, dtype=bool)
    novel_ids = np.flatnonzero(novel_mask)
    k = len(novel_mask)
    mixed_path = [os.path.join(mixed_dir, f"{r['image_id']}.png") for r in records]
    # pixel counts of every class in every mixed label: which images can serve as a reference
    region = np.stack([np.bincount(read_label(p).ravel(), minlength=256)[:k] for p in mixed_path])
    usable = region >= max(1, int(min_pixels))
    counts = {"refined_images": 0, "classes_with_reference": 0, "skipped": 0, "written": 0, "labelled_pixels": 0,
              "pixels": 0}

    def view_of(i: int) -> View:
        img = torch.from_numpy(np.ascontiguousarray(read_image(records[i]["file_name"]).transpose(2, 0, 1)))
        return source(img.float())

    for i in range(rank, len(records), max(1, world_size)):
        rec = records[i]
        path = os.path.join(out_dir, f"{rec['image_id']}.png")
        gt = read_label(rec["sem_seg_file_name"])
        if os.path.isfile(path):
            label = read_label(path)
            metric.process(label, gt, name=path)
            counts["skipped"] += 1
            counts["labelled_pixels"] += int((label != IGNORE).sum())
            counts["pixels"] += int(label.size)
            continue
        mixed = read_label(mixed_path[i])
        todo = [int(c) for c in novel_ids if presence[i, c] and region[i, c] > 0]
        rng = np.random.default_rng([int(seed), i])
        refs = {}
        for c in todo:
            j = pick_reference(i, c, presence, novel_mask, usable[:, c], rng)
            if j is not None:
                refs[c] = (view_of(j), read_label(mixed_path[j]))
        label = mixed
        if refs:
            label = refine_pseudo_label(mixed, presence[i], novel_ids, view_of(i), refs, method, min_pixels=min_pixels)
            counts["refined_images"] += int((label != mixed).any())
            counts["classes_with_reference"] += len(refs)
        save_label_png(path, label)
        counts["written"] += 1
        counts["labelled_pixels"] += int((label != IGNORE).sum())
        counts["pixels"] += int(label.size)
        metric.process(label, gt, name=path)
    return counts
