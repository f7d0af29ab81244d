"""Re-training stage, step 1 (docs/method.md section 7): mixed labels from a trained model's
predictions on the TRAINING images. The whole train -> pseudo-label -> retrain -> eval run is
``pipeline.py``."""
from __future__ import annotations

import logging
import os
from typing import Optional

import numpy as np

from simformer.data.build import build_test_loader
from simformer.data.class_split import Split
from simformer.evaluation.evaluator import (DatasetEvaluator, build_evaluator, ground_truth, inference_on_dataset,
                                            prediction_label)
from simformer.evaluation.sem_seg import format_table
from simformer.modeling.meta_arch import restricted_to_image_labels
from simformer.utils import comm
from simformer.utils.io import atomic_write_json, save_label_png

from . import REFINE_METHODS

logger = logging.getLogger("simformer")

DONE = "pseudo_labels.json"


def mixed_label(pred: np.ndarray, gt: np.ndarray, image_labels: np.ndarray, novel_mask: np.ndarray,
                ignore: int = 255) -> np.ndarray:
    """Start at 255; novel classes of the image-level label set take the pixels predicted as them;
    base GT is written over everything.

    pred, gt: uint8/int [H,W] (gt = full GT; only its base pixels are used, as a weak-shot
    training set provides); image_labels, novel_mask: bool [K]. Returns uint8 [H,W].
    """
    k = len(novel_mask)
    allowed = np.zeros(256, dtype=bool)
    allowed[:k] = image_labels & novel_mask
    out = np.where(allowed[pred], pred, ignore).astype(np.uint8)
    is_base = np.zeros(256, dtype=bool)
    is_base[:k] = ~novel_mask
    base_px = is_base[gt]
    out[base_px] = gt[base_px]
    return out


def label_precision(confusion: np.ndarray, novel_mask: np.ndarray, class_names) -> dict:
    """How right the mixed labels are where they name a novel class, and how much of the novel
    ground truth they name at all: what re-training learns from (an unlabelled pixel is ignored
    there, a wrong one is taught), which the labels' IoU mixes into one number.

    confusion: int ``[K+1, K+1]`` ``[gt, label]`` counts, index K = void GT / unlabelled (255), as
    :func:`simformer.evaluation.sem_seg.confusion_matrix`; void GT pixels are left out, as in mIoU.
    Returns percent: "novel_precision" (mean over the novel classes ever labelled of
    correct / labelled), "novel_coverage" (labelled share of the novel GT pixels, any class) and
    "per_class_precision" (every class; None where never labelled).
    """
    k = len(class_names)
    valid = np.asarray(confusion, dtype=np.float64)[:k]  # void GT rows out
    tp, labelled = np.diag(valid[:, :k]), valid[:, :k].sum(axis=0)
    precision = np.divide(tp, labelled, out=np.full(k, np.nan), where=labelled > 0)
    novel = np.asarray(novel_mask, dtype=bool)
    named = novel & (labelled > 0)
    novel_gt = valid[novel].sum()
    return {"novel_precision": 100.0 * float(precision[named].mean()) if named.any() else None,
            "novel_coverage": 100.0 * float(valid[novel, :k].sum() / novel_gt) if novel_gt else None,
            "per_class_precision": {n: None if np.isnan(v) else 100.0 * float(v) for n, v in zip(class_names, precision)}}


class PseudoLabelWriter(DatasetEvaluator):
    """Evaluator-protocol sink of :func:`generate_pseudo_labels`: writes each training image's mixed
    label (atomically, keeping files that exist) and scores it against the full GT."""

    def __init__(self, out_dir: str, novel_mask: np.ndarray, metric):
        self.out_dir, self.novel_mask, self.metric = out_dir, novel_mask, metric
        self.reset()

    def reset(self) -> None:
        self.metric.reset()
        self.counts = {"written": 0, "skipped": 0, "labelled_pixels": 0, "pixels": 0}

    def process(self, inputs, outputs) -> None:
        for sample, out in zip(inputs, outputs):
            gt = ground_truth(sample).astype(np.uint8)
            path = os.path.join(self.out_dir, f"{sample['image_id']}.png")
            label = mixed_label(prediction_label(out), gt, sample["image_labels"].numpy().astype(bool), self.novel_mask)
            if os.path.isfile(path):
                self.counts["skipped"] += 1
            else:
                save_label_png(path, label)
                self.counts["written"] += 1
            self.metric.process(label, gt, name=path)
            self.counts["labelled_pixels"] += int((label != 255).sum())
            self.counts["pixels"] += int(label.size)

    def evaluate(self) -> dict:
        """(quality metrics, counts summed over ranks)."""
        self.metric.synchronize()
        return self.metric.evaluate(), comm.all_reduce_sum(self.counts)


