"""Few-shot metrics over episodes (docs/fewshot.md, "Metrics").

Default (HSNet / GF-SAM convention): per class, the foreground intersection and union are summed
over every episode of that class; IoU_c = sum I / sum U; mIoU = mean of IoU_c over the fold's
classes that had episodes. FB-IoU = mean of the foreground IoU and the background IoU, each summed
over all episodes of the fold (HSNet's ``fb_iou``).

``per_episode=True``: each episode's foreground IoU (and background IoU) is computed on its own;
IoU_c = mean over the class's episodes, mIoU = mean over classes, FB-IoU = mean over episodes of
(fg IoU + bg IoU) / 2. An empty union (possible for the background only, when both prediction and
ground truth cover the whole valid image) counts as IoU 1.

Pixels with ``valid`` False (void) count nowhere. Values are percentages, as every metric here.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import torch


def episode_counts(pred: torch.Tensor, gt: torch.Tensor, valid: Optional[torch.Tensor] = None) -> np.ndarray:
    """Foreground and background intersection / union of binary maps.

    Args:
        pred, gt: bool ``[..., H, W]`` (prediction, ground truth foreground).
        valid: bool ``[..., H, W]`` or None (all valid).
    Returns:
        int64 ``[..., 4]``: (I_fg, U_fg, I_bg, U_bg).
    """
    pred, gt = pred.bool(), gt.bool()
    v = torch.ones_like(gt) if valid is None else valid.bool()
    def count(x):
        return (x & v).flatten(-2).sum(-1)
    out = torch.stack([count(pred & gt), count(pred | gt), count(~pred & ~gt), count(~pred | ~gt)], -1)
    return out.cpu().numpy().astype(np.int64)


def _ratio(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    """I / U with an empty union counted as 1 (per-episode convention)."""
    inter, union = np.asarray(inter, np.float64), np.asarray(union, np.float64)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


class FewShotEvaluator:
    """Accumulates episodes of one method on one fold.

    Args:
        class_ids: the fold's classes.
        class_names: K names (for ``per_class``), optional.
        per_episode: the per-episode convention (module docstring).
    """

    def __init__(self, class_ids: Sequence[int], class_names: Optional[Sequence[str]] = None,
                 per_episode: bool = False):
        self.class_ids = [int(c) for c in class_ids]
        self.class_names = class_names
        self.per_episode = per_episode
        self._col = {c: j for j, c in enumerate(self.class_ids)}
        self.reset()

    def reset(self) -> None:
        c = len(self.class_ids)
        self.sums = np.zeros((c, 4), dtype=np.int64)     # per class: I_fg, U_fg, I_bg, U_bg
        self.episodes = np.zeros(c, dtype=np.int64)
        self.fg_iou_sum = np.zeros(c)                    # per-episode IoUs summed per class
        self.fb_iou_sum = 0.0                            # per-episode (fg + bg) / 2 summed

    def process(self, class_id: int, pred: torch.Tensor, gt: torch.Tensor,
                valid: Optional[torch.Tensor] = None) -> None:
        """One episode: ``pred``/``gt``/``valid`` bool [H,W] on the query."""
        self.process_counts([class_id], episode_counts(pred, gt, valid)[None])

    def process_counts(self, class_ids: Sequence[int], counts: np.ndarray) -> None:
        """Many episodes at once: ``class_ids`` [E], ``counts`` int64 [E, 4] from ``episode_counts``."""
        try:
            cols = np.array([self._col[int(c)] for c in class_ids], dtype=np.int64)
        except KeyError as e:
            raise ValueError(f"class {e.args[0]} is not in the fold {self.class_ids}") from None
        counts = np.asarray(counts, dtype=np.int64).reshape(len(cols), 4)
        np.add.at(self.sums, cols, counts)
        np.add.at(self.episodes, cols, 1)
        fg, bg = _ratio(counts[:, 0], counts[:, 1]), _ratio(counts[:, 2], counts[:, 3])
        np.add.at(self.fg_iou_sum, cols, fg)
        self.fb_iou_sum += float(((fg + bg) / 2).sum())

    def evaluate(self) -> Dict:
        """``{"miou", "fbiou", "n_episodes", "convention", "per_class": [{class_id, class_name,
        intersection, union, episodes, iou}], "classes_without_episodes": [...]}`` (percent; None
        when there was no episode)."""
        seen = self.episodes > 0
        n = int(self.episodes.sum())
        if self.per_episode:
            iou = np.where(seen, self.fg_iou_sum / np.maximum(self.episodes, 1), np.nan)
            fbiou = self.fb_iou_sum / n if n else None
        else:
            iou = np.where(seen, self.sums[:, 0] / np.maximum(self.sums[:, 1], 1), np.nan)
            tot = self.sums.sum(0)
            fbiou = float(_ratio(tot[[0, 2]], tot[[1, 3]]).mean()) if n else None
        per_class = []
        for j, c in enumerate(self.class_ids):
            per_class.append({
                "class_id": c, "class_name": self.class_names[c] if self.class_names is not None else str(c),
                "intersection": int(self.sums[j, 0]), "union": int(self.sums[j, 1]),
                "episodes": int(self.episodes[j]), "iou": 100.0 * float(iou[j]) if seen[j] else None,
            })
        return {
            "miou": 100.0 * float(iou[seen].mean()) if seen.any() else None,
            "fbiou": None if fbiou is None else 100.0 * float(fbiou),
            "n_episodes": n,
            "convention": "per-episode" if self.per_episode else "summed",
            "per_class": per_class,
            "classes_without_episodes": [c for j, c in enumerate(self.class_ids) if not seen[j]],
        }
