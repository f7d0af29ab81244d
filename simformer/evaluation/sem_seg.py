"""Semantic-segmentation evaluation: confusion matrix, mIoU (two conventions), base/novel/HM.

Labels are contiguous class ids ``0..K-1``; ``255`` (``ignore_label``) means

* in the ground truth: void. Those pixels are not counted at all (row ``K`` of the matrix,
  never read by :meth:`SemSegEvaluator.evaluate`).
* in a prediction: "no class". The pixel is a miss: a false negative of its GT class and a false
  positive of nobody (column ``K``).

The matrix is indexed ``[gt, pred]`` with shape ``(K+1, K+1)``. For class ``c``::

    TP = M[c, c]    FN = M[c, :].sum() - TP    FP = M[:K, c].sum() - TP
    IoU_c = TP / (TP + FP + FN)

All-class mIoU follows one of detectron2's two conventions (METHOD.md section 8):

* ``"current"``: the mean over classes with GT pixels; classes absent from the GT are excluded
  (their IoU is reported as ``None``).
* ``"v0.6"`` (detectron2 <= v0.6): a class absent from the GT but predicted counts as 0 in the
  mean (its IoU is reported as ``0.0``); classes neither present nor predicted are excluded.

Base/novel mIoU average the defined per-class IoUs of each group under the same convention; HM is
their harmonic mean. fwIoU, mean accuracy and pixel accuracy are computed as detectron2 does
(frequency weights from GT pixels, accuracy averaged over classes with GT pixels).
"""
from __future__ import annotations

import csv
import io
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

CONVENTIONS = ("current", "v0.6")
# Keys every metrics.json starts with, in this order (extras follow).
METRIC_KEYS = ("miou", "base_miou", "novel_miou", "hm", "fwiou", "macc", "pacc", "per_class_iou")


