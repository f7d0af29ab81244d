"""One evaluator factory and one inference loop (detectron2's ``evaluation/evaluator.py``).

* :class:`DatasetEvaluator`: the protocol ``reset()`` / ``process(inputs, outputs)`` /
  ``evaluate()``; ``inputs`` are the loader's sample dicts, ``outputs`` the model's outputs.
* :func:`build_evaluator` (config + dataset) and :func:`sem_seg_evaluator` (class names + split):
  the one place that decides the ignore value and the novel-class grouping.
* :func:`inference_on_dataset`: the loop that runs a model over a loader into an evaluator, used by
  training, ``simformer eval`` and ``simformer pseudo-label``; :func:`evaluate_model` wraps it.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from tqdm import tqdm

from simformer.data.build import build_test_loader
from simformer.data.catalog import IGNORE_LABEL, class_names as catalog_class_names, get_dataset
from simformer.data.class_split import Split, load_split
from simformer.utils import comm

from .sem_seg import SemSegEvaluator, format_table, write_results

logger = logging.getLogger("simformer")


class DatasetEvaluator:
    """Base class of the evaluator protocol."""

    def reset(self) -> None:
        pass

    def process(self, inputs: List[dict], outputs: List[dict]) -> None:
        raise NotImplementedError

    def evaluate(self) -> Any:
        raise NotImplementedError


def prediction_label(output: dict) -> np.ndarray:
    """A model output -> uint8 label map [height, width]. A model may give a label map with
    255 = "no class" directly ("sem_seg_label", the CAM background); else argmax of "sem_seg"."""
    label = output["sem_seg_label"] if "sem_seg_label" in output else output["sem_seg"].argmax(0)
    return label.to(torch.uint8).cpu().numpy()


def ground_truth(sample: dict) -> np.ndarray:
    gt = sample["sem_seg_full"]
    return gt.numpy() if torch.is_tensor(gt) else np.asarray(gt)


def novel_mask_of(split: Optional[Split]) -> Optional[np.ndarray]:
    """The base/novel grouping of the metrics: the split's novel mask when it has novel classes,
    else None (all-class metrics only; base/novel mIoU and HM are None)."""
    return split.novel_mask() if split is not None and split.novel else None


def sem_seg_evaluator(class_names, split: Optional[Split] = None, *, ignore_label: int = IGNORE_LABEL,
                      convention: str = "current") -> SemSegEvaluator:
    """The confusion-matrix evaluator over ``class_names`` grouped by ``split`` (see :func:`novel_mask_of`)."""
    if split is not None and list(split.class_names) != list(class_names):
        raise ValueError(
            f"Split for dataset '{split.dataset}' does not match the class list of the evaluated dataset "
            f"({len(split.class_names)} vs {len(class_names)} classes); use a split made for this dataset family")
    return SemSegEvaluator(class_names=class_names, novel_mask=novel_mask_of(split), ignore_label=ignore_label,
                           convention=convention)


class SemSegDatasetEvaluator(DatasetEvaluator):
    """:class:`SemSegEvaluator` behind the protocol: ``process`` scores each prediction against the
    sample's full GT; ``evaluate`` sums the ranks' confusion matrices and returns the metrics."""

    def __init__(self, metric: SemSegEvaluator):
        self.metric = metric

    class_names = property(lambda self: self.metric.class_names)
    novel_mask = property(lambda self: self.metric.novel_mask)
    ignore_label = property(lambda self: self.metric.ignore_label)
    convention = property(lambda self: self.metric.convention)

    def reset(self) -> None:
        self.metric.reset()

    def process(self, inputs: List[dict], outputs: List[dict]) -> None:
        for sample, out in zip(inputs, outputs):
            self.metric.process(prediction_label(out), ground_truth(sample), name=sample["file_name"])

    def evaluate(self) -> Dict[str, Any]:
        self.metric.synchronize()
        return self.metric.evaluate()


def build_evaluator(cfg, dataset_name: str, split=None) -> SemSegDatasetEvaluator:
    """Evaluator for ``dataset_name`` (a dataset or a family name) configured from ``cfg``.

    Reads ``TEST.MIOU_CONVENTION`` and, when ``split`` is None, ``WEAKSHOT.SPLIT`` (a split file;
    "" = no split: only all-class metrics). ``split``: a :class:`Split` or a split-file path.
    The ignore value is the dataset's (void in its GT), else the catalog default 255.
    """
    names = catalog_class_names(dataset_name)
    if split is None and cfg.WEAKSHOT.SPLIT:
        split = cfg.WEAKSHOT.SPLIT
    if isinstance(split, str):
        split = load_split(split, expected_names=names, expected_dataset=dataset_name)
    if split is not None and not isinstance(split, Split):
        raise ValueError(f"split must be a Split or a split-file path, got {type(split).__name__}")
    try:
        ignore = get_dataset(dataset_name).ignore_label
    except KeyError:  # a family name: no dataset record
        ignore = IGNORE_LABEL
    return SemSegDatasetEvaluator(sem_seg_evaluator(names, split, ignore_label=ignore,
                                                    convention=str(cfg.TEST.MIOU_CONVENTION)))


def inference_on_dataset(model, data_loader, evaluator: DatasetEvaluator, desc: str = "predict"):
    """Run ``model`` (eval mode, no grad) over this rank's ``data_loader`` into ``evaluator`` and
    return ``evaluator.evaluate()``; the model's training flag is restored."""
    evaluator.reset()
    was_training = model.training
    model.eval()
    show = comm.is_main_process() and os.environ.get("SIMFORMER_PROGRESS", "1") != "0"
    try:
        with torch.no_grad():
            for batch in tqdm(data_loader, desc=desc, disable=not show,
                              total=len(data_loader) if hasattr(data_loader, "__len__") else None, dynamic_ncols=True):
                evaluator.process(batch, model(batch))
    finally:
        model.train(was_training)
    return evaluator.evaluate()


def evaluate_model(model, cfg, dataset_name: str, split: Optional[Split], out_dir: Optional[str] = None,
                   verbose: bool = True) -> dict:
    """Evaluate on ``dataset_name``; on rank 0 print the table and write ``out_dir``/metrics.json."""
    evaluator = build_evaluator(cfg, dataset_name, split)
    results = inference_on_dataset(model, build_test_loader(cfg, dataset_name), evaluator,
                                   desc=f"eval {dataset_name}")
    if comm.is_main_process():
        if verbose:
            logger.info("Evaluation on %s (%s mIoU convention):\n%s", dataset_name, cfg.TEST.MIOU_CONVENTION,
                        format_table(results, evaluator.class_names, evaluator.novel_mask))
        if out_dir:
            write_results(results, out_dir, evaluator.class_names, evaluator.novel_mask)
    return results
