"""Generating base/novel class splits and summarising them.

All generators return a validated :class:`simformer.data.class_split.Split`; write it with
``save_split``. The ``source`` field records how the split was made so that it can be
regenerated:

- ``paper_split("coco_stuff_10k/split1")``: the paper's lists (package data, 9 COCO-Stuff-10K and
  4 ADE20K splits).
- ``random_split(..., seed=s)``: ``round(ratio * K)`` novel classes drawn with
  ``np.random.default_rng(s)``; optionally only among classes present in at least ``min_images``
  training images.
- ``nested_splits(..., seed=s, num_novel=[n1, n2, ...])``: one seeded permutation, novel set =
  its first n classes, so the splits are nested ("more novel classes", like the paper's COCO
  splits 4..9).

Both seeded generators draw the same permutation, so ``random_split(seed=s)`` with n novel
classes equals the n-class member of ``nested_splits(seed=s)`` (same constraint assumed).
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from typing import Dict, List, Optional, Sequence

import numpy as np

from .class_split import Split, make_split


# ----------------------------------------------------------------------------- paper splits
@lru_cache(maxsize=1)
def _paper_data() -> Dict[str, Dict[str, List[int]]]:
    from importlib import resources

    return json.loads(resources.files("simformer.resources").joinpath("paper_splits.json").read_text())


def paper_split_keys() -> List[str]:
    """All paper split keys, e.g. ``["coco_stuff_10k/split1", ..., "ade20k/split4"]``."""
    data = _paper_data()
    keys = []
    for family in data:
        keys += [f"{family}/{name}" for name in sorted(data[family], key=lambda s: int(s.replace("split", "")))]
    return keys


def paper_split(key: str) -> Split:
    """The paper's split ``"<family>/split<i>"`` (COCO-Stuff-10K split1..9, ADE20K split1..4)."""
    data = _paper_data()
    family, _, name = key.partition("/")
    if family not in data or name not in data[family]:
        raise KeyError(f"Unknown paper split '{key}'; known: {', '.join(paper_split_keys())}")
    from .catalog import class_names

    return make_split(family, class_names(family), data[family][name], {"method": "paper", "key": key})


# ----------------------------------------------------------------------------- seeded splits
def _num_novel(novel_ratio: float, k: int) -> int:
    if not 0.0 < novel_ratio < 1.0:
        raise ValueError(f"novel_ratio must be in (0, 1), got {novel_ratio}")
    n = int(math.floor(novel_ratio * k + 0.5))  # round half up: 0.25 * 150 = 37.5 -> 38 (paper ADE20K)
    if not 1 <= n <= k - 1:
        raise ValueError(f"novel_ratio {novel_ratio} of {k} classes gives {n} novel classes; need 1..{k - 1}")
    return n


def _eligible_classes(k: int, presence: Optional[np.ndarray], min_images: int) -> np.ndarray:
    """Class ids allowed to become novel: present in >= ``min_images`` rows of ``presence``."""
    if min_images <= 0:
        return np.arange(k)
    if presence is None:
        raise ValueError("min_images > 0 needs the training presence matrix (presence=[N, K] bool)")
    presence = np.asarray(presence)
    if presence.ndim != 2 or presence.shape[1] != k:
        raise ValueError(f"presence must be [N, {k}] (training images x classes), got shape {presence.shape}")
    images_per_class = (presence > 0).sum(axis=0)
    return np.flatnonzero(images_per_class >= min_images)


def _constraint_source(presence: Optional[np.ndarray], min_images: int) -> dict:
    if min_images <= 0:
        return {}
    return {"min_images": int(min_images), "num_train_images": int(np.asarray(presence).shape[0])}


def _seeded_order(k: int, seed: int, presence: Optional[np.ndarray], min_images: int, need: int) -> np.ndarray:
    """A seeded random order of the classes that may become novel (first ``need`` are used).

    Drawing uniformly among the eligible classes has exactly the distribution of rejection
    sampling (draw among all, redraw until every novel class qualifies) without its retries, and
    never fails when a valid split exists.
    """
    eligible = _eligible_classes(k, presence, min_images)
    if len(eligible) < need:
        raise ValueError(
            f"Cannot pick {need} novel classes present in >= {min_images} training images each: only "
            f"{len(eligible)} of {k} classes qualify. Lower --min-images or the number of novel classes."
        )
    rng = np.random.default_rng(seed)
    return rng.permutation(eligible)


def random_split(dataset: str, class_names: Sequence[str], *, novel_ratio: float = 0.25, seed: int,
                 presence: Optional[np.ndarray] = None, min_images: int = 0) -> Split:
    """A reproducible random split with ``round(novel_ratio * K)`` novel classes.

    Args:
        dataset: family name stored in the split (e.g. ``"toyscenes"``).
        class_names: the K class names in id order.
        novel_ratio: share of classes made novel (paper: 0.25).
        seed: seed of ``np.random.default_rng``; the same seed gives the same split.
        presence: bool ``[N, K]`` presence matrix of the training set (needed for ``min_images``).
        min_images: every novel class must occur in at least this many training images.
    Raises:
        ValueError if the ratio is out of range or the constraint cannot be met.
    """
    k = len(class_names)
    n = _num_novel(novel_ratio, k)
    order = _seeded_order(k, seed, presence, min_images, n)
    source = {"method": "random", "seed": int(seed), "novel_ratio": float(novel_ratio), "num_novel": n}
    constraints = _constraint_source(presence, min_images)
    if constraints:
        source["constraints"] = constraints
    return make_split(dataset, class_names, order[:n].tolist(), source)


