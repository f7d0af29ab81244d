"""Shared set-up of the inference verbs (eval, pseudo-label, visualize)."""
from __future__ import annotations

import os
from typing import Optional

from simformer.config import load_cfg
from simformer.data.catalog import get_dataset
from simformer.data.class_split import resolve_split
from simformer.modeling.meta_arch import build_model
from simformer.utils import comm
from simformer.utils.logger import setup_logging

from .checkpoint import Checkpointer


def load_trained_model(config: str, weights: str, opts=(), dataset: Optional[str] = None,
                       default_dataset: str = "test", log_dir: Optional[str] = None):
    """Config + weights -> model.

    Returns ``(cfg, model, split, dataset_name)``; ``dataset`` defaults to DATASETS.TEST[0]
    (``default_dataset="test"``) or DATASETS.TRAIN[0] (``"train"``). The backbone's ImageNet
    weights are not loaded (the checkpoint holds the trained ones). Initialises torchrun ranks.
    """
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
