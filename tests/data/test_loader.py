import itertools
import json
import os

import numpy as np
import torch
import pytest
from PIL import Image

from simformer.config import get_cfg
from simformer.data.catalog import get_dataset_dicts, register_folder
from simformer.data.loader import (TrainingSampler, TrainSampleDataset, sharded_test_loader,
                                   batched_train_loader, shard_range)
from simformer.data.mapper import WeakShotDatasetMapper
from simformer.utils.io import save_label_png

K = 5
N = 7


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("loader_ds"))
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(root, "images", "train"))
    with open(os.path.join(root, "classes.json"), "w") as f:
        json.dump([f"c{i}" for i in range(K)], f)
    for i in range(N):
        h, w = 16 + 2 * i, 24 - i
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            os.path.join(root, "images", "train", f"s{i}.png"))
        save_label_png(os.path.join(root, "annotations", "train", f"s{i}.png"),
                       rng.integers(0, K, (h, w)).astype(np.uint8))
    register_folder("loader_test_ds", root, "train")
    return get_dataset_dicts("loader_test_ds")


@pytest.fixture(scope="module")
def mapper():
    return WeakShotDatasetMapper(is_train=True, num_classes=K, min_size_train=[12, 20],
                                 min_size_train_sampling="range", max_size_train=100, crop_size=(12, 12),
                                 color_aug_ssd=True, size_divisibility=8)


class FakeReferenceSampler:
    """Reference = a different image chosen with the sample's generator."""

    def __init__(self, n):
        self.n = n

    def sample(self, index, rng):
        return int((index + 1 + rng.integers(self.n - 1)) % self.n)


def _cfg(ims=4, accum=1, workers=0, pair_mode="none", seed=3):
    cfg = get_cfg()
    cfg.SOLVER.IMS_PER_BATCH = ims
    cfg.SOLVER.GRAD_ACCUM_STEPS = accum
    cfg.DATALOADER.NUM_WORKERS = workers
    cfg.WEAKSHOT.PAIR_MODE = pair_mode
    cfg.SEED = seed
    return cfg


def _assert_samples_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], (np.ndarray, torch.Tensor)):
                np.testing.assert_array_equal(x[k], y[k])
            else:
                assert x[k] == y[k]


def _take(it, n):
    return list(itertools.islice(it, n))


# ------------------------------------------------------------------------------------------------
def test_sampler_epochs_are_seeded_permutations():
    s = _take(iter(TrainingSampler(10, seed=5)), 30)
    assert [p for p, _ in s] == list(range(30))
    idx = np.array([i for _, i in s])
    for e in range(3):
        assert sorted(idx[10 * e:10 * e + 10]) == list(range(10))
    assert not np.array_equal(idx[:10], idx[10:20])  # a new permutation every epoch
    again = [i for _, i in _take(iter(TrainingSampler(10, seed=5)), 30)]
    assert again == idx.tolist()
    other = [i for _, i in _take(iter(TrainingSampler(10, seed=6)), 30)]
    assert other != idx.tolist()
    plain = [i for _, i in _take(iter(TrainingSampler(4, seed=5, shuffle=False)), 9)]
    assert plain == [0, 1, 2, 3, 0, 1, 2, 3, 0]