def nested_splits(dataset: str, class_names: Sequence[str], *, seed: int, num_novel: Sequence[int],
                  presence: Optional[np.ndarray] = None, min_images: int = 0) -> List[Split]:
    """Nested splits: novel set i = first ``num_novel[i]`` classes of one seeded permutation.

    Returns one Split per entry of ``num_novel`` (same order), so a larger novel set always
    contains every smaller one. ``presence``/``min_images`` restrict the permutation to classes
    present in enough training images, as in :func:`random_split`.
    """
    k = len(class_names)
    sizes = [int(x) for x in num_novel]
    if not sizes:
        raise ValueError("num_novel must list at least one size")
    bad = [x for x in sizes if not 1 <= x <= k - 1]
    if bad:
        raise ValueError(f"num_novel {bad} out of range: each must be in 1..{k - 1} for {k} classes")
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"num_novel {sizes} lists a size twice")
    order = _seeded_order(k, seed, presence, min_images, max(sizes))
    constraints = _constraint_source(presence, min_images)
    out = []
    for n in sizes:
        source = {"method": "nested", "seed": int(seed), "num_novel": n, "nested_sizes": sorted(sizes)}
        if constraints:
            source["constraints"] = constraints
        out.append(make_split(dataset, class_names, order[:n].tolist(), source))
    return out


# ----------------------------------------------------------------------------- summaries
def split_summary(split: Split, counts: Optional[np.ndarray] = None) -> dict:
    """Facts about a split; with the training set's pixel counts also how much of it is novel.

    Args:
        split: the split.
        counts: optional int ``[N, K]`` pixel counts of the training images
            (``simformer.data.presence.class_pixel_counts``); 255-ignored pixels are not in it.
    Returns:
        dict with ``dataset, num_classes, num_base, num_novel, novel_ids, novel_names, source`` and,
        with counts: ``num_train_images``, ``novel_pixel_share`` (novel / labelled training pixels),
        ``images_with_novel_share`` (images containing >= 1 novel class), ``images_without_base``
        (images with no base pixel, i.e. no mask supervision), ``novel_images_min``/``_median``/
        ``_max`` (training images per novel class), ``novel_min_class`` and ``absent_novel``
        (novel classes in no training image).
    """
    novel = list(split.novel)
    out = {
        "dataset": split.dataset,
        "num_classes": split.num_classes,
        "num_base": len(split.base),
        "num_novel": len(novel),
        "novel_ids": novel,
        "novel_names": [split.class_names[i] for i in novel],
        "source": dict(split.source),
    }
    if counts is None:
        return out
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[1] != split.num_classes:
        raise ValueError(f"pixel counts must be [N, {split.num_classes}], got shape {counts.shape}")
    mask = split.novel_mask()
    present = counts > 0
    total = int(counts.sum())
    images_per_class = present.sum(axis=0)
    out["num_train_images"] = int(counts.shape[0])
    out["novel_pixel_share"] = float(counts[:, mask].sum() / total) if total else 0.0
    n_img = max(1, counts.shape[0])
    out["images_with_novel_share"] = float(present[:, mask].any(axis=1).sum() / n_img)
    out["images_without_base"] = int((~present[:, ~mask].any(axis=1)).sum())
    if novel:
        per_novel = images_per_class[novel]
        out["novel_images_min"] = int(per_novel.min())
        out["novel_images_median"] = float(np.median(per_novel))
        out["novel_images_max"] = int(per_novel.max())
        out["novel_min_class"] = split.class_names[novel[int(np.argmin(per_novel))]]
        out["absent_novel"] = [split.class_names[i] for i in novel if images_per_class[i] == 0]
    return out


def format_summary(summary: dict) -> str:
    """Human-readable text of :func:`split_summary`'s dict."""
    src = summary.get("source") or {}
    src_txt = ", ".join(f"{k}={v}" for k, v in src.items() if k != "nested_sizes") or "unknown"
    lines = [
        f"dataset {summary['dataset']}: {summary['num_classes']} classes, "
        f"{summary['num_base']} base, {summary['num_novel']} novel  (source: {src_txt})",
        "novel: " + ("; ".join(f"{i}:{n}" for i, n in zip(summary["novel_ids"], summary["novel_names"])) or "(none)"),
    ]
    if "num_train_images" in summary:
        lines.append(
            f"training set ({summary['num_train_images']} images): novel pixels "
            f"{100 * summary['novel_pixel_share']:.1f}% of labelled pixels; images with >= 1 novel class "
            f"{100 * summary['images_with_novel_share']:.1f}%; images without any base pixel "
            f"{summary['images_without_base']}"
        )
        if "novel_images_min" in summary:
            lines.append(
                f"images per novel class: min {summary['novel_images_min']} ({summary['novel_min_class']}), "
                f"median {summary['novel_images_median']:g}, max {summary['novel_images_max']}"
            )
            if summary["absent_novel"]:
                lines.append("WARNING: novel classes absent from the training set: " + ", ".join(summary["absent_novel"]))
    return "\n".join(lines)
