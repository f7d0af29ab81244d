"""Re-training stage (METHOD.md section 7): mixed labels from a trained model's predictions on
the TRAINING images, and the train -> pseudo-label -> retrain -> eval pipeline."""
from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Optional

import numpy as np
import torch

from simformer.data.catalog import get_dataset
from simformer.data.class_split import Split
from simformer.evaluation.sem_seg import SemSegEvaluator, format_table
from simformer.utils.io import atomic_write_json, save_label_png

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


def generate_pseudo_labels(model, cfg, split: Split, out_dir: str, dataset_name: Optional[str] = None) -> dict:
    """Predict every training image, write ``out_dir/<image_id>.png`` mixed labels (atomically,
    skipping files that exist) and return the pseudo-label quality against the full GT."""
    from simformer.utils import comm
    from simformer.evaluation.evaluator import predict_dataset

    dataset_name = dataset_name or cfg.DATASETS.TRAIN[0]
    info = get_dataset(dataset_name)
    novel_mask = split.novel_mask()
    evaluator = SemSegEvaluator(class_names=info.classes, novel_mask=novel_mask if novel_mask.any() else None,
                                ignore_label=info.ignore_label, convention=cfg.TEST.MIOU_CONVENTION)
    os.makedirs(out_dir, exist_ok=True)
    counts = {"written": 0, "skipped": 0, "labelled_pixels": 0, "pixels": 0}

    def on_prediction(sample, pred):
        gt = sample["sem_seg_full"]
        gt = gt.numpy() if torch.is_tensor(gt) else gt
        gt = gt.astype(np.uint8)
        path = os.path.join(out_dir, f"{sample['image_id']}.png")
        label = mixed_label(pred, gt, sample["image_labels"].numpy().astype(bool), novel_mask)
        if os.path.isfile(path):
            counts["skipped"] += 1
        else:
            save_label_png(path, label)
            counts["written"] += 1
        evaluator.process(label, gt, name=path)
        counts["labelled_pixels"] += int((label != 255).sum())
        counts["pixels"] += int(label.size)

    # Training images have known image-level labels: a model that can use them (CAM) restricts
    # its classes to them; SimFormer ignores the flag (mixed_label restricts novel classes anyway).
    had_flag = getattr(model, "use_image_labels", None)
    if had_flag is not None:
        model.use_image_labels = True
    try:
        predict_dataset(model, cfg, dataset_name, on_prediction=on_prediction, desc="pseudo-label")
    finally:
        if had_flag is not None:
            model.use_image_labels = had_flag
    evaluator.synchronize()
    quality = evaluator.evaluate()
    totals = counts
    if comm.get_world_size() > 1:
        import torch.distributed as dist

        t = torch.tensor([counts[k] for k in sorted(counts)], dtype=torch.float64)
        dist.all_reduce(t)
        totals = {k: int(v) for k, v in zip(sorted(counts), t.tolist())}
    report = {
        "dataset": dataset_name,
        "images_written": totals["written"],
        "images_skipped": totals["skipped"],
        "labelled_pixel_share": 100.0 * totals["labelled_pixels"] / max(1, totals["pixels"]),
        "quality": {k: quality[k] for k in ("miou", "base_miou", "novel_miou", "hm", "pacc")},
        "per_class_iou": quality["per_class_iou"],
    }
    if comm.is_main_process():
        logger.info("Pseudo-label quality (mixed labels vs full GT on %s):\n%s", dataset_name,
                    format_table(quality, info.classes, novel_mask if novel_mask.any() else None))
        logger.info("Labelled pixels: %.1f %%", report["labelled_pixel_share"])
        atomic_write_json(os.path.join(out_dir, DONE), report)
    comm.synchronize()
    return report


def default_retrain_config(config: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(config)), "retrain.yaml")