def generate_pseudo_labels(model, cfg, split: Split, out_dir: str, dataset_name: Optional[str] = None,
                           refine: Optional[str] = None) -> dict:
    """Predict every training image, write ``out_dir/<image_id>.png`` mixed labels (atomically,
    skipping files that exist) and return the pseudo-label quality against the full GT.

    ``refine="gfsam"``: the mixed labels go to ``out_dir/mixed`` and their GF-SAM refinement
    (``refine.py``) to ``out_dir``; "quality" is then the refined labels' and "quality_unrefined"
    the mixed labels'."""
    dataset_name = dataset_name or cfg.DATASETS.TRAIN[0]
    if refine is not None and refine not in REFINE_METHODS:
        raise ValueError(f"pseudo-label refinement must be {' or '.join(repr(m) for m in REFINE_METHODS)}, "
                         f"got '{refine}'")
    refine = None if refine == "none" else refine
    novel_mask = split.novel_mask()
    evaluator = build_evaluator(cfg, dataset_name, split)
    final_dir, out_dir = out_dir, (os.path.join(out_dir, "mixed") if refine else out_dir)
    os.makedirs(out_dir, exist_ok=True)
    writer = PseudoLabelWriter(out_dir, novel_mask, evaluator.metric)
    # Training images have known image-level labels: a model that can use them (CAM) restricts
    # its classes to them; SimFormer has no such mode (mixed_label restricts novel classes anyway).
    with restricted_to_image_labels(model):
        quality, totals = inference_on_dataset(model, build_test_loader(cfg, dataset_name), writer,
                                               desc="pseudo-label")
    report = {
        "dataset": dataset_name,
        "images_written": totals["written"],
        "images_skipped": totals["skipped"],
        "labelled_pixel_share": 100.0 * totals["labelled_pixels"] / max(1, totals["pixels"]),
        "quality": {k: quality[k] for k in ("miou", "base_miou", "novel_miou", "hm", "pacc")},
        "per_class_iou": quality["per_class_iou"],
        **label_precision(evaluator.metric.confusion, novel_mask, evaluator.class_names),
    }
    if comm.is_main_process():
        logger.info("Pseudo-label quality (mixed labels vs full GT on %s):\n%s", dataset_name,
                    format_table(quality, evaluator.class_names, evaluator.novel_mask))
        logger.info("Labelled pixels: %.1f %%; novel labels right where they name a class: %s %% (mean over "
                    "classes), novel GT pixels labelled: %s %%", report["labelled_pixel_share"],
                    _pct(report["novel_precision"]), _pct(report["novel_coverage"]))
    if refine:
        comm.synchronize()  # every rank's mixed labels are written: they are the references
        report = dict(report, quality_unrefined=report["quality"], refine=refine,
                      labelled_pixel_share_unrefined=report["labelled_pixel_share"],
                      novel_precision_unrefined=report["novel_precision"],
                      novel_coverage_unrefined=report["novel_coverage"],
                      **_refine(model, cfg, split, dataset_name, out_dir, final_dir))
        out_dir = final_dir
    if comm.is_main_process():
        atomic_write_json(os.path.join(out_dir, DONE), report)
    comm.synchronize()
    return report


def _pct(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _refine(model, cfg, split: Split, dataset_name: str, mixed_dir: str, out_dir: str) -> dict:
    """GF-SAM refinement of the mixed labels in ``mixed_dir`` into ``out_dir`` (refine.py), the
    trained model as the proposal source; -> report entries (quality, per-class IoU, counts)."""
    import torch

    from simformer.data.catalog import get_dataset_dicts
    from simformer.data.presence import presence_matrix
    from simformer.fewshot.gfsam import build_gfsam
    from simformer.fewshot.proposals import ModelProposalSource

    from .refine import refine_pseudo_labels

    metric = build_evaluator(cfg, dataset_name, split).metric
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            counts = refine_pseudo_labels(
                get_dataset_dicts(dataset_name), presence_matrix(dataset_name), split.novel_mask(), mixed_dir,
                out_dir, ModelProposalSource(model), build_gfsam(cfg), metric, seed=int(cfg.SEED),
                min_pixels=int(cfg.FEWSHOT.GFSAM.REFINE_MIN_PIXELS), rank=comm.get_rank(),
                world_size=comm.get_world_size())
    finally:
        model.train(was_training)
    metric.synchronize()
    quality = metric.evaluate()
    logger.info("Refined pseudo-label quality (GF-SAM, vs full GT on %s):\n%s", dataset_name,
                format_table(quality, metric.class_names, metric.novel_mask))
    counts = comm.all_reduce_sum(counts)
    return {"quality": {k: quality[k] for k in ("miou", "base_miou", "novel_miou", "hm", "pacc")},
            "per_class_iou": quality["per_class_iou"], "refine_counts": counts,
            **label_precision(metric.confusion, split.novel_mask(), metric.class_names),
            "labelled_pixel_share": 100.0 * counts["labelled_pixels"] / max(1, counts["pixels"])}
