"""Run a model over a test set and score it (sharded over ranks, confusion matrices all-reduced)."""
from __future__ import annotations

import logging
import os
from typing import Callable, Optional

import numpy as np
import torch
from tqdm import tqdm

from simformer.data.catalog import get_dataset, get_dataset_dicts
from simformer.data.loader import build_test_loader
from simformer.data.mapper import build_mapper
from simformer.data.split import Split
from simformer.evaluation.sem_seg import SemSegEvaluator, format_table, write_results

from . import comm

logger = logging.getLogger("simformer")


def predict_dataset(model, cfg, dataset_name: str, *, on_prediction: Callable[[dict, np.ndarray], None],
                    mapper_is_train: bool = False, desc: str = "predict") -> None:
    """Call ``on_prediction(sample, pred)`` for this rank's share of the dataset, where ``pred``
    is the uint8 argmax map [height, width] at the original resolution."""
    records = get_dataset_dicts(dataset_name)
    mapper = build_mapper(cfg, False, None, num_classes=get_dataset(dataset_name).num_classes)
    loader = build_test_loader(records, mapper, rank=comm.get_rank(), world_size=comm.get_world_size(),
                               num_workers=cfg.DATALOADER.NUM_WORKERS)
    was_training = model.training
    model.eval()
    show = comm.is_main_process() and os.environ.get("SIMFORMER_PROGRESS", "1") != "0"
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, disable=not show, total=len(loader) if hasattr(loader, "__len__") else None,
                          dynamic_ncols=True):
            outputs = model(batch)
            for sample, out in zip(batch, outputs):
                # A model may give a label map with 255 = "no class" (CAM background) directly.
                label = out["sem_seg_label"] if "sem_seg_label" in out else out["sem_seg"].argmax(0)
                pred = label.to(torch.uint8).cpu().numpy()
                on_prediction(sample, pred)
    model.train(was_training)


def evaluate_model(model, cfg, dataset_name: str, split: Optional[Split], out_dir: Optional[str] = None,
                   verbose: bool = True) -> dict:
    """Evaluate on ``dataset_name``; on rank 0 print the table and write ``out_dir``/metrics.json."""
    info = get_dataset(dataset_name)
    novel_mask = split.novel_mask() if split is not None and split.novel else None
    evaluator = SemSegEvaluator(class_names=info.classes, novel_mask=novel_mask,
                                ignore_label=info.ignore_label, convention=cfg.TEST.MIOU_CONVENTION)

    def accumulate(sample, pred):
        gt = sample["sem_seg_full"]
        evaluator.process(pred, gt.numpy() if torch.is_tensor(gt) else gt, name=sample["file_name"])

    predict_dataset(model, cfg, dataset_name, on_prediction=accumulate, desc=f"eval {dataset_name}")
    evaluator.synchronize()
    results = evaluator.evaluate()
    if comm.is_main_process():
        if verbose:
            logger.info("Evaluation on %s (%s mIoU convention):\n%s", dataset_name, cfg.TEST.MIOU_CONVENTION,
                        format_table(results, info.classes, novel_mask))
        if out_dir:
            write_results(results, out_dir, info.classes, novel_mask)
    return results


def load_trained_model(config: str, weights: str, opts=(), dataset: Optional[str] = None,
                       default_dataset: str = "test", log_dir: Optional[str] = None):
    """For the inference verbs (eval, pseudo-label, visualize): config + weights -> model.

    Returns ``(cfg, model, split, dataset_name)``; ``dataset`` defaults to DATASETS.TEST[0]
    (``default_dataset="test"``) or DATASETS.TRAIN[0] (``"train"``). The backbone's ImageNet
    weights are not loaded (the checkpoint holds the trained ones). Initialises torchrun ranks.
    """
    from simformer.config import load_cfg
    from simformer.modeling.simformer import build_model

    from .checkpoint import Checkpointer
    from .trainer import resolve_split, setup_logging

    if not os.path.isfile(weights):
        raise FileNotFoundError(f"--weights {weights} does not exist")
    cfg = load_cfg(config, list(opts) + ["MODEL.BACKBONE.WEIGHTS", ""])
    device = comm.init_distributed(cfg.MODEL.DEVICE)
    setup_logging(log_dir, comm.get_rank())
    names = cfg.DATASETS.TEST if default_dataset == "test" else cfg.DATASETS.TRAIN
    name = dataset or (names[0] if names else None)
    if not name:
        raise ValueError(f"{config} names no DATASETS.{default_dataset.upper()}; pass --dataset")
    split = resolve_split(cfg, name)
    model = build_model(cfg, get_dataset(name).num_classes, split).to(device)
    Checkpointer.load(weights, model=model)
    return cfg, model, split, name
