"""Episode sampling: seeded, every constraint holds, uniform class choice, clear errors; pixel counts."""
import os

import numpy as np
import pytest

from simformer.fewshot import episodes as E
from simformer.fewshot.episodes import (Episode, class_pixel_counts, load_episodes, sample_episodes,
                                        save_episodes)
from simformer.utils.io import read_label


def random_counts(n=40, k=7, seed=3):
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 300, size=(n, k)) * (rng.random((n, k)) < 0.5)
    return counts.astype(np.int64)


def test_same_seed_same_episodes_other_seed_other():
    counts = random_counts()
    kw = dict(shots=2, num_episodes=300, min_pixels=50)
    a = sample_episodes(counts, [1, 3, 4], seed=5, **kw)
    assert a == sample_episodes(counts, [1, 3, 4], seed=5, **kw)
    assert a != sample_episodes(counts, [1, 3, 4], seed=6, **kw)
    # more than one block of random keys: still a pure function of the seed
    assert len(a) == 300 and 300 > E.BLOCK


@pytest.mark.parametrize("shots", [1, 5])
def test_every_episode_satisfies_the_constraints(shots):
    counts = random_counts(n=60, k=6, seed=shots)
    fold, min_px = [0, 2, 5], 40
    eps = sample_episodes(counts, fold, shots=shots, num_episodes=500, seed=0, min_pixels=min_px)
    assert len(eps) == 500
    for e in eps:  # brute force, one episode at a time
        assert e.class_id in fold
        assert counts[e.query, e.class_id] >= min_px
        assert len(e.supports) == shots and len(set(e.supports)) == shots
        assert e.query not in e.supports
        for s in e.supports:
            assert counts[s, e.class_id] >= min_px


def test_class_then_query_are_uniform():
    counts = np.zeros((30, 3), np.int64)
    counts[:4, 0] = 100       # class 0: 4 images
    counts[:, 1] = 100        # class 1: every image
    counts[10:13, 2] = 100    # class 2: 3 images
    eps = sample_episodes(counts, [0, 1, 2], shots=1, num_episodes=6000, seed=1, min_pixels=1)
    per_class = np.bincount([e.class_id for e in eps], minlength=3)
    assert np.all(np.abs(per_class / 6000 - 1 / 3) < 0.03)  # the class is drawn first, uniformly
    q0 = np.bincount([e.query for e in eps if e.class_id == 0], minlength=4)[:4]
    assert np.all(np.abs(q0 / q0.sum() - 0.25) < 0.05)      # then the query, uniformly among eligible images


def test_errors_name_the_problem():
    counts = np.zeros((5, 3), np.int64)
    counts[:, 0] = 100
    counts[:2, 1] = 100
    counts[:4, 2] = 10
    with pytest.raises(ValueError, match=r"class 1 \(b\): 2 images"):
        sample_episodes(counts, [0, 1], shots=2, num_episodes=3, seed=0, min_pixels=1, class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"class 2: 0 images"):  # below min_pixels: not eligible
        sample_episodes(counts, [0, 2], shots=1, num_episodes=3, seed=0, min_pixels=11)
    with pytest.raises(ValueError, match="shots must be >= 1"):
        sample_episodes(counts, [0], shots=0, num_episodes=3, seed=0, min_pixels=1)
    with pytest.raises(ValueError, match="min_pixels must be >= 1"):
        sample_episodes(counts, [0], shots=1, num_episodes=3, seed=0, min_pixels=0)
    with pytest.raises(ValueError, match="outside the dataset's ids"):
        sample_episodes(counts, [3], shots=1, num_episodes=3, seed=0, min_pixels=1)
    # exactly shots + 1 eligible images: allowed, and the episode uses all of them
    eps = sample_episodes(counts, [1], shots=1, num_episodes=4, seed=0, min_pixels=1)
    assert all({e.query, *e.supports} == {0, 1} for e in eps)


def test_pixel_counts_brute_force_and_cache(tiny_records, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    counts = class_pixel_counts(tiny_records, 4, cache_dir=cache, name="tiny")
    for i, r in enumerate(tiny_records):
        label = read_label(r["sem_seg_file_name"])
        assert [int((label == c).sum()) for c in range(4)] == counts[i].tolist()
    files = os.listdir(os.path.join(cache, "fewshot_counts"))
    assert len(files) == 1 and files[0].startswith("tiny-") and files[0].endswith(".npy")

    def boom(path):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(E, "read_label", boom)
    assert np.array_equal(class_pixel_counts(tiny_records, 4, cache_dir=cache, name="tiny"), counts)
    monkeypatch.undo()
    # a changed label file changes the key: recounted
    from PIL import Image

    path = tiny_records[0]["sem_seg_file_name"]
    Image.fromarray(np.full((16, 16), 2, np.uint8), mode="L").save(path)
    os.utime(path, ns=(1, 1))
    again = class_pixel_counts(tiny_records, 4, cache_dir=cache, name="tiny")
    assert again[0].tolist() == [0, 0, 256, 0] and np.array_equal(again[1:], counts[1:])
    with pytest.raises(ValueError, match="contains values"):
        class_pixel_counts(tiny_records, 2, cache_dir=cache, name="tiny")


def test_episode_file_round_trip(tiny_records, tmp_path):
    eps = [Episode(1, 3, (0, 5)), Episode(2, 0, (7, 1))]
    path = str(tmp_path / "episodes.json")
    save_episodes(path, eps, tiny_records, seed=4, shots=2)
    back, meta = load_episodes(path)
    assert back == eps and meta["seed"] == 4 and meta["shots"] == 2
    import json

    row = json.load(open(path))["episodes"][0]
    assert row["query_image"] == "im03" and row["support_images"] == ["im00", "im05"]
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not an episode list"):
        load_episodes(str(tmp_path / "bad.json"))