def _to_numpy(x: Any) -> np.ndarray:
    """numpy view of an array or a (possibly CUDA) torch tensor, without importing torch."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_label_array(a: np.ndarray, what: str, name: str) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{what} for {name} has dtype {a.dtype}; expected integer class ids (255 = ignore)")
    if a.size and (a.min() < 0 or a.max() > 255):
        raise ValueError(
            f"{what} for {name} has values outside 0..255 (min {a.min()}, max {a.max()}); expected class ids "
            "0..K-1 and 255 for ignore"
        )
    return a


def confusion_matrix(pred: Any, gt: Any, num_classes: int, ignore_label: int = 255,
                     name: Optional[str] = None) -> np.ndarray:
    """Confusion matrix of one prediction, int64 ``[K+1, K+1]`` indexed ``[gt, pred]``.

    Args:
        pred: int array/tensor ``[H, W]``: class ids ``0..K-1`` or ``ignore_label`` (no class).
        gt: int array/tensor ``[H, W]``: class ids ``0..K-1`` or ``ignore_label`` (void).
        num_classes: K (at most 255, so that ids fit next to the 255 ignore value).
        name: what to call the image in error messages (usually its file).

    One ``np.bincount`` over ``gt * 256 + pred`` (uint16, both labels being bytes) gives the raw
    256x256 value-pair histogram; the ``[K+1, K+1]`` matrix is then read out of it, and any count
    in a row/column that is neither a class id nor ``ignore_label`` flags a bad value. This is
    ~4x faster than remapping every pixel to ``gt*(K+1)+pred`` first (~1 ms for 512x683).
    Raises ``ValueError`` naming ``name`` for a size mismatch or a bad value.
    """
    name = name or "<unnamed image>"
    pred, gt = _to_numpy(pred), _to_numpy(gt)
    if pred.shape != gt.shape:
        raise ValueError(
            f"{name}: prediction size {tuple(pred.shape)} differs from ground-truth size {tuple(gt.shape)}; "
            "predictions must be at the original image resolution"
        )
    if gt.ndim != 2:
        raise ValueError(f"{name}: expected [H, W] label maps, got shape {tuple(gt.shape)}")
    pred = _check_label_array(pred, "prediction", name).astype(np.uint8, copy=False)
    gt = _check_label_array(gt, "ground truth", name).astype(np.uint8, copy=False)
    idx = gt.ravel().astype(np.uint16)
    idx <<= 8
    idx |= pred.ravel()
    raw = np.bincount(idx, minlength=65536).reshape(256, 256)
    keep = np.append(np.arange(num_classes), ignore_label)  # class ids, then ignore -> index K
    ok = np.zeros(256, dtype=bool)
    ok[keep] = True
    if raw[~ok].any() or raw[:, ~ok].any():
        for what, values in (("ground truth", np.flatnonzero((raw.sum(1) > 0) & ~ok)),
                             ("prediction", np.flatnonzero((raw.sum(0) > 0) & ~ok))):
            if values.size:
                raise ValueError(
                    f"{name}: {what} contains values {values[:8].tolist()} that are neither a class id "
                    f"0..{num_classes - 1} nor the ignore value {ignore_label} (wrong dataset or class "
                    "count? ADE20K raw labels need the 0 -> 255 shift of `simformer prepare`)"
                )
    return raw[np.ix_(keep, keep)].astype(np.int64)


def _mean_or_none(values: np.ndarray) -> Optional[float]:
    return float(values.mean()) if values.size else None


def harmonic_mean(base: Optional[float], novel: Optional[float]) -> Optional[float]:
    """2BN/(B+N); 0 when B+N == 0; None when either is undefined."""
    if base is None or novel is None:
        return None
    if base + novel == 0:
        return 0.0
    return 2.0 * base * novel / (base + novel)


def metrics_from_confusion(matrix: np.ndarray, *, class_names: Sequence[str],
                           novel_mask: Optional[np.ndarray] = None, convention: str = "current") -> Dict[str, Any]:
    """Metrics (percent) from a ``[K+1, K+1]`` ``[gt, pred]`` confusion matrix; see module doc."""
    if convention not in CONVENTIONS:
        raise ValueError(f"Unknown mIoU convention '{convention}'; use one of {CONVENTIONS}")
    k = len(class_names)
    m = np.asarray(matrix, dtype=np.int64)
    if m.shape != (k + 1, k + 1):
        raise ValueError(f"Confusion matrix has shape {m.shape}; expected {(k + 1, k + 1)} for {k} classes")
    valid = m[:k]  # drop the void GT row: void pixels do not count at all
    tp = np.diag(valid[:, :k]).astype(np.float64)
    pos_gt = valid.sum(axis=1).astype(np.float64)          # includes "no class" predictions (misses)
    pos_pred = valid[:, :k].sum(axis=0).astype(np.float64)  # predictions on non-void pixels
    union = pos_gt + pos_pred - tp
    has_gt = pos_gt > 0
    defined = has_gt if convention == "current" else union > 0
    iou = np.zeros(k)
    np.divide(tp, union, out=iou, where=union > 0)  # v0.6: TP = 0 where no GT, so IoU = 0 there
    acc = np.zeros(k)
    np.divide(tp, pos_gt, out=acc, where=has_gt)
    total = pos_gt.sum()

    def group_mean(mask: np.ndarray) -> Optional[float]:
        v = _mean_or_none(iou[defined & mask])
        return None if v is None else 100.0 * v

    miou = group_mean(np.ones(k, dtype=bool))
    if novel_mask is None:
        base_miou = novel_miou = hm = None
    else:
        novel_mask = np.asarray(novel_mask, dtype=bool)
        if novel_mask.shape != (k,):
            raise ValueError(f"novel_mask has shape {novel_mask.shape}; expected ({k},)")
        base_miou = group_mean(~novel_mask)
        novel_miou = group_mean(novel_mask)
        hm = harmonic_mean(base_miou, novel_miou)
    per_iou = {n: (100.0 * float(iou[i]) if defined[i] else None) for i, n in enumerate(class_names)}
    per_acc = {n: (100.0 * float(acc[i]) if has_gt[i] else None) for i, n in enumerate(class_names)}
    return {
        "miou": miou,
        "base_miou": base_miou,
        "novel_miou": novel_miou,
        "hm": hm,
        "fwiou": 100.0 * float((iou[has_gt] * pos_gt[has_gt]).sum() / total) if total > 0 else None,
        "macc": None if not has_gt.any() else 100.0 * float(acc[has_gt].mean()),
        "pacc": 100.0 * float(tp.sum() / total) if total > 0 else None,
        "per_class_iou": per_iou,
        "per_class_acc": per_acc,
        "convention": convention,
        "num_pixels": int(total),
    }


class SemSegEvaluator:
    """Accumulates a ``[K+1, K+1]`` int64 confusion matrix over images and reports metrics.

    Args:
        class_names: the K class names (index = class id = pixel value).
        novel_mask: bool ``[K]`` (True = novel), or None for no base/novel grouping (then
            base/novel mIoU and HM are None).
        ignore_label: void value in GT / "no class" value in predictions.
        convention: ``"current"`` or ``"v0.6"`` (see the module docstring).
    """

    def __init__(self, *, class_names: Sequence[str], novel_mask: Optional[np.ndarray] = None,
                 ignore_label: int = 255, convention: str = "current"):
        if convention not in CONVENTIONS:
            raise ValueError(f"Unknown mIoU convention '{convention}' (TEST.MIOU_CONVENTION); use one of {CONVENTIONS}")
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        if not 0 < self.num_classes <= 255:
            raise ValueError(f"Need 1..255 classes (uint8 labels with a separate ignore value), got {self.num_classes}")
        if len(set(self.class_names)) != self.num_classes:
            raise ValueError("class_names has duplicates; per-class results are keyed by name")
        if not self.num_classes <= ignore_label <= 255:
            raise ValueError(f"ignore_label {ignore_label} must lie in {self.num_classes}..255 (outside the class ids)")
        if novel_mask is not None:
            novel_mask = np.asarray(novel_mask, dtype=bool)
            if novel_mask.shape != (self.num_classes,):
                raise ValueError(f"novel_mask has shape {novel_mask.shape}; expected ({self.num_classes},)")
        self.novel_mask = novel_mask
        self.ignore_label = int(ignore_label)
        self.convention = convention
        self.reset()

    def reset(self) -> None:
        self._local = np.zeros((self.num_classes + 1,) * 2, dtype=np.int64)
        self._synced: Optional[np.ndarray] = None

    @property
    def confusion(self) -> np.ndarray:
        """The matrix :meth:`evaluate` uses: all ranks' sum after :meth:`synchronize`, else this rank's."""
        return self._synced if self._synced is not None else self._local

    def process(self, pred: Any, gt: Any, name: Optional[str] = None) -> None:
        """Add one image. ``pred``/``gt``: int arrays or tensors ``[H, W]`` (255 = no class / void)."""
        self._local += confusion_matrix(pred, gt, self.num_classes, self.ignore_label, name=name)
        self._synced = None

    def process_confusion(self, matrix: Any) -> None:
        """Add a precomputed ``[K+1, K+1]`` ``[gt, pred]`` count matrix (e.g. from another worker)."""
        m = _to_numpy(matrix)
        k1 = self.num_classes + 1
        if m.shape != (k1, k1):
            raise ValueError(f"Confusion matrix has shape {m.shape}; expected {(k1, k1)}")
        if not np.issubdtype(m.dtype, np.integer) or (m.size and m.min() < 0):
            raise ValueError("Confusion matrix must hold non-negative integer counts")
        self._local += m.astype(np.int64)
        self._synced = None

    def synchronize(self) -> np.ndarray:
        """Sum the matrices of all ranks (``torch.distributed.all_reduce``) when a process group is
        initialised; a no-op otherwise. Idempotent: this rank's own counts are kept apart, so
        calling it twice does not double-count. Returns the summed matrix."""
        try:
            import torch
            import torch.distributed as dist
        except ImportError:  # evaluation without torch (e.g. `simformer score`)
            return self.confusion
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            self._synced = None
            return self._local
        t = torch.from_numpy(self._local.copy())
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        self._synced = t.cpu().numpy()
        return self._synced

    def evaluate(self) -> Dict[str, Any]:
        """Metrics in percent (see :func:`metrics_from_confusion`); call :meth:`synchronize` first
        under distributed evaluation."""
        return metrics_from_confusion(self.confusion, class_names=self.class_names,
                                      novel_mask=self.novel_mask, convention=self.convention)


def _fmt(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.2f}"


def _groups(class_names: Sequence[str], novel_mask: Optional[np.ndarray]) -> List[str]:
    if novel_mask is None:
        return ["all"] * len(class_names)
    return ["novel" if n else "base" for n in np.asarray(novel_mask, dtype=bool)]


def format_table(results: Dict[str, Any], class_names: Sequence[str], novel_mask: Optional[np.ndarray]) -> str:
    """Console report: a summary line (base / novel / all / HM) and a per-class IoU table.

    Novel classes are marked with ``*``; ``-`` = undefined (class absent from GT, or no split).
    """
    groups = _groups(class_names, novel_mask)
    lines = [
        f"mIoU  base {_fmt(results.get('base_miou'))} | novel {_fmt(results.get('novel_miou'))} | "
        f"all {_fmt(results.get('miou'))} | HM {_fmt(results.get('hm'))}",
        f"fwIoU {_fmt(results.get('fwiou'))} | mAcc {_fmt(results.get('macc'))} | pAcc {_fmt(results.get('pacc'))} "
        f"| convention {results.get('convention', '?')} | {results.get('num_pixels', 0)} labelled pixels",
    ]
    width = max([len("class")] + [len(n) for n in class_names])
    lines.append(f"{'id':>4}  {'class':<{width}}  {'group':<6} {'IoU':>7} {'Acc':>7}")
    iou, acc = results["per_class_iou"], results.get("per_class_acc", {})
    for i, (n, g) in enumerate(zip(class_names, groups)):
        mark = "*" if g == "novel" else " "
        lines.append(f"{i:>4}{mark} {n:<{width}}  {g:<6} {_fmt(iou.get(n)):>7} {_fmt(acc.get(n)):>7}")
    if novel_mask is not None:
        lines.append("(* = novel class)")
    return "\n".join(lines)


def write_results(results: Dict[str, Any], out_dir: str, class_names: Sequence[str],
                  novel_mask: Optional[np.ndarray]) -> Dict[str, str]:
    """Write ``out_dir/metrics.json`` and ``out_dir/per_class_iou.csv`` atomically.

    metrics.json starts with the keys of ``METRIC_KEYS`` (in that order), then the extras of
    ``results``. The CSV has columns class_id, class_name, group (base/novel, "all" without a
    split), iou, acc (percent; empty = undefined). Returns the two paths.
    """
    from simformer.utils.io import atomic_write_json, atomic_write_text

    missing = [k for k in METRIC_KEYS if k not in results]
    if missing:
        raise ValueError(f"Results lack the keys {missing}; pass the dict returned by SemSegEvaluator.evaluate()")
    ordered = {k: results[k] for k in METRIC_KEYS}
    ordered.update({k: v for k, v in results.items() if k not in ordered})
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, "metrics.json")
    csv_path = os.path.join(out_dir, "per_class_iou.csv")
    atomic_write_json(json_path, ordered)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["class_id", "class_name", "group", "iou", "acc"])
    acc = results.get("per_class_acc", {})
    for i, (n, g) in enumerate(zip(class_names, _groups(class_names, novel_mask))):
        v_iou, v_acc = results["per_class_iou"].get(n), acc.get(n)
        w.writerow([i, n, g, "" if v_iou is None else f"{v_iou:.6f}", "" if v_acc is None else f"{v_acc:.6f}"])
    atomic_write_text(csv_path, buf.getvalue())
    return {"metrics": json_path, "per_class_iou": csv_path}


def build_evaluator(cfg, dataset_name: str, split=None) -> SemSegEvaluator:
    """Evaluator for ``dataset_name`` configured from ``cfg``.

    Reads ``TEST.MIOU_CONVENTION``, ``MODEL.SEM_SEG_HEAD.IGNORE_VALUE`` and, when ``split`` is None,
    ``WEAKSHOT.SPLIT`` (a split file; "" = no split: only all-class metrics).
    ``split``: a :class:`simformer.data.split.Split` or a split-file path.
    """
    from simformer.data.catalog import class_names as catalog_class_names
    from simformer.data.split import Split, load_split

    names = catalog_class_names(dataset_name)
    if split is None and cfg.WEAKSHOT.SPLIT:
        split = cfg.WEAKSHOT.SPLIT
    if isinstance(split, str):
        split = load_split(split, expected_names=names, expected_dataset=dataset_name)
    novel_mask = None
    if split is not None:
        if not isinstance(split, Split):
            raise ValueError(f"split must be a Split or a split-file path, got {type(split).__name__}")
        if list(split.class_names) != list(names):
            raise ValueError(
                f"Split for dataset '{split.dataset}' does not match the class list of '{dataset_name}' "
                f"({len(split.class_names)} vs {len(names)} classes); use a split made for this dataset family"
            )
        novel_mask = split.novel_mask()  # all False for an all-base split: base = all, novel/HM None
    return SemSegEvaluator(class_names=names, novel_mask=novel_mask,
                           ignore_label=int(cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE),
                           convention=str(cfg.TEST.MIOU_CONVENTION))
