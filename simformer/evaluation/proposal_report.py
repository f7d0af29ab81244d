"""Proposal analysis of a trained model over a dataset, and its files (docs/proposals.md).

:func:`analyze_proposals` runs a model that has ``proposals()`` (SimFormer / MaskFormer) over the
test loader of a dataset into a :class:`~simformer.evaluation.proposals.ProposalAccumulator`;
:func:`write_proposal_report` writes ``proposals.csv``, ``metrics.json`` and ``proposals.png``.
"""
from __future__ import annotations

import csv
import io
import logging
import os
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from simformer.data.build import build_test_loader
from simformer.data.catalog import IGNORE_LABEL, class_names as catalog_class_names, get_dataset
from simformer.modeling.inference import sem_seg_postprocess
from simformer.utils import comm
from simformer.utils.io import atomic_path, atomic_write_json, atomic_write_text

from .evaluator import ground_truth, novel_mask_of, prediction_label
from .proposals import SUM_KEYS, ProposalAccumulator

__all__ = ["has_proposals", "analyze_proposals", "write_proposal_report", "plot_proposals"]

logger = logging.getLogger("simformer")

CSV_COLUMNS = ("class_id", "class_name", "novel", "achieved_iou", "oracle_iou", "union_iou") + SUM_KEYS


def has_proposals(model) -> bool:
    """Whether the model gives class-agnostic mask proposals (``proposals()``; CAM does not)."""
    return callable(getattr(model, "proposals", None))


def analyze_proposals(model, cfg, dataset_name: str, split=None, *, threshold: float = 0.5,
                      loader=None) -> ProposalAccumulator:
    """Run ``model`` over the test loader of ``dataset_name``; returns the (rank-summed) accumulator.

    Per image: the prediction is the model's normal inference (``model([x])``, argmax at the GT
    resolution, as the evaluator scores it); the proposals are ``model.proposals(x)["mask_probs"]``
    at the network-input resolution, resized bilinearly to the GT resolution exactly as the
    inference resizes its score maps (probabilities, ``align_corners=False``), then binarised.
    ``split``: a :class:`~simformer.data.class_split.Split` for the base/novel grouping (or None).
    """
    if not has_proposals(model):
        raise ValueError(f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE} has no mask proposals; "
                         "the proposal analysis needs a SimFormer / MaskFormer model")
    names = catalog_class_names(dataset_name)
    try:
        ignore = get_dataset(dataset_name).ignore_label
    except KeyError:
        ignore = IGNORE_LABEL
    acc = ProposalAccumulator(names, novel_mask_of(split), ignore_label=ignore, threshold=threshold)
    loader = loader if loader is not None else build_test_loader(cfg, dataset_name)
    show = comm.is_main_process() and os.environ.get("SIMFORMER_PROGRESS", "1") != "0"
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in tqdm(loader, desc=f"proposals {dataset_name}", disable=not show, dynamic_ncols=True,
                              total=len(loader) if hasattr(loader, "__len__") else None):
                outputs = model(batch)
                for x, out in zip(batch, outputs):
                    gt = ground_truth(x)
                    prop = model.proposals(x)
                    probs = prop["mask_probs"]
                    if tuple(probs.shape[-2:]) != gt.shape:
                        probs = sem_seg_postprocess(probs, probs.shape[-2:], gt.shape[0], gt.shape[1])
                    acc.process(probs.cpu(), prediction_label(out), gt, name=x.get("file_name", "?"),
                                class_probs=prop["class_probs"].cpu())
    finally:
        model.train(was_training)
    acc.synchronize()
    return acc


def write_proposal_report(acc: ProposalAccumulator, out_dir: str, *, title: str = "",
                          extra: Optional[dict] = None) -> dict:
    """Write ``out_dir``/proposals.csv, metrics.json (``summary()`` + ``extra``) and proposals.png
    atomically; returns the summary."""
    os.makedirs(out_dir, exist_ok=True)
    rows = acc.rows()
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in rows:
        w.writerow(["" if r[c] is None else (f"{r[c]:.6f}" if isinstance(r[c], float) else r[c])
                    for c in CSV_COLUMNS])
    atomic_write_text(os.path.join(out_dir, "proposals.csv"), buf.getvalue())
    summary = dict(extra or {}, **acc.summary())
    atomic_write_json(os.path.join(out_dir, "metrics.json"), summary)
    plot_proposals(acc, os.path.join(out_dir, "proposals.png"), title=title)
    return summary


def plot_proposals(acc: ProposalAccumulator, path: str, *, title: str = "", dpi: int = 120) -> str:
    """Per-class grouped bars (achieved, oracle, union; percent IoU); novel classes hatched with
    red tick labels. Classes without GT pixels have no bars. Written atomically as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    k = acc.num_classes
    novel = acc.novel_mask if acc.novel_mask is not None else np.zeros(k, dtype=bool)
    fig = Figure(figsize=(max(6.0, 0.42 * k + 1.5), 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(k)
    width = 0.27
    colours = {"achieved": "#4c72b0", "oracle": "#dd8452", "union": "#55a868"}
    for j, kind in enumerate(("achieved", "oracle", "union")):
        iou = np.nan_to_num(acc.per_class_iou(kind), nan=0.0)
        bars = ax.bar(x + (j - 1) * width, iou, width, color=colours[kind], edgecolor="black",
                      linewidth=0.3)
        for b, is_novel in zip(bars, novel):
            if is_novel:
                b.set_hatch("///")
    ax.set_xticks(x)
    ax.set_xticklabels(acc.class_names, rotation=60, ha="right", fontsize=7)
    for lbl, is_novel in zip(ax.get_xticklabels(), novel):
        if is_novel:
            lbl.set_color("#c0392b")
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.set_xlim(-0.6, k - 0.4)
    means = acc.summary()
    parts = [f"{kind} {means[kind]['novel']:.1f}" for kind in ("achieved", "oracle", "union")
             if means[kind]["novel"] is not None]
    head = title or "proposal analysis"
    ax.set_title(f"{head}: n = {acc.num_images} images" + (f"; novel mIoU {', '.join(parts)}" if parts else ""),
                 fontsize=9)
    handles = [Patch(facecolor=colours[kind], edgecolor="black", label=kind) for kind in colours]
    if novel.any():
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="///", label="novel class (red label)"))
    ax.legend(handles=handles, fontsize=7, ncol=4, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.subplots_adjust(left=0.8 / fig.get_figwidth(), right=1 - 0.2 / fig.get_figwidth(), bottom=0.3, top=0.9)
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path
