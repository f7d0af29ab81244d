"""The episode loop: ``run_fewshot`` evaluates few-shot methods on one fold (docs/fewshot.md).

Per episode the query and support images go through the proposal source once per run (an LRU of
views keyed by record index, bounded by ``FEWSHOT.VIEW_CACHE_MB``); supports get their class mask;
the query gets its ground truth only when the method declares ``needs_query_gt`` (the oracle).
Every method predicts a foreground probability [H,W], thresholded at ``FOREGROUND_THRESHOLD``
(strictly greater is foreground) and scored by ``FewShotEvaluator``.

Writes to ``out_dir`` (atomically): ``episodes.json``, ``metrics.json``, ``per_class.csv`` and
``results.csv`` (one row per method in the sweeps' format, so that several seeds concatenated feed
``simformer stats``; novel_miou = the few-shot mIoU, since the fold's classes are the novel ones).
"""
from __future__ import annotations

import csv
import io
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from simformer.utils.io import atomic_write_json, atomic_write_text

from .base import FOREGROUND_THRESHOLD, View
from .episodes import class_pixel_counts, sample_episodes, save_episodes
from .folds import Fold
from .metrics import FewShotEvaluator, episode_counts
from .proposals import ModelProposalSource, mask_from_label, read_image_tensor, read_record_label

RESULT_HEAD = ("run", "method", "split", "seed", "novel_miou", "base_miou", "miou", "hm", "fwiou", "macc", "pacc")
RESULT_TAIL = ("fbiou", "shots", "episodes", "min_pixels", "convention", "fold", "dataset", "run_dir")


class ViewCache:
    """Record index -> (View without mask, uint8 label) with least-recently-used eviction beyond
    ``max_bytes``; counts the proposal-source calls in ``misses``."""

    def __init__(self, records: Sequence[dict], source, max_bytes: int):
        self.records, self.source, self.max_bytes = records, source, int(max_bytes)
        self.items: "OrderedDict[int, Tuple[View, np.ndarray, int]]" = OrderedDict()
        self.bytes = 0
        self.misses = 0

    @staticmethod
    def _size(view: View, label: np.ndarray) -> int:
        tensors = [view.image, view.proposals, view.scores, *view.features.values()]
        return sum(t.numel() * t.element_size() for t in tensors) + label.nbytes

    def get(self, index: int) -> Tuple[View, np.ndarray]:
        if index in self.items:
            self.items.move_to_end(index)
            view, label, _ = self.items[index]
            return view, label
        record = self.records[index]
        self.misses += 1
        view = self.source(read_image_tensor(record))
        label = read_record_label(record, view.size)
        size = self._size(view, label)
        self.items[index] = (view, label, size)
        self.bytes += size
        while self.bytes > self.max_bytes and len(self.items) > 1:
            _, (_, _, old) = self.items.popitem(last=False)
            self.bytes -= old
        return view, label


def _method_list(cfg, methods) -> List:
    from .registry import build_method

    built = [build_method(m, cfg) if isinstance(m, str) else m for m in methods]
    names = [m.name for m in built]
    if not built:
        raise ValueError("no few-shot method given (--method NAME)")
    if len(set(names)) != len(names):
        raise ValueError(f"few-shot methods must have distinct names, got {names}")
    return built


