"""Figures: a prediction grid per image and the top novel proposals (paper Fig. 3/4 style)."""
from __future__ import annotations

import os
from typing import List, Optional, Sequence

import numpy as np
import torch

from simformer.utils.io import atomic_path


def palette(num_classes: int, seed: int = 3) -> np.ndarray:
    """A fixed colour per class (uint8 [K+1, 3]); the last row (index K) is void = black."""
    rng = np.random.default_rng(seed)
    colors = rng.integers(40, 256, size=(num_classes, 3)).astype(np.uint8)
    return np.concatenate([colors, np.zeros((1, 3), np.uint8)])


def colorize(label: np.ndarray, num_classes: int) -> np.ndarray:
    """[H,W] ids (255 = void) -> RGB uint8 [H,W,3]."""
    idx = np.where(label == 255, num_classes, np.minimum(label, num_classes))
    return palette(num_classes)[idx]


def group_map(label: np.ndarray, novel_mask: np.ndarray) -> np.ndarray:
    """RGB map of which GT pixels are base (blue), novel (orange) or void (black)."""
    out = np.zeros((*label.shape, 3), np.uint8)
    labelled = label != 255
    novel = np.zeros_like(labelled)
    novel[labelled] = novel_mask[label[labelled]]
    out[labelled & ~novel] = (70, 110, 220)
    out[novel] = (245, 150, 40)
    return out


def _save(fig, path: str) -> None:
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")


def draw_prediction_grid(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, *, class_names: Sequence[str],
                         novel_mask: np.ndarray, path: str, title: str = "") -> None:
    """Input | GT | base/novel map | prediction, with a legend of the classes present."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(class_names)
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
    panels = [(image, "input"), (colorize(gt, k), "ground truth"), (group_map(gt, novel_mask), "base (blue) / novel (orange)"),
              (colorize(pred, k), "prediction")]
    for ax, (img, name) in zip(axes, panels):
        ax.imshow(img)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    present = sorted(set(np.unique(gt).tolist()) | set(np.unique(pred).tolist()) - {255})
    colors = palette(k)
    handles = [matplotlib.patches.Patch(color=colors[c] / 255.0,
                                        label=f"{class_names[c]}{' (novel)' if novel_mask[c] else ''}")
               for c in present if c < k]
    fig.legend(handles=handles, loc="lower center", ncol=min(6, max(1, len(handles))), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, path)
    plt.close(fig)


def draw_novel_proposals(image: np.ndarray, class_probs: torch.Tensor, mask_probs: torch.Tensor, *,
                         novel_ids: Sequence[int], class_names: Sequence[str], path: str, top: int = 4) -> None:
    """For each novel class in ``novel_ids``, the ``top`` proposals with the highest probability of
    that class: their sigmoid masks over the image, titled with the class score.

    class_probs: [Q, K+1]; mask_probs: [Q, H, W] at the image resolution.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    novel_ids = list(novel_ids)
    if not novel_ids:
        return
    fig, axes = plt.subplots(len(novel_ids), top + 1, figsize=(2.4 * (top + 1), 2.4 * len(novel_ids)), squeeze=False)
    for row, c in enumerate(novel_ids):
        scores, queries = class_probs[:, c].topk(min(top, class_probs.shape[0]))
        axes[row, 0].imshow(image)
        axes[row, 0].set_title(f"{class_names[c]} (novel)", fontsize=8)
        for col, (s, q) in enumerate(zip(scores.tolist(), queries.tolist()), start=1):
            ax = axes[row, col]
            ax.imshow(image)
            ax.imshow(mask_probs[q].cpu().numpy(), cmap="magma", alpha=0.6, vmin=0, vmax=1)
            ax.set_title(f"query {q}: p={s:.2f}", fontsize=8)
        for ax in axes[row]:
            ax.axis("off")
    _save(fig, path)
    plt.close(fig)


def visualize_dataset(model, cfg, dataset_name: str, split, out_dir: str, *, num_images: int = 6,
                      indices: Optional[List[int]] = None) -> List[str]:
    """Write ``num_images`` prediction grids and novel-proposal figures for ``dataset_name``."""
    from simformer.data.catalog import get_dataset, get_dataset_dicts
    from simformer.data.mapper import build_mapper
    from simformer.utils.io import read_image

    info = get_dataset(dataset_name)
    records = get_dataset_dicts(dataset_name)
    mapper = build_mapper(cfg, False, None)
    novel_mask = split.novel_mask() if split is not None else np.zeros(info.num_classes, bool)
    if indices is None:
        indices = np.linspace(0, len(records) - 1, num=min(num_images, len(records))).round().astype(int).tolist()
    os.makedirs(out_dir, exist_ok=True)
    written = []
    model.eval()
    for i in indices:
        sample = mapper(records[i], np.random.default_rng(0))
        with torch.no_grad():
            probs = model([sample])[0]["sem_seg"]
            props = model.proposals(sample)
        pred = probs.argmax(0).cpu().numpy()
        gt = sample["sem_seg_full"].numpy()
        image = read_image(records[i]["file_name"])
        stem = records[i]["image_id"]
        grid = os.path.join(out_dir, f"{stem}_grid.png")
        draw_prediction_grid(image, gt, pred, class_names=info.classes, novel_mask=novel_mask, path=grid, title=stem)
        written.append(grid)
        novel_here = [c for c in np.flatnonzero(sample["image_labels"].numpy()) if novel_mask[c]]
        if novel_here:
            small = np.asarray(sample["image"].permute(1, 2, 0).clamp(0, 255).byte().numpy())
            prop_path = os.path.join(out_dir, f"{stem}_novel_proposals.png")
            draw_novel_proposals(small, props["class_probs"], props["mask_probs"], novel_ids=novel_here,
                                 class_names=info.classes, path=prop_path)
            written.append(prop_path)
    return written
