"""Reference-image choice for the pixel-pair losses (docs/method.md section 4).

For a training image i with novel classes N_i and base classes B_i (image-level presence):

level 0  |N_i| >= 2: pick one c in N_i at random and a reference whose novel classes intersect
         N_i in exactly {c} ("de-confounded": the shared novel class is unambiguous);
level 1  otherwise (or when level 0 has no candidate for the chosen c): a reference sharing >= 1
         novel class;
level 2  else a reference sharing >= 1 base class;
level 3  else the image itself.

Everything is computed from the (images x classes) presence matrix with matrix products, in row
chunks so that ADE20K (20k x 20k pairs) fits in memory. ``pair_statistics`` summarises the whole
dataset (cached on disk next to the presence cache); ``ReferenceSampler.sample`` evaluates one
row vectorised (O(N x K)), which is what a data-loader worker does per image.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

LEVEL_NAMES = ("deconfounded-novel", "shared-novel", "shared-base", "self")


@dataclass
class PairStatistics:
    """Per image: the rule level that applies (0..3) and how many candidate references it has.

    ``deconf_counts[i, c]`` = number of references sharing exactly novel class c with image i
    (columns = novel classes in split order; 0 where c is not in image i).
    """

    level: np.ndarray  # int8 [N]
    candidates: np.ndarray  # int64 [N]
    deconf_counts: np.ndarray  # int32 [N, Kn]

    def summary(self) -> dict:
        n = len(self.level)
        return {
            "images": int(n),
            **{f"share_{name}": float(np.mean(self.level == k)) if n else 0.0 for k, name in enumerate(LEVEL_NAMES)},
            "median_candidates": float(np.median(self.candidates)) if n else 0.0,
        }


def _rows_level(pn_rows: np.ndarray, pb_rows: np.ndarray, pn: np.ndarray, pb: np.ndarray,
                row_ids: np.ndarray) -> tuple:
    """Level, candidate count and de-confounded counts for a chunk of anchor rows."""
    shared_novel = pn_rows @ pn.T  # [R, N] number of shared novel classes
    shared_base = pb_rows @ pb.T
    shared_novel[np.arange(len(row_ids)), row_ids] = 0  # never pair an image with itself here
    shared_base[np.arange(len(row_ids)), row_ids] = 0
    exactly_one = (shared_novel == 1).astype(np.float32)
    deconf = (exactly_one @ pn) * pn_rows  # [R, Kn]: refs whose only shared novel class is c
    n_novel = pn_rows.sum(1)
    has_deconf = (n_novel >= 2) & (deconf.sum(1) > 0)
    n_shared_novel = (shared_novel > 0).sum(1)
    n_shared_base = (shared_base > 0).sum(1)
    level = np.full(len(row_ids), 3, dtype=np.int8)
    count = np.ones(len(row_ids), dtype=np.int64)
    for lvl, ok, cnt in ((2, n_shared_base > 0, n_shared_base), (1, n_shared_novel > 0, n_shared_novel),
                         (0, has_deconf, deconf.sum(1))):
        level = np.where(ok, lvl, level)
        count = np.where(ok, cnt, count)
    return level, count.astype(np.int64), deconf.astype(np.int32)


def pair_statistics(presence: np.ndarray, novel_mask: np.ndarray, chunk: int = 1024) -> PairStatistics:
    """Vectorised rule statistics for every image. presence: bool [N, K]; novel_mask: bool [K]."""
    presence = np.asarray(presence, dtype=bool)
    pn = presence[:, novel_mask].astype(np.float32)
    pb = presence[:, ~novel_mask].astype(np.float32)
    n = len(presence)
    levels, counts, deconfs = [], [], []
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        lvl, cnt, dec = _rows_level(pn[rows], pb[rows], pn, pb, rows)
        levels.append(lvl)
        counts.append(cnt)
        deconfs.append(dec)
    if not levels:
        return PairStatistics(np.zeros(0, np.int8), np.zeros(0, np.int64), np.zeros((0, pn.shape[1]), np.int32))
    return PairStatistics(np.concatenate(levels), np.concatenate(counts), np.concatenate(deconfs))


def cached_pair_statistics(presence: np.ndarray, novel_mask: np.ndarray, cache_dir: Optional[str]) -> PairStatistics:
    """``pair_statistics`` cached in ``cache_dir`` keyed by the presence matrix and split."""
    if not cache_dir:
        return pair_statistics(presence, novel_mask)
    key = hashlib.sha1(np.packbits(presence).tobytes() + np.packbits(novel_mask).tobytes()
                       + str(presence.shape).encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, f"pairs_{key}.npz")
    if os.path.isfile(path):
        with np.load(path) as z:
            return PairStatistics(z["level"], z["candidates"], z["deconf_counts"])
    stats = pair_statistics(presence, novel_mask)
    from simformer.utils.io import atomic_path

    with atomic_path(path, ".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, level=stats.level, candidates=stats.candidates, deconf_counts=stats.deconf_counts)
    return stats


class ReferenceSampler:
    """Draws the reference image of a training image.

    Args:
        presence: bool [N, K] image-level class presence of the training set.
        novel_mask: bool [K].
        mode: "cross" (the rule above) or "self" (always the image itself; Table 5 ablation).
        stats: precomputed ``PairStatistics`` (computed here when omitted).
    """

    def __init__(self, *, presence: np.ndarray, novel_mask: np.ndarray, mode: str = "cross",
                 stats: Optional[PairStatistics] = None):
        if mode not in ("cross", "self"):
            raise ValueError(f"WEAKSHOT.PAIR_MODE must be 'cross', 'self' or 'none', got '{mode}'")
        self.mode = mode
        self.presence = np.asarray(presence, dtype=bool)
        self.novel_mask = np.asarray(novel_mask, dtype=bool)
        self.pn = self.presence[:, self.novel_mask].astype(np.float32)
        self.pb = self.presence[:, ~self.novel_mask].astype(np.float32)
        self.stats = stats if stats is not None or mode == "self" else pair_statistics(self.presence, self.novel_mask)

    def __len__(self) -> int:
        return len(self.presence)

    def sample(self, index: int, rng: np.random.Generator) -> int:
        if self.mode == "self":
            return int(index)
        level = int(self.stats.level[index])
        if level == 3:
            return int(index)
        if level <= 1:
            shared_novel = self.pn @ self.pn[index]
            shared_novel[index] = 0
            if level == 0:
                novel_here = np.flatnonzero(self.stats.deconf_counts[index] > 0)
                c = int(rng.choice(novel_here))
                cand = np.flatnonzero((shared_novel == 1) & (self.pn[:, c] > 0))
            else:
                cand = np.flatnonzero(shared_novel > 0)
        else:
            shared_base = self.pb @ self.pb[index]
            shared_base[index] = 0
            cand = np.flatnonzero(shared_base > 0)
        return int(rng.choice(cand))
