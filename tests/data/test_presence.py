"""Pixel counts / presence matrix: values vs a brute-force pixel loop, caching, errors."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from simformer.data import catalog, presence
from simformer.data.presence import (class_pixel_counts, pixel_counts_from_labels, presence_from_labels,
                                     presence_matrix)

K = 5


def brute_counts(labels, k):
    """Independent reference: a plain Python loop over every pixel."""
    out = [[0] * k for _ in labels]
    for i, lab in enumerate(labels):
        for row in lab.tolist():
            for v in row:
                if v != 255:
                    out[i][v] += 1
    return np.array(out, dtype=np.int64)


def make_labels(rng, n=6):
    labels = []
    for i in range(n):
        h, w = rng.integers(3, 9, size=2)
        lab = rng.integers(0, K, size=(h, w)).astype(np.uint8)
        lab[rng.random((h, w)) < 0.3] = 255
        labels.append(lab)
    labels[2][:] = 255  # an all-void image: a zero row
    labels[3][:] = 4    # a single-class image
    return labels


def write_dataset(root, labels, name):
    os.makedirs(os.path.join(root, "images", "train"), exist_ok=True)
    os.makedirs(os.path.join(root, "annotations", "train"), exist_ok=True)
    with open(os.path.join(root, "classes.json"), "w") as f:
        json.dump([f"c{i}" for i in range(K)], f)
    # names out of numeric order so that the record order (sorted by name) matters
    stems = [f"img_{(7 * i) % len(labels):03d}" for i in range(len(labels))]
    for stem, lab in zip(stems, labels):
        Image.fromarray(np.zeros(lab.shape + (3,), np.uint8)).save(os.path.join(root, "images", "train", stem + ".png"))
        Image.fromarray(lab, mode="L").save(os.path.join(root, "annotations", "train", stem + ".png"))
    catalog.register_folder(name, root, "train", family=name)
    return stems


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMFORMER_DATASETS", str(tmp_path / "droot"))
    monkeypatch.delenv("SIMFORMER_CACHE", raising=False)
    rng = np.random.default_rng(0)
    labels = make_labels(rng)
    root = str(tmp_path / "droot" / "tiny")
    name = f"tiny_presence_{tmp_path.name}"
    stems = write_dataset(root, labels, name)
    by_stem = dict(zip(stems, labels))
    ordered = [by_stem[r["image_id"]] for r in catalog.get_dataset_dicts(name)]
    yield name, root, ordered
    catalog._REGISTRY.pop(name, None)


def test_pure_functions_match_brute_force():
    labels = make_labels(np.random.default_rng(1), n=5)
    ref = brute_counts(labels, K)
    np.testing.assert_array_equal(pixel_counts_from_labels(labels, K), ref)
    np.testing.assert_array_equal(presence_from_labels(labels, K), ref > 0)
    assert ref[2].sum() == 0 and ref[3].tolist() == [0, 0, 0, 0, labels[3].size]


def test_pure_function_bad_value_names_source():
    lab = np.array([[0, 1], [7, 255]], dtype=np.uint8)
    with pytest.raises(ValueError, match=r"my_label\.png.*\[7\]"):
        pixel_counts_from_labels([lab], K, names=["my_label.png"])


def test_counts_match_brute_force_and_default_cache_location(dataset, tmp_path):
    name, root, labels = dataset
    counts = class_pixel_counts(name, workers=1)
    assert counts.dtype == np.int64 and counts.shape == (len(labels), K)
    np.testing.assert_array_equal(counts, brute_counts(labels, K))
    np.testing.assert_array_equal(presence_matrix(name, workers=1), counts > 0)
    cache_files = os.listdir(tmp_path / "droot" / ".simformer_cache" / "pixel_counts")
    assert len(cache_files) == 1 and cache_files[0].endswith(".npz")


def test_multiprocess_equals_serial(dataset, tmp_path):
    name, _, labels = dataset
    counts = class_pixel_counts(name, workers=2, cache_dir=str(tmp_path / "c2"))
    np.testing.assert_array_equal(counts, brute_counts(labels, K))


def test_multiprocess_inside_stop_on_signals_finishes(dataset, tmp_path):
    """Training counts pixels inside stop_on_signals: the pool must end without having to kill a
    worker that inherited the flag-only SIGTERM handler (it used to hang about one run in four
    with 6 workers). A SIGALRM turns a hang into a failure."""
    import multiprocessing
    import signal

    from simformer.utils.run_dir import stop_on_signals

    name, _, labels = dataset

    class Hung(RuntimeError):  # not TimeoutError: multiprocessing's waitpid swallows OSErrors
        pass

    def hung(signum, frame):
        raise Hung("class_pixel_counts did not return within 20 s")

    old = signal.signal(signal.SIGALRM, hung)
    try:
        for attempt in range(8):
            signal.alarm(20)
            with stop_on_signals():
                counts = class_pixel_counts(name, workers=6, cache_dir=str(tmp_path / f"c{attempt}"))
            signal.alarm(0)
            np.testing.assert_array_equal(counts, brute_counts(labels, K))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        for child in multiprocessing.active_children():
            child.kill()


def test_cache_reused_then_invalidated(dataset, tmp_path, monkeypatch):
    name, root, labels = dataset
    cache = str(tmp_path / "cache")
    calls = []
    real = presence._read_label

    def spy(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(presence, "_read_label", spy)
    first = class_pixel_counts(name, cache_dir=cache, workers=1)
    assert len(calls) == len(labels)
    calls.clear()
    second = class_pixel_counts(name, cache_dir=cache, workers=1)
    assert calls == []  # served from the cache, no label read
    np.testing.assert_array_equal(first, second)

    # change one label file: new key -> recomputed, and the new values are right
    rec = catalog.get_dataset_dicts(name)[1]
    new = np.full_like(labels[1], 2)
    new[0, 0] = 0
    Image.fromarray(new, mode="L").save(rec["sem_seg_file_name"])
    st = os.stat(rec["sem_seg_file_name"])
    os.utime(rec["sem_seg_file_name"], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = class_pixel_counts(name, cache_dir=cache, workers=1)
    assert len(calls) == len(labels)
    labels = list(labels)
    labels[1] = new
    np.testing.assert_array_equal(third, brute_counts(labels, K))
    assert third[1].tolist() == [1, 0, new.size - 1, 0, 0]


def test_env_cache_dir(dataset, tmp_path, monkeypatch):
    name, _, labels = dataset
    monkeypatch.setenv("SIMFORMER_CACHE", str(tmp_path / "envcache"))
    class_pixel_counts(name, workers=1)
    assert len(os.listdir(tmp_path / "envcache" / "pixel_counts")) == 1


def test_out_of_range_label_names_file(dataset, tmp_path):
    name, root, labels = dataset
    rec = catalog.get_dataset_dicts(name)[0]
    bad = labels[0].copy()
    bad[0, 0] = K  # first invalid id
    Image.fromarray(bad, mode="L").save(rec["sem_seg_file_name"])
    with pytest.raises(ValueError) as e:
        class_pixel_counts(name, cache_dir=str(tmp_path / "c3"), workers=1)
    assert rec["sem_seg_file_name"] in str(e.value) and f"[{K}]" in str(e.value)
    # nothing was cached for the broken dataset
    assert not os.path.exists(tmp_path / "c3" / "pixel_counts") or not os.listdir(tmp_path / "c3" / "pixel_counts")


def test_root_colon_split_names_a_folder_directly(tmp_path):
    """A config may name a dataset folder as ROOT:SPLIT without registering it."""
    import json

    from PIL import Image

    from simformer.data.catalog import get_dataset, get_dataset_dicts

    root = tmp_path / "mydata"
    (root / "images" / "val").mkdir(parents=True)
    (root / "annotations" / "val").mkdir(parents=True)
    (root / "classes.json").write_text(json.dumps(["a", "b"]))
    Image.new("RGB", (4, 3)).save(root / "images" / "val" / "x.jpg")
    Image.new("L", (4, 3)).save(root / "annotations" / "val" / "x.png")
    name = f"{root}:val"
    info = get_dataset(name)
    assert info.classes == ["a", "b"] and info.family == "mydata" and not info.is_train
    assert [r["image_id"] for r in get_dataset_dicts(name)] == ["x"]
