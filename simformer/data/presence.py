"""Per-image class pixel counts and the image x class presence matrix, cached on disk.

``class_pixel_counts(name)`` reads every label PNG of a registered dataset once and returns an
``int64 [N, K]`` array: row i = record i of ``get_dataset_dicts(name)``, column c = number of
pixels labelled c (255 = ignore is not counted). ``presence_matrix(name)`` is ``counts > 0``.

The result is cached as ``<cache>/pixel_counts/<dataset>-<key>.npz`` where the key hashes the
dataset name, K and every label path with its size and mtime, so editing, adding or removing a
label file gives a new key and a recomputation; an unchanged dataset is read once, ever. The
cache folder is the ``cache_dir`` argument, else ``$SIMFORMER_CACHE``, else
``<datasets_root()>/.simformer_cache``. Stale entries are left in place (they are small:
8 bytes x N x K) and can be deleted at any time.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from typing import Iterable, List, Optional, Sequence

import numpy as np

from simformer.utils.io import read_label
from simformer.utils.run_dir import reset_stop_signals_in_worker

IGNORE_LABEL = 255
_CACHE_FORMAT = 1  # bump when the cached content changes meaning

# Module-level indirection so tests can observe / replace the label reader.
_read_label = read_label


def _count_array(label: np.ndarray, num_classes: int, where: str) -> np.ndarray:
    """Pixel counts of one label map.

    Args:
        label: integer array of any shape (usually uint8 ``[H, W]``).
        num_classes: K; valid values are ``0..K-1`` and 255.
        where: file name (or description) used in the error message.
    Returns:
        int64 ``[K]``.
    Raises:
        ValueError naming ``where`` if a value is >= K and != 255 (or negative).
    """
    flat = np.asarray(label).ravel()
    if flat.size and (flat.min() < 0 or flat.max() > 255):
        raise ValueError(f"Label {where} has values outside 0..255; expected class ids 0..{num_classes - 1} and 255 = ignore")
    hist = np.bincount(flat.astype(np.int64, copy=False), minlength=256)
    bad = np.flatnonzero(hist[num_classes:IGNORE_LABEL])
    if bad.size:
        values = (bad + num_classes).tolist()
        raise ValueError(
            f"Label {where} contains values {values[:10]} but the dataset has {num_classes} classes "
            f"(valid ids 0..{num_classes - 1}, 255 = ignore); fix the label file or the class list"
        )
    return hist[:num_classes].astype(np.int64)


def pixel_counts_from_labels(label_arrays: Iterable[np.ndarray], num_classes: int,
                             names: Optional[Sequence[str]] = None) -> np.ndarray:
    """Pixel counts of in-memory label maps: int64 ``[N, K]`` (255 ignored).

    ``names`` (optional, one per array) is used in error messages instead of the array index.
    """
    rows = [_count_array(lab, num_classes, names[i] if names is not None else f"array #{i}")
            for i, lab in enumerate(label_arrays)]
    if not rows:
        return np.zeros((0, num_classes), dtype=np.int64)
    return np.stack(rows)


def presence_from_labels(label_arrays: Iterable[np.ndarray], num_classes: int,
                         names: Optional[Sequence[str]] = None) -> np.ndarray:
    """Bool ``[N, K]``: True where class c occurs in label map i (255 ignored)."""
    return pixel_counts_from_labels(label_arrays, num_classes, names) > 0


def _count_file(task) -> np.ndarray:
    path, num_classes = task
    return _count_array(_read_label(path), num_classes, path)


def default_cache_dir() -> str:
    """``$SIMFORMER_CACHE``, else ``<datasets_root()>/.simformer_cache``."""
    if os.environ.get("SIMFORMER_CACHE"):
        return os.path.expanduser(os.environ["SIMFORMER_CACHE"])
    from .catalog import datasets_root

    return os.path.join(datasets_root(), ".simformer_cache")


def counts_cache_key(dataset_name: str, num_classes: int, label_paths: Sequence[str]) -> str:
    """Hash of (dataset name, K, every label's absolute path, size and mtime).

    Raises FileNotFoundError naming a label that vanished.
    """
    h = hashlib.sha256()
    h.update(json.dumps([_CACHE_FORMAT, dataset_name, int(num_classes)]).encode())
    for p in label_paths:
        try:
            st = os.stat(p)
        except FileNotFoundError:
            raise FileNotFoundError(f"Label file not found: {p}") from None
        h.update(f"\n{os.path.abspath(p)}\t{st.st_size}\t{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def counts_cache_path(dataset_name: str, key: str, cache_dir: Optional[str] = None) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in dataset_name)
    return os.path.join(cache_dir or default_cache_dir(), "pixel_counts", f"{safe}-{key}.npz")


def _load_cached(path: str, n: int, k: int, key: str) -> Optional[np.ndarray]:
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            counts = z["counts"]
            stored_key = str(z["key"])
    except Exception as e:  # a damaged cache file only costs a recomputation
        warnings.warn(f"Ignoring unreadable pixel-count cache {path}: {e}")
        return None
    if stored_key != key or counts.shape != (n, k) or counts.dtype != np.int64:
        return None
    return counts


def _save_cached(path: str, counts: np.ndarray, key: str, dataset_name: str, image_ids: List[str]) -> None:
    from simformer.utils.io import atomic_path

    try:
        with atomic_path(path, ".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, counts=counts, key=np.array(key), dataset=np.array(dataset_name),
                         image_ids=np.array(image_ids, dtype=str))
    except OSError as e:
        # A read-only datasets folder must not make the statistics unusable.
        warnings.warn(f"Could not write the pixel-count cache {path} ({e}); set $SIMFORMER_CACHE to a writable folder")


def _auto_workers(n: int) -> int:
    if n < 256:
        return 1
    return max(1, min(8, os.cpu_count() or 1))


def class_pixel_counts(dataset_name: str, *, cache_dir: Optional[str] = None, workers: Optional[int] = None,
                       progress: bool = False) -> np.ndarray:
    """Pixel counts per image and class of a registered dataset.

    Args:
        dataset_name: a name known to ``simformer.data.catalog.get_dataset``.
        cache_dir: cache folder (default: see module docstring).
        workers: processes reading labels; None = automatic (1 for small datasets), <= 1 = serial.
        progress: show a progress bar on stderr.
    Returns:
        int64 ``[N, K]``, row i = record i of ``get_dataset_dicts(dataset_name)``.
    Raises:
        FileNotFoundError if the dataset or a label is missing; ValueError naming the label file
        whose values exceed the class list.
    """
    from .catalog import get_dataset, get_dataset_dicts

    info = get_dataset(dataset_name)
    k = info.num_classes
    records = get_dataset_dicts(dataset_name)
    paths = [r["sem_seg_file_name"] for r in records]
    key = counts_cache_key(info.name, k, paths)
    cache_file = counts_cache_path(info.name, key, cache_dir)
    cached = _load_cached(cache_file, len(paths), k, key)
    if cached is not None:
        return cached

    n = len(paths)
    workers = _auto_workers(n) if workers is None else max(1, int(workers))
    tasks = [(p, k) for p in paths]
    counts = np.zeros((n, k), dtype=np.int64)
    from tqdm import tqdm

    # the same tqdm bar as every other long step (prepare, toyscenes, training, evaluation)
    bar = tqdm(total=n, desc=f"{dataset_name}: counting label pixels", unit="img", disable=not progress,
               dynamic_ncols=True)
    with bar:
        if workers <= 1 or n < 2:
            for i, t in enumerate(tasks):
                counts[i] = _count_file(t)
                bar.update(1)
        else:
            import multiprocessing as mp

            # close() + join() when done, not the context manager's terminate(): the workers exit
            # on their end-of-tasks markers, nothing is killed (run_dir.reset_stop_signals_in_worker)
            pool = mp.get_context().Pool(min(workers, n), initializer=reset_stop_signals_in_worker)
            try:
                for i, row in enumerate(pool.imap(_count_file, tasks, chunksize=max(1, min(64, n // (4 * workers))))):
                    counts[i] = row
                    bar.update(1)
                pool.close()
            except BaseException:
                pool.terminate()
                raise
            finally:
                pool.join()
    _save_cached(cache_file, counts, key, info.name, [r["image_id"] for r in records])
    return counts


def presence_matrix(dataset_name: str, **kwargs) -> np.ndarray:
    """Bool ``[N, K]``: class c occurs in image i (``class_pixel_counts(...) > 0``)."""
    return class_pixel_counts(dataset_name, **kwargs) > 0