@pytest.mark.parametrize("world", [2, 3])
def test_sampler_ranks_partition_the_global_stream(world):
    glob = [i for _, i in _take(iter(TrainingSampler(7, seed=1)), 7 * world * 3)]
    per_rank = [[i for _, i in _take(iter(TrainingSampler(7, seed=1, rank=r, world_size=world)), 21)]
                for r in range(world)]
    interleaved = [per_rank[p % world][p // world] for p in range(21 * world)]
    assert interleaved == glob
    # ranks take disjoint global positions (via global_position) that together are 0..N-1
    samplers = [TrainingSampler(7, seed=1, rank=r, world_size=world) for r in range(world)]
    gpos = sorted(s.global_position(p) for s in samplers for p, _ in _take(iter(s), 10))
    assert gpos == list(range(10 * world))


@pytest.mark.parametrize("world,rank,start", [(1, 0, 0), (1, 0, 13), (2, 1, 9), (3, 2, 4), (2, 0, 7)])
def test_sampler_start_equals_skipping(world, rank, start):
    full = _take(iter(TrainingSampler(5, seed=2, rank=rank, world_size=world)), start + 20)
    resumed = _take(iter(TrainingSampler(5, seed=2, rank=rank, world_size=world, start=start)), 20)
    assert resumed == full[start:]


def test_dataset_rng_and_reference(records, mapper):
    ref = FakeReferenceSampler(len(records))
    ds = TrainSampleDataset(records, mapper, seed=4, reference_sampler=ref)
    a, b = ds[(11, 3)], ds[(11, 3)]
    _assert_samples_equal(a, b)
    assert [d["pair_role"] for d in a] == ["anchor", "reference"]
    # Independent replay of the documented recipe: rng([seed, position]) -> anchor, ref, reference.
    rng = np.random.default_rng([4, 11])
    anchor = mapper(records[3], rng)
    ref_idx = ref.sample(3, rng)
    reference = mapper(records[ref_idx], rng)
    assert a[1]["index"] == ref_idx != 3
    _assert_samples_equal([a[0], a[1]], [dict(anchor, pair_role="anchor"), dict(reference, pair_role="reference")])
    c = ds[(12, 3)]  # another position -> another augmentation of the same record
    assert c[0]["image"].shape != a[0]["image"].shape or not np.array_equal(c[0]["image"], a[0]["image"])
    single = TrainSampleDataset(records, mapper, seed=4)[(11, 3)]
    assert len(single) == 1 and "pair_role" not in single[0]
    np.testing.assert_array_equal(single[0]["image"], anchor["image"])


def test_loader_worker_count_does_not_matter(records, mapper):
    ref = FakeReferenceSampler(len(records))
    b0 = _take(batched_train_loader(_cfg(workers=0, pair_mode="cross"), records=records, mapper=mapper,
                                  reference_sampler=ref), 4)
    b2 = _take(batched_train_loader(_cfg(workers=2, pair_mode="cross"), records=records, mapper=mapper,
                                  reference_sampler=ref), 4)
    for x, y in zip(b0, b2):
        _assert_samples_equal(x, y)
    assert all(len(b) == 4 for b in b0)  # 2 anchors + 2 references
    assert [d["pair_role"] for d in b0[0]] == ["anchor", "reference"] * 2


def test_two_ranks_equal_one_rank_and_accumulation(records, mapper):
    one = _take(batched_train_loader(_cfg(ims=4), records=records, mapper=mapper), 3)
    r0 = _take(batched_train_loader(_cfg(ims=4), records=records, mapper=mapper, rank=0, world_size=2), 3)
    r1 = _take(batched_train_loader(_cfg(ims=4), records=records, mapper=mapper, rank=1, world_size=2), 3)
    for it in range(3):
        assert len(r0[it]) == len(r1[it]) == 2 and len(one[it]) == 4
        # rank r holds global positions 4*it + r + 2j
        _assert_samples_equal(one[it], [r0[it][0], r1[it][0], r0[it][1], r1[it][1]])
    acc = _take(batched_train_loader(_cfg(ims=4, accum=2), records=records, mapper=mapper), 6)
    for it in range(3):
        _assert_samples_equal(one[it], acc[2 * it] + acc[2 * it + 1])
    # Resuming at iteration 2 continues exactly where the uninterrupted run is.
    resumed = _take(batched_train_loader(_cfg(ims=4), records=records, mapper=mapper, start_iter=2), 1)
    _assert_samples_equal(resumed[0], one[2])
    r1_res = _take(batched_train_loader(_cfg(ims=4, accum=2), records=records, mapper=mapper, rank=1,
                                      world_size=2, start_iter=1), 2)
    _assert_samples_equal(r1_res[0] + r1_res[1], r1[1])


def test_loader_batch_size_errors(records, mapper):
    with pytest.raises(ValueError, match="SOLVER.IMS_PER_BATCH"):
        batched_train_loader(_cfg(ims=6, accum=4), records=records, mapper=mapper)
    with pytest.raises(ValueError, match="SOLVER.IMS_PER_BATCH"):
        batched_train_loader(_cfg(ims=6, pair_mode="cross"), records=records, mapper=mapper, world_size=2,
                           reference_sampler=FakeReferenceSampler(N))  # 3 per rank: odd with pairs
    with pytest.raises(ValueError, match="PAIR_MODE"):
        batched_train_loader(_cfg(pair_mode="cross"), records=records, mapper=mapper)
    with pytest.raises(ValueError, match="PAIR_MODE"):
        batched_train_loader(_cfg(pair_mode="none"), records=records, mapper=mapper,
                           reference_sampler=FakeReferenceSampler(N))


def test_test_loader_shards_contiguously(records):
    m = WeakShotDatasetMapper(is_train=False, num_classes=K, min_size_test=10)
    assert [shard_range(7, r, 3) for r in range(3)] == [(0, 3), (3, 5), (5, 7)]
    assert [shard_range(2, r, 3) for r in range(3)] == [(0, 1), (1, 2), (2, 2)]
    seen = []
    for r in range(3):
        items = list(sharded_test_loader(records, m, rank=r, world_size=3))
        assert all(len(b) == 1 for b in items)
        ids = [b[0]["index"] for b in items]
        assert ids == list(range(ids[0], ids[0] + len(ids))) if ids else True
        seen += ids
    assert seen == list(range(N))
    again = [b[0]["index"] for b in sharded_test_loader(records, m, num_workers=2)]
    assert again == list(range(N))