def run_fewshot(cfg, model_or_source, records: Sequence[dict], fold_classes: Union[Fold, Sequence[int]], *,
                methods: Sequence, shots: int, episodes: int, seed: int, min_pixels: int, per_episode: bool = False,
                out_dir: Optional[str] = None, class_names: Optional[Sequence[str]] = None, fold_name: str = "",
                dataset_label: str = "", dataset_name: str = "records", cache_dir: Optional[str] = None,
                counts: Optional[np.ndarray] = None, progress: bool = False) -> Dict[str, dict]:
    """Evaluate ``methods`` on ``episodes`` seeded episodes of the fold.

    Args:
        cfg: the loaded config (FEWSHOT.* keys; methods given by name are built from it).
        model_or_source: a SimFormer-like ``nn.Module`` or any ProposalSource (image -> View).
        records: the evaluation images (``get_dataset_dicts``); episode indices refer to them.
        fold_classes: a ``Fold`` (gives the classes, names, fold name and label) or class ids.
        methods: method names (``build_method``) or FewShotMethod objects, distinct names.
        shots, episodes, seed, min_pixels, per_episode: the protocol (``sample_episodes``, metrics).
        out_dir: folder for the output files; None = write nothing.
        class_names: K names (default: the fold's); K = len(class_names).
        counts: int64 [N, K] pixel counts (default: ``class_pixel_counts(records)``, cached).
    Returns:
        method name -> metrics (``FewShotEvaluator.evaluate`` + shots, seed, fold, dataset, ...).
    """
    if isinstance(fold_classes, Fold):
        class_ids = list(fold_classes.class_ids)
        class_names = class_names or fold_classes.class_names
        fold_name = fold_name or fold_classes.name
        dataset_label = dataset_label or fold_classes.label
    else:
        class_ids = [int(c) for c in fold_classes]
    if class_names is None:
        raise ValueError("run_fewshot needs the dataset's class names (a Fold or class_names=...)")
    fold_name = fold_name or "fold"
    dataset_label = dataset_label or dataset_name
    built = _method_list(cfg, methods)
    if counts is None:
        counts = class_pixel_counts(records, len(class_names), cache_dir=cache_dir, name=dataset_name)
    eps = sample_episodes(counts, class_ids, shots=shots, num_episodes=episodes, seed=seed,
                          min_pixels=min_pixels, class_names=class_names)
    meta = {"seed": seed, "shots": shots, "num_episodes": episodes, "min_pixels": min_pixels, "fold": fold_name,
            "dataset": dataset_label, "dataset_name": dataset_name, "class_ids": class_ids}
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        save_episodes(os.path.join(out_dir, "episodes.json"), eps, records, **meta)

    source = model_or_source
    if isinstance(model_or_source, torch.nn.Module):
        source = ModelProposalSource(model_or_source)
    cache_mb = cfg.FEWSHOT.VIEW_CACHE_MB if cfg is not None else 2048
    cache = ViewCache(records, source, int(cache_mb) * 2 ** 20)
    evaluators = {m.name: FewShotEvaluator(class_ids, class_names, per_episode) for m in built}
    from tqdm import tqdm

    for ep in tqdm(eps, desc=f"few-shot {fold_name} {shots}-shot", unit="episode", disable=not progress,
                   dynamic_ncols=True):
        support_views = []
        for s in ep.supports:
            view, label = cache.get(s)
            support_views.append(view.with_mask(*mask_from_label(label, ep.class_id)))
        query, label = cache.get(ep.query)  # a plain View: no mask, no valid map (both come from the label)
        gt, valid = mask_from_label(label, ep.class_id)
        with_gt = query.with_mask(gt, valid)
        for m in built:
            prob = m.predict(with_gt if getattr(m, "needs_query_gt", False) else query, support_views).detach().cpu()
            if tuple(prob.shape) != tuple(query.size):
                raise ValueError(f"few-shot method '{m.name}' returned a {tuple(prob.shape)} map for a "
                                 f"{tuple(query.size)} query; predict must return the query's [H,W]")
            evaluators[m.name].process_counts([ep.class_id], episode_counts(prob > FOREGROUND_THRESHOLD, gt, valid)[None])

    results = {}
    for m in built:
        r = evaluators[m.name].evaluate()
        r.update({"method": m.name, "shots": shots, "seed": seed, "fold": fold_name, "dataset": dataset_label,
                  "min_pixels": min_pixels, "episodes": episodes})
        results[m.name] = r
    if out_dir:
        write_outputs(out_dir, results, {**meta, "model_calls": cache.misses, "images": len(records)})
    return results


def write_outputs(out_dir: str, results: Dict[str, dict], run: dict) -> None:
    """metrics.json, per_class.csv and results.csv of ``run_fewshot`` (atomic writes)."""
    metrics = {"run": run, "methods": {}}
    for name, r in results.items():
        keep = {k: v for k, v in r.items() if k != "per_class"}
        keep["per_class_iou"] = {p["class_name"]: p["iou"] for p in r["per_class"]}
        metrics["methods"][name] = keep
    atomic_write_json(os.path.join(out_dir, "metrics.json"), metrics)

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "class_id", "class_name", "intersection", "union", "episodes", "iou"])
    for name, r in results.items():
        for p in r["per_class"]:
            w.writerow([name, p["class_id"], p["class_name"], p["intersection"], p["union"], p["episodes"],
                        "" if p["iou"] is None else f"{p['iou']:.6f}"])
    atomic_write_text(os.path.join(out_dir, "per_class.csv"), buf.getvalue())
    atomic_write_text(os.path.join(out_dir, "results.csv"), results_csv(results, out_dir))


def results_csv(results: Dict[str, dict], run_dir: str = "") -> str:
    """One row per method in the sweeps' results format (``simformer stats`` reads it):
    split = "<fold>:<shots>shot", novel_miou = miou = the few-shot mIoU, base_miou / hm empty."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(RESULT_HEAD + RESULT_TAIL)
    for name, r in results.items():
        split = f"{r['fold']}:{r['shots']}shot"
        miou = "" if r["miou"] is None else r["miou"]
        w.writerow([f"{split}:seed{r['seed']}:{name}", name, split, r["seed"], miou, "", miou, "", "", "", "",
                    "" if r["fbiou"] is None else r["fbiou"], r["shots"], r["n_episodes"], r["min_pixels"],
                    r["convention"], r["fold"], r["dataset"], run_dir])
    return buf.getvalue()


def format_table(results: Dict[str, dict]) -> str:
    """Methods as rows: mIoU, FB-IoU, episodes; the dataset label and protocol underneath."""
    def fmt(v):
        return "-" if v is None else f"{v:.2f}"
    width = max([len("method")] + [len(n) for n in results])
    lines = [f"{'method':<{width}}  {'mIoU':>7}  {'FB-IoU':>7}  {'n':>6}"]
    for name, r in results.items():
        lines.append(f"{name:<{width}}  {fmt(r['miou']):>7}  {fmt(r['fbiou']):>7}  {r['n_episodes']:>6}")
    if results:
        r = next(iter(results.values()))
        lines.append(f"fold {r['fold']}, {r['shots']}-shot, seed {r['seed']}, min {r['min_pixels']} px, "
                     f"{r['convention']} IoU; {r['dataset']}")
        missing = r.get("classes_without_episodes") or []
        if missing:
            lines.append(f"classes without an episode (left out of mIoU): {missing}")
    return "\n".join(lines) + "\n"
