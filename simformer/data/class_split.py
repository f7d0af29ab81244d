"""The base/novel class split: data structure, JSON file format and validation.

A split file is JSON::

    {"dataset": "ade20k", "class_names": [...K names...], "base": [ids], "novel": [ids],
     "source": {"method": "paper" | "random" | "nested" | "all-base", ...seed, ratio...},
     "simformer_version": "0.1.0"}

ids are contiguous training ids (= pixel values after preparation). ``load_split`` validates it
(disjoint, union = all classes, names equal the dataset's) and raises ``SplitError`` otherwise.
Generation lives in ``simformer.data.class_split_gen``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np


class SplitError(ValueError):
    """An invalid split file; the message names the file and the problem."""


@dataclass(frozen=True)
class Split:
    dataset: str
    class_names: tuple
    base: tuple
    novel: tuple
    source: dict = field(default_factory=dict, compare=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def novel_mask(self) -> np.ndarray:
        """Bool array (K,), True for novel class ids."""
        m = np.zeros(self.num_classes, dtype=bool)
        m[list(self.novel)] = True
        return m

    def to_json(self) -> dict:
        from simformer import __version__

        return {
            "dataset": self.dataset,
            "class_names": list(self.class_names),
            "base": list(self.base),
            "novel": list(self.novel),
            "source": self.source,
            "simformer_version": __version__,
        }


def make_split(dataset: str, class_names: Sequence[str], novel: Sequence[int], source: Optional[dict] = None) -> Split:
    novel = sorted(int(i) for i in novel)
    base = [i for i in range(len(class_names)) if i not in set(novel)]
    split = Split(dataset, tuple(class_names), tuple(base), tuple(novel), dict(source or {}))
    validate_split(split)
    return split


def all_base_split(dataset: str, class_names: Sequence[str]) -> Split:
    """Every class base: the fully supervised (FullyOracle) setting."""
    return make_split(dataset, class_names, [], {"method": "all-base"})


def resolve_split(cfg, dataset_name: str) -> Split:
    """The configured split (``WEAKSHOT.SPLIT``, validated against the dataset's classes), or all-base."""
    from simformer.config import resolve_path

    from .catalog import get_dataset

    info = get_dataset(dataset_name)
    if not cfg.WEAKSHOT.SPLIT:
        return all_base_split(info.family, info.classes)
    return load_split(resolve_path(cfg.WEAKSHOT.SPLIT), expected_names=info.classes, expected_dataset=dataset_name)


def validate_split(split: Split, expected_names: Optional[Sequence[str]] = None, where: str = "split",
                   expected_dataset: Optional[str] = None) -> None:
    """Structure checks; with ``expected_names`` (the class list of ``expected_dataset``, default
    the split's own dataset) the split's class names must equal them."""
    k = len(split.class_names)
    base, novel = list(split.base), list(split.novel)
    for group, ids in (("base", base), ("novel", novel)):
        bad = [i for i in ids if not isinstance(i, (int, np.integer)) or not 0 <= i < k]
        if bad:
            raise SplitError(f"{where}: {group} ids {bad} are outside 0..{k - 1}")
        if len(set(ids)) != len(ids):
            raise SplitError(f"{where}: {group} list has duplicate ids")
    overlap = sorted(set(base) & set(novel))
    if overlap:
        names = [split.class_names[i] for i in overlap]
        raise SplitError(f"{where}: classes {overlap} ({names}) are both base and novel; a class must be one or the other")
    missing = sorted(set(range(k)) - set(base) - set(novel))
    if missing:
        raise SplitError(f"{where}: classes {missing} are neither base nor novel; base + novel must cover all {k} classes")
    if expected_names is not None and list(expected_names) != list(split.class_names):
        expected = list(expected_names)
        n = min(len(expected), len(split.class_names))
        diff = [i for i in range(n) if expected[i] != split.class_names[i]]
        diff += list(range(n, max(len(expected), len(split.class_names))))
        raise SplitError(
            f"{where}: class names do not match dataset '{expected_dataset or split.dataset}' "
            f"({len(expected)} classes; the split was made for '{split.dataset}' with "
            f"{len(split.class_names)}; first differing ids {diff[:5]}); use a split made for this dataset"
        )


def load_split(path: str, expected_names: Optional[Sequence[str]] = None,
               expected_dataset: Optional[str] = None) -> Split:
    """Read and validate a split file. ``expected_names`` (the class list of ``expected_dataset``)
    defaults to the class list of the dataset the file names."""
    if not os.path.isfile(path):
        raise SplitError(f"Split file not found: {path} (make one with `simformer split`)")
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise SplitError(f"Split file {path} is not valid JSON: {e}") from e
    for key in ("dataset", "class_names", "base", "novel"):
        if key not in data:
            raise SplitError(f"Split file {path} lacks the key '{key}'")
    split = Split(data["dataset"], tuple(data["class_names"]), tuple(data["base"]), tuple(data["novel"]),
                  dict(data.get("source", {})))
    if expected_names is None:
        from .catalog import class_names

        try:
            expected_names = class_names(split.dataset)
        except KeyError:
            expected_names = None  # a user family not registered here: check structure only
    validate_split(split, expected_names, where=f"Split file {path}", expected_dataset=expected_dataset)
    return split


def save_split(split: Split, path: str) -> None:
    from simformer.utils.io import atomic_write_json

    validate_split(split)
    atomic_write_json(path, split.to_json())
