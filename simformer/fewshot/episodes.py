"""Few-shot episodes: which images may serve a class, and the seeded episode list.

An episode (docs/fewshot.md) is ``(class c, query q, supports s_1..s_k)``: c is drawn first,
uniformly from the fold's classes; then q uniformly among the images holding at least
``min_pixels`` pixels of c; then k distinct supports uniformly among the other such images (never
the query). The list is a pure function of ``(counts, class_ids, shots, num_episodes, seed,
min_pixels)``: one ``numpy.random.default_rng(seed)`` stream, drawn in fixed-size blocks.

``class_pixel_counts`` gives the per-image pixel counts the sampler needs (one bincount per label
file), cached as ``.npy`` under ``<cache>/fewshot_counts/`` with a key that hashes the dataset
name, K and every label path with its size and mtime (``simformer.data.presence``), so a changed
label file is recounted and an unchanged dataset is read once.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from simformer.data.presence import _count_array, counts_cache_key, default_cache_dir
from simformer.utils.io import atomic_path, atomic_write_json, read_label

# Episodes drawn per block of random keys: bounds memory at BLOCK x (images of the largest class)
# floats; a constant, so the list does not depend on the machine.
BLOCK = 256
EPISODES_FORMAT = 1


@dataclass(frozen=True)
class Episode:
    class_id: int               # contiguous class id in the dataset
    query: int                  # index into the records list
    supports: Tuple[int, ...]   # record indices, len == shots, never the query, no duplicates

    def to_json(self) -> dict:
        return {"class_id": self.class_id, "query": self.query, "supports": list(self.supports)}


def class_pixel_counts(records: Sequence[dict], num_classes: int, *, cache_dir: Optional[str] = None,
                       name: str = "records") -> np.ndarray:
    """Pixel counts per image and class of ``records`` (255 = void is not counted).

    Args:
        records: dicts with "sem_seg_file_name" (``simformer.data.catalog.get_dataset_dicts``).
        num_classes: K.
        cache_dir: cache folder; None = ``$SIMFORMER_CACHE`` or ``<datasets>/.simformer_cache``.
        name: dataset name, part of the cache key and file name.
    Returns:
        int64 ``[N, K]``, row i = ``records[i]``.
    Raises:
        FileNotFoundError naming a missing label; ValueError naming a label with ids >= K.
    """
    paths = [r["sem_seg_file_name"] for r in records]
    key = counts_cache_key(name, num_classes, paths)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    path = os.path.join(cache_dir or default_cache_dir(), "fewshot_counts", f"{safe}-{key}.npy")
    if os.path.isfile(path):
        try:
            cached = np.load(path, allow_pickle=False)
            if cached.shape == (len(paths), num_classes) and cached.dtype == np.int64:
                return cached
        except (OSError, ValueError) as e:  # a damaged cache file only costs a recount
            warnings.warn(f"Ignoring unreadable pixel-count cache {path}: {e}")
    counts = np.zeros((len(paths), num_classes), dtype=np.int64)
    for i, p in enumerate(paths):  # one vectorised bincount per file
        counts[i] = _count_array(read_label(p), num_classes, p)
    try:
        with atomic_path(path, ".npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, counts)
    except OSError as e:  # a read-only cache folder must not stop the evaluation
        warnings.warn(f"Could not write the pixel-count cache {path} ({e}); set $SIMFORMER_CACHE to a writable folder")
    return counts


def eligible_images(counts: np.ndarray, class_ids: Sequence[int], min_pixels: int) -> np.ndarray:
    """Bool ``[N, C]``: image i holds at least ``min_pixels`` pixels of ``class_ids[j]``."""
    return np.asarray(counts)[:, np.asarray(class_ids, dtype=np.int64)] >= min_pixels


def sample_episodes(counts: np.ndarray, class_ids: Sequence[int], *, shots: int, num_episodes: int,
                    seed: int, min_pixels: int, class_names: Optional[Sequence[str]] = None) -> List[Episode]:
    """The seeded episode list (module docstring).

    Args:
        counts: int64 ``[N, K]`` pixel counts (``class_pixel_counts``).
        class_ids: the fold's classes (contiguous ids < K).
        shots: supports per episode (>= 1).
        num_episodes: episodes to draw (>= 1).
        seed: the only source of randomness.
        min_pixels: query and supports hold at least this many pixels of the class (>= 1).
        class_names: K names, used in error messages only.
    Raises:
        ValueError when an argument is out of range or a class has fewer than ``shots + 1``
        eligible images (named, with its count).
    """
    counts = np.asarray(counts)
    class_ids = [int(c) for c in class_ids]
    if counts.ndim != 2:
        raise ValueError(f"counts must be [images, classes], got shape {counts.shape}")
    if shots < 1:
        raise ValueError(f"shots must be >= 1 (got {shots})")
    if num_episodes < 1:
        raise ValueError(f"the number of episodes must be >= 1 (got {num_episodes})")
    if min_pixels < 1:
        raise ValueError(f"min_pixels must be >= 1 (got {min_pixels}); an image without the class cannot serve it")
    if not class_ids:
        raise ValueError("the fold has no classes")
    bad = [c for c in class_ids if not 0 <= c < counts.shape[1]]
    if bad:
        raise ValueError(f"fold classes {bad} are outside the dataset's ids 0..{counts.shape[1] - 1}")
    elig = eligible_images(counts, class_ids, min_pixels)            # [N, C]
    n_elig = elig.sum(0)                                              # [C]
    short = np.flatnonzero(n_elig < shots + 1)
    if short.size:
        def label(j):
            c = class_ids[j]
            return f"{c} ({class_names[c]})" if class_names is not None else str(c)
        which = ", ".join(f"class {label(j)}: {int(n_elig[j])} images" for j in short[:8])
        raise ValueError(
            f"{len(short)} fold class(es) have fewer than shots + 1 = {shots + 1} images with >= {min_pixels} pixels "
            f"({which}); a {shots}-shot episode needs a query and {shots} other support images: lower --shots or "
            "--min-pixels, or drop the class from the fold")
    # Eligible image indices per class, left-aligned in a padded table [C, max_n].
    max_n = int(n_elig.max())
    order = np.argsort(~elig, axis=0, kind="stable")[:max_n].T        # eligible rows first, index order
    rng = np.random.default_rng(seed)
    cls = rng.integers(len(class_ids), size=num_episodes)            # the class first, uniformly
    picks = np.empty((num_episodes, shots + 1), dtype=np.int64)
    for start in range(0, num_episodes, BLOCK):
        c = cls[start:start + BLOCK]
        # Random keys, +inf past each class's eligible images: the shots + 1 smallest keys in key order
        # are a uniform ordered draw without replacement (query first, then the supports).
        keys = rng.random((len(c), max_n))
        keys[np.arange(max_n)[None, :] >= n_elig[c][:, None]] = np.inf
        first = np.argpartition(keys, shots, axis=1)[:, : shots + 1]
        first = np.take_along_axis(first, np.argsort(np.take_along_axis(keys, first, 1), axis=1), 1)
        picks[start:start + BLOCK] = order[c[:, None], first]
    return [Episode(class_ids[j], int(p[0]), tuple(int(s) for s in p[1:])) for j, p in zip(cls, picks)]


def save_episodes(path: str, episodes: Sequence[Episode], records: Optional[Sequence[dict]] = None,
                  **meta) -> None:
    """Write the episode list as JSON (atomic): ``meta`` (seed, shots, ...) + one entry per episode,
    with the image ids of the query and supports when ``records`` is given."""
    rows = []
    for e in episodes:
        row = e.to_json()
        if records is not None:
            row["query_image"] = records[e.query]["image_id"]
            row["support_images"] = [records[s]["image_id"] for s in e.supports]
        rows.append(row)
    atomic_write_json(path, {"format": EPISODES_FORMAT, **meta, "episodes": rows})


def load_episodes(path: str) -> Tuple[List[Episode], dict]:
    """``(episodes, meta)`` from a file written by ``save_episodes``; ValueError naming the file."""
    try:
        with open(path) as f:
            data = json.load(f)
        eps = [Episode(int(r["class_id"]), int(r["query"]), tuple(int(s) for s in r["supports"]))
               for r in data["episodes"]]
    except FileNotFoundError:
        raise FileNotFoundError(f"Episode file not found: {path}") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path} is not an episode list written by `simformer fewshot`: {e}") from None
    return eps, {k: v for k, v in data.items() if k != "episodes"}
