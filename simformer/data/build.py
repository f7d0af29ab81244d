"""The data pipeline, config -> loader, in one place (detectron2's ``data/build.py``).

``build_train_loader(cfg, split)``: records of ``DATASETS.TRAIN[0]`` (pseudo labels swapped in
with ``WEAKSHOT.PSEUDO_LABEL_DIR``), the training mapper, with pairs the presence matrix + pair
statistics + :class:`ReferenceSampler`, and the seeded, rank-sharded, resumable sampler.
``build_test_loader(cfg, name)``: the test mapper over this rank's share of a dataset.
The trainer, the evaluation loop, the inference verbs and the benchmarks all call these.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Iterator, List, Optional

from simformer.config.checks import novel_masks, uses_pairs
from simformer.utils import comm

from .catalog import get_dataset, get_dataset_dicts
from .class_split import Split
from .loader import batched_train_loader, sharded_test_loader
from .mapper import build_mapper
from .reference import ReferenceSampler, cached_pair_statistics

__all__ = ["build_train_loader", "build_test_loader", "build_reference_sampler", "train_records", "cache_dir_for"]

logger = logging.getLogger("simformer")


def cache_dir_for(dataset_name: str) -> str:
    """Where presence matrices and pair statistics of ``dataset_name`` are cached
    (``$SIMFORMER_CACHE``, else ``.simformer_cache`` beside the dataset's label folder)."""
    info = get_dataset(dataset_name)
    return os.environ.get("SIMFORMER_CACHE") or os.path.join(os.path.dirname(os.path.normpath(info.sem_seg_root)),
                                                               ".simformer_cache")


def train_records(cfg, dataset_name: str) -> List[dict]:
    """The training records; with ``WEAKSHOT.PSEUDO_LABEL_DIR`` each label is that folder's
    ``<image_id>.png`` (every one must exist)."""
    records = get_dataset_dicts(dataset_name)
    label_dir = cfg.WEAKSHOT.PSEUDO_LABEL_DIR
    if label_dir:
        records = [dict(r, sem_seg_file_name=os.path.join(label_dir, r["image_id"] + ".png")) for r in records]
        missing = [r["sem_seg_file_name"] for r in records if not os.path.isfile(r["sem_seg_file_name"])]
        if missing:
            raise FileNotFoundError(f"WEAKSHOT.PSEUDO_LABEL_DIR lacks {len(missing)} labels, e.g. {missing[0]}; "
                                    "run `simformer pseudo-label` first.")
    return records


def build_reference_sampler(cfg, dataset_name: str, split: Split, *,
                            cache_dir: Optional[str] = None) -> Optional[ReferenceSampler]:
    """The reference-image sampler of ``WEAKSHOT.PAIR_MODE`` (None for 'none'). Rank 0 fills the
    presence and pair-statistics caches, the other ranks then read them."""
    if not uses_pairs(cfg):
        return None
    from .presence import presence_matrix

    cache = cache_dir or cache_dir_for(dataset_name)
    novel = split.novel_mask()
    if comm.get_rank() == 0:
        presence = presence_matrix(dataset_name, cache_dir=cache)
        stats = cached_pair_statistics(presence, novel, cache)
    comm.synchronize()
    if comm.get_rank() != 0:
        presence = presence_matrix(dataset_name, cache_dir=cache)
        stats = cached_pair_statistics(presence, novel, cache)
    if cfg.WEAKSHOT.PAIR_MODE == "self":  # the statistics describe the cross rule, not these pairs
        logger.info("Reference pairs (self): every image is its own reference (the cross rule would give %s)",
                    json.dumps(stats.summary()))
    else:
        logger.info("Reference pairs (%s): %s", cfg.WEAKSHOT.PAIR_MODE, json.dumps(stats.summary()))
    return ReferenceSampler(presence=presence, novel_mask=novel, mode=cfg.WEAKSHOT.PAIR_MODE, stats=stats)


def build_train_loader(cfg, split: Split, *, start_iter: int = 0, rank: Optional[int] = None,
                       world_size: Optional[int] = None, reference_sampler: Optional[ReferenceSampler] = None,
                       cache_dir: Optional[str] = None) -> Iterator[List[dict]]:
    """Infinite iterator over this rank's micro-batches of ``DATASETS.TRAIN[0]`` (see
    :func:`simformer.data.loader.batched_train_loader`). ``split`` gives the novel classes; their
    masks are dropped from the targets unless :func:`simformer.config.checks.novel_masks`.
    ``reference_sampler``: a prebuilt one (else built here when pairs are on)."""
    name = cfg.DATASETS.TRAIN[0]
    records = train_records(cfg, name)
    mapper = build_mapper(cfg, True, None if novel_masks(cfg) else split)
    if reference_sampler is None:
        reference_sampler = build_reference_sampler(cfg, name, split, cache_dir=cache_dir)
    return batched_train_loader(cfg, records=records, mapper=mapper, reference_sampler=reference_sampler,
                                rank=comm.get_rank() if rank is None else rank,
                                world_size=comm.get_world_size() if world_size is None else world_size,
                                start_iter=start_iter)


def build_test_loader(cfg, name: str, *, rank: Optional[int] = None, world_size: Optional[int] = None):
    """Re-iterable loader of single-sample lists (test mapper: original-resolution ``sem_seg_full``,
    ``image_labels``) over this rank's contiguous share of dataset ``name``."""
    mapper = build_mapper(cfg, False, None, num_classes=get_dataset(name).num_classes)
    return sharded_test_loader(get_dataset_dicts(name), mapper,
                               rank=comm.get_rank() if rank is None else rank,
                               world_size=comm.get_world_size() if world_size is None else world_size,
                               num_workers=cfg.DATALOADER.NUM_WORKERS)