def adopt_stage1(source: str, stage1: str, cfg1) -> bool:
    """Use a finished training run ``source`` as stage 1 when its resolved config equals the
    stage-1 config (OUTPUT_DIR aside): copy it instead of training the same model again.
    Returns False (and copies nothing) when ``source`` is unfinished or was trained differently."""
    from simformer.config import load_cfg

    if not all(os.path.isfile(os.path.join(source, f)) for f in ("model_final.pth", "metrics.json", "config.yaml")):
        logger.info("--stage1-from %s is not a finished run; training stage 1", source)
        return False
    theirs = load_cfg(os.path.join(source, "config.yaml"), ["OUTPUT_DIR", cfg1.OUTPUT_DIR])
    if theirs.dump() != cfg1.dump():
        logger.warning("--stage1-from %s was trained with another config; training stage 1", source)
        return False
    tmp = stage1 + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, ignore=shutil.ignore_patterns(".lock", "sweep_run.json", "stdout.log", "FAILED"))
    os.replace(tmp, stage1)
    logger.info("Stage 1 = finished run %s (same config), copied to %s", source, stage1)
    return True


def run_pipeline(config: str, output: str, opts=(), *, retrain_config: Optional[str] = None,
                 resume: bool = False, stage1_from: Optional[str] = None) -> dict:
    """train -> pseudo-label -> retrain -> eval in one resumable run directory.

    ``output``/stage1_train, ``output``/pseudo_labels, ``output``/stage2_retrain; the retrained
    model's metrics are copied to ``output``/metrics.json (with the stage-1 metrics and the
    pseudo-label quality beside them) and its weights to ``output``/model_final.pth.
    A stage whose outputs exist is skipped; an interrupted stage resumes from its checkpoint.
    ``stage1_from``: a finished ``simformer train`` run with the same config to reuse as stage 1.
    """
    from simformer.config import load_cfg
    from simformer.utils import comm
    from simformer.engine.checkpoint import Checkpointer
    from simformer.engine.trainer import Trainer

    retrain_config = retrain_config or default_retrain_config(config)
    stage1 = os.path.join(output, "stage1_train")
    labels = os.path.join(output, "pseudo_labels")
    stage2 = os.path.join(output, "stage2_retrain")

    def finished(d):
        return os.path.isfile(os.path.join(d, "model_final.pth")) and os.path.isfile(os.path.join(d, "metrics.json"))

    cfg1 = load_cfg(config, list(opts) + ["OUTPUT_DIR", stage1])
    if not finished(stage1) and stage1_from and not os.path.exists(stage1) and comm.is_main_process():
        adopt_stage1(stage1_from, stage1, cfg1)
    comm.synchronize()
    if not finished(stage1):
        Trainer(cfg1, resume=resume or os.path.isfile(os.path.join(stage1, "last_checkpoint"))).train()
    with open(os.path.join(stage1, "metrics.json")) as f:
        stage1_metrics = json.load(f)

    if not os.path.isfile(os.path.join(labels, DONE)):
        trainer = Trainer(cfg1)
        Checkpointer.load(os.path.join(stage1, "model_final.pth"), model=trainer.model)
        generate_pseudo_labels(trainer.model, cfg1, trainer.split, labels)
    with open(os.path.join(labels, DONE)) as f:
        quality = json.load(f)

    cfg2 = load_cfg(retrain_config, list(opts) + ["OUTPUT_DIR", stage2, "WEAKSHOT.PSEUDO_LABEL_DIR", labels])
    if not finished(stage2):
        Trainer(cfg2, resume=os.path.isfile(os.path.join(stage2, "last_checkpoint"))).train()
    with open(os.path.join(stage2, "metrics.json")) as f:
        final = json.load(f)
    final = dict(final, before_retrain={k: stage1_metrics.get(k) for k in ("miou", "base_miou", "novel_miou", "hm")},
                 pseudo_label_quality=quality["quality"])
    if comm.is_main_process():
        from simformer.utils.io import atomic_path

        with atomic_path(os.path.join(output, "model_final.pth"), ".pth") as tmp:
            shutil.copyfile(os.path.join(stage2, "model_final.pth"), tmp)
        for name in ("config.yaml", "run_info.json"):
            src = os.path.join(stage2, name)
            if os.path.isfile(src):
                shutil.copyfile(src, os.path.join(output, name))
        atomic_write_json(os.path.join(output, "metrics.json"), final)
        logger.info("Pipeline done: novel mIoU %.1f -> %.1f after re-training (pseudo-label novel mIoU %.1f)",
                    stage1_metrics.get("novel_miou") or float("nan"), final.get("novel_miou") or float("nan"),
                    quality["quality"].get("novel_miou") or float("nan"))
    return final
