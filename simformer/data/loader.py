"""Deterministic, rank-sharded, resumable data loading.

The training stream is one GLOBAL sequence of dataset indices: epoch permutations (each seeded by
``(seed, epoch)``) concatenated. Rank ``r`` of ``W`` takes the global positions ``p`` with
``p % W == r``. The sample at global position ``p`` is mapped with
``np.random.default_rng([seed, p])``, so its augmentation (and its reference image) depend only on
``(seed, p)``: results are the same for any number of loader workers, and ``W`` ranks together see
exactly the samples a single process with the same global batch sees. Resuming at iteration ``i``
starts the sampler at the matching offset without replaying the stream.
"""
from __future__ import annotations

import functools
import random
from typing import Iterator, List, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from simformer.utils.run_dir import reset_stop_signals_in_worker

__all__ = ["TrainingSampler", "TrainSampleDataset", "batched_train_loader", "sharded_test_loader",
           "micro_batch_layout", "shard_range"]


def _check_seed(seed: int) -> int:
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"SEED must be >= 0 for deterministic data loading, got {seed}")
    return seed


def _epoch_permutation(size: int, seed: int, epoch: int) -> np.ndarray:
    """int64 [size]: the permutation of epoch ``epoch`` (torch.Generator seeded by (seed, epoch))."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint32)
    g = torch.Generator()
    g.manual_seed((int(state[0]) << 31) ^ int(state[1]))  # < 2**63
    return torch.randperm(size, generator=g).numpy()


class TrainingSampler:
    """Infinite stream of ``(position, index)`` for one rank.

    ``position`` counts this rank's items from 0 (it is the rank-local stream position; the global
    position is ``position * world_size + rank``, see :meth:`global_position`). ``start`` skips the
    first ``start`` items of this rank in O(size), so a resumed run continues the same order.
    """

    def __init__(self, size: int, *, seed: int, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1, start: int = 0):
        if size <= 0:
            raise ValueError(f"TrainingSampler needs a non-empty dataset, got size {size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"Invalid rank {rank} for world_size {world_size}")
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.size = int(size)
        self.seed = _check_seed(seed)
        self.shuffle = bool(shuffle)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.start = int(start)

    def global_position(self, position: int) -> int:
        return position * self.world_size + self.rank

    def _order(self, epoch: int) -> np.ndarray:
        if self.shuffle:
            return _epoch_permutation(self.size, self.seed, epoch)
        return np.arange(self.size, dtype=np.int64)

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        position = self.start
        gpos = self.global_position(position)
        epoch = gpos // self.size
        while True:
            order = self._order(epoch)
            # This rank's global positions inside the epoch: gpos, gpos + W, ... < (epoch+1)*size.
            local = np.arange(gpos - epoch * self.size, self.size, self.world_size)
            for off in local.tolist():
                yield position, int(order[off])
                position += 1
            gpos = self.global_position(position)
            epoch = gpos // self.size


class TrainSampleDataset(Dataset):
    """Map-style dataset indexed by ``(global_position, index)``.

    Returns ``[anchor]``, or ``[anchor, reference]`` when a reference sampler is given (an object
    with ``sample(index, rng) -> int``); both are mapped with the per-sample generator
    ``np.random.default_rng([seed, global_position])`` (the reference gets its own augmentation by
    continuing that generator) and carry ``"pair_role"``.
    """

    def __init__(self, records: Sequence[dict], mapper, *, seed: int, reference_sampler=None):
        self.records = list(records)
        self.mapper = mapper
        self.seed = _check_seed(seed)
        self.reference_sampler = reference_sampler

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: Tuple[int, int]) -> List[dict]:
        gpos, index = int(key[0]), int(key[1])
        rng = np.random.default_rng([self.seed, gpos])
        anchor = self.mapper(self.records[index], rng)
        if self.reference_sampler is None:
            return [anchor]
        ref_index = int(self.reference_sampler.sample(index, rng))
        if not 0 <= ref_index < len(self.records):
            raise IndexError(f"Reference sampler returned index {ref_index} for {len(self.records)} records")
        reference = self.mapper(self.records[ref_index], rng)
        anchor["pair_role"] = "anchor"
        reference["pair_role"] = "reference"
        return [anchor, reference]


class _MicroBatches:
    """Groups a :class:`TrainingSampler` into lists of ``(global_position, index)``."""

    def __init__(self, sampler: TrainingSampler, n: int):
        self.sampler, self.n = sampler, n

    def __iter__(self):
        batch = []
        for position, index in self.sampler:
            batch.append((self.sampler.global_position(position), index))
            if len(batch) == self.n:
                yield batch
                batch = []


def _flatten(items: List[List[dict]]) -> List[dict]:
    return [d for group in items for d in group]


def _worker_init(worker_id: int, *, seed: int, rank: int) -> None:
    # Belt and braces: the mapper uses explicit generators, but third-party code might not.
    state = np.random.SeedSequence([seed, rank, worker_id]).generate_state(2, dtype=np.uint32)
    random.seed(int(state[0]))
    np.random.seed(int(state[0]))
    torch.manual_seed((int(state[0]) << 32) | int(state[1]))
    # The trainer stops on Ctrl-C / SIGUSR2 after its step and saves first, so a worker must not die
    # under that step; SIGTERM must stop it (the loader's shutdown uses it).
    reset_stop_signals_in_worker()


def micro_batch_layout(cfg, *, world_size: int = 1, pairs: bool = False) -> Tuple[int, int]:
    """(images per rank per micro-step, anchors per rank per micro-step).

    ``SOLVER.IMS_PER_BATCH`` is the global batch over ranks and accumulation steps; with pairs it
    counts references too, so anchors are half of it.
    """
    ims = int(cfg.SOLVER.IMS_PER_BATCH)
    accum = int(cfg.SOLVER.GRAD_ACCUM_STEPS)
    if accum < 1:
        raise ValueError(f"SOLVER.GRAD_ACCUM_STEPS must be >= 1, got {accum}")
    div = world_size * accum
    if ims <= 0 or ims % div:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH = {ims} must be a positive multiple of world_size x GRAD_ACCUM_STEPS = "
            f"{world_size} x {accum} = {div}."
        )
    per = ims // div
    if pairs and per % 2:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH = {ims} gives {per} images per rank per micro-step, but with image pairs "
            f"(WEAKSHOT.PAIR_MODE != 'none') each micro-step needs an even count (anchor + reference); "
            f"use a multiple of {2 * div}."
        )
    return per, (per // 2 if pairs else per)


def batched_train_loader(cfg, *, records: Sequence[dict], mapper, reference_sampler=None, rank: int = 0,
                       world_size: int = 1, start_iter: int = 0) -> Iterator[List[dict]]:
    """Infinite iterator; each item is the list of sample dicts of ONE micro-step of this rank.

    Reads ``SEED``, ``SOLVER.IMS_PER_BATCH``, ``SOLVER.GRAD_ACCUM_STEPS``, ``DATALOADER.NUM_WORKERS``
    and ``WEAKSHOT.PAIR_MODE`` (which must agree with ``reference_sampler``). With pairs, item
    ``[2i]`` is a training image and ``[2i+1]`` its reference. ``start_iter`` resumes the data
    order at that training iteration.
    """
    if not records:
        raise ValueError("batched_train_loader: the training dataset has no records")
    pair_mode = str(cfg.WEAKSHOT.PAIR_MODE)
    if pair_mode == "none" and reference_sampler is not None:
        raise ValueError("WEAKSHOT.PAIR_MODE is 'none' but a reference sampler was given; set PAIR_MODE or drop it")
    if pair_mode != "none" and reference_sampler is None:
        raise ValueError(
            f"WEAKSHOT.PAIR_MODE is '{pair_mode}' but no reference sampler was given; pass one "
            "(simformer.data.reference) or set WEAKSHOT.PAIR_MODE none"
        )
    if start_iter < 0:
        raise ValueError(f"start_iter must be >= 0, got {start_iter}")
    _, anchors = micro_batch_layout(cfg, world_size=world_size, pairs=reference_sampler is not None)
    accum = int(cfg.SOLVER.GRAD_ACCUM_STEPS)
    seed = _check_seed(cfg.SEED)
    sampler = TrainingSampler(len(records), seed=seed, rank=rank, world_size=world_size,
                              start=start_iter * accum * anchors)
    dataset = TrainSampleDataset(records, mapper, seed=seed, reference_sampler=reference_sampler)
    num_workers = int(cfg.DATALOADER.NUM_WORKERS)
    if num_workers < 0:
        raise ValueError(f"DATALOADER.NUM_WORKERS must be >= 0, got {num_workers}")
    loader = DataLoader(
        dataset,
        batch_sampler=_MicroBatches(sampler, anchors),
        num_workers=num_workers,
        collate_fn=_flatten,
        worker_init_fn=functools.partial(_worker_init, seed=seed, rank=rank) if num_workers else None,
    )
    return iter(loader)


def shard_range(n: int, rank: int, world_size: int) -> Tuple[int, int]:
    """[begin, end) of rank's contiguous chunk; the first ``n % world_size`` ranks get one more."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"Invalid rank {rank} for world_size {world_size}")
    base, extra = divmod(n, world_size)
    begin = rank * base + min(rank, extra)
    return begin, begin + base + (1 if rank < extra else 0)


class _TestDataset(Dataset):
    def __init__(self, records: Sequence[dict], mapper):
        self.records, self.mapper = list(records), mapper

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> List[dict]:
        return [self.mapper(self.records[i], np.random.default_rng([0, i]))]


def sharded_test_loader(records: Sequence[dict], mapper, *, rank: int = 0, world_size: int = 1,
                      num_workers: int = 0) -> DataLoader:
    """Re-iterable loader of single-sample lists over this rank's contiguous chunk of ``records``."""
    begin, end = shard_range(len(records), rank, world_size)
    return DataLoader(_TestDataset(list(records)[begin:end], mapper), batch_size=1, shuffle=False,
                      num_workers=int(num_workers), collate_fn=_flatten)
