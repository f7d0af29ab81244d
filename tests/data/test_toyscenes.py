"""ToyScenes generator (simformer.data.datasets.toyscenes) and `simformer prepare toyscenes`."""
import argparse
import json
import os

import numpy as np
import pytest
from PIL import Image

from simformer.commands import prepare as prepare_cmd
from simformer.data.datasets import toyscenes as ts

SMALL = dict(num_train=40, num_val=8, size=48, seed=0)
QUIET = dict(progress=False, log=lambda s: None)


def _labels(root, split):
    folder = os.path.join(root, "annotations", split)
    return {n: np.array(Image.open(os.path.join(folder, n))) for n in sorted(os.listdir(folder))}


def _bytes(root, sub, split):
    folder = os.path.join(root, sub, split)
    return {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))}


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("toy") / "toyscenes")
    summary = ts.generate_toyscenes(root, workers=0, **SMALL, **QUIET)
    assert summary["generated"] == 48
    return root


def test_class_list_is_fixed():
    assert len(ts.TOYSCENES_CLASSES) == 24
    assert [c.kind for c in ts.TOYSCENES_CLASSES] == ["stuff"] * 10 + ["thing"] * 14
    assert ts.TOYSCENES_CLASSES[0].name == "sky" and ts.TOYSCENES_CLASSES[-1].name == "sign"
    # every class has an appearance, and no two classes share colour family AND texture
    pairs = [ts.APPEARANCE[c.name] for c in ts.TOYSCENES_CLASSES]
    assert len(set(pairs)) == 24
    # ...but features are shared: every colour family or texture is used by >= 2 classes overall
    from collections import Counter

    tex = Counter(t for _, t in pairs)
    col = Counter(c for c, _ in pairs)
    assert all(tex[t] >= 2 or col[c] >= 2 for c, t in pairs)


def test_layout_and_metadata(toy_root):
    for split, n in (("train", 40), ("val", 8)):
        imgs = sorted(os.listdir(os.path.join(toy_root, "images", split)))
        assert imgs == [f"toy_{split}_{i:05d}.jpg" for i in range(n)]
        lbls = sorted(os.listdir(os.path.join(toy_root, "annotations", split)))
        assert lbls == [f"toy_{split}_{i:05d}.png" for i in range(n)]
    with Image.open(os.path.join(toy_root, "images", "train", "toy_train_00000.jpg")) as im:
        assert im.mode == "RGB" and im.size == (48, 48)
    names = json.load(open(os.path.join(toy_root, "classes.json")))
    assert names == [c.name for c in ts.TOYSCENES_CLASSES]
    meta = json.load(open(os.path.join(toy_root, "toyscenes.json")))
    assert {k: meta[k] for k in ("num_train", "num_val", "size", "seed", "version")} == {**SMALL, "version": ts.GENERATOR_VERSION}
    assert not os.path.exists(os.path.join(toy_root, ".toyscenes_in_progress.json"))
    # class statistics recorded in the metadata agree with the label files
    labels = _labels(toy_root, "train")
    counts = {c.name: sum(int((lab == k).any()) for lab in labels.values()) for k, c in enumerate(ts.TOYSCENES_CLASSES)}
    assert meta["class_image_counts"]["train"] == counts


def test_label_values_classes_per_image_and_coverage(toy_root):
    seen = np.zeros(24, dtype=bool)
    for split in ("train", "val"):
        for name, lab in _labels(toy_root, split).items():
            assert lab.dtype == np.uint8 and lab.shape == (48, 48)
            vals = np.unique(lab)
            assert np.all((vals <= 23) | (vals == 255)), name
            present = vals[vals != 255]
            assert 3 <= present.size <= 8, (name, present)
            seen[present] = True
    assert seen.all(), [c.name for c, s in zip(ts.TOYSCENES_CLASSES, seen) if not s]


def test_void_borders_separate_all_regions(toy_root):
    """Every pair of 4-adjacent pixels with different classes is split by void (255)."""
    for name, lab in _labels(toy_root, "train").items():
        assert (lab == 255).any(), name
        for a, b in ((lab[:, 1:], lab[:, :-1]), (lab[1:, :], lab[:-1, :])):
            touching = (a != b) & (a != 255) & (b != 255)
            assert not touching.any(), name
        # borders are thin: void is a small share of the image (clutter objects add some)
        assert (lab == 255).mean() < 0.35, name


def test_deterministic_serial_equals_parallel_and_seed_matters(toy_root, tmp_path):
    par = str(tmp_path / "par")
    ts.generate_toyscenes(par, workers=2, **SMALL, **QUIET)
    for split in ("train", "val"):
        assert _bytes(par, "annotations", split) == _bytes(toy_root, "annotations", split)
        assert _bytes(par, "images", split) == _bytes(toy_root, "images", split)
    other = str(tmp_path / "seed1")
    ts.generate_toyscenes(other, workers=0, **{**SMALL, "seed": 1, "num_train": 8, "num_val": 1}, **QUIET)
    a, b = _bytes(toy_root, "annotations", "train"), _bytes(other, "annotations", "train")
    assert all(a[n] != b[n] for n in b)
    # render_scene itself is a pure function of the rng stream
    i1, l1, _ = ts.render_scene(ts.image_rng(5, "val", 3), 40)
    i2, l2, _ = ts.render_scene(ts.image_rng(5, "val", 3), 40)
    assert np.array_equal(i1, i2) and np.array_equal(l1, l2)


def test_idempotent_resume_and_param_conflict(toy_root, tmp_path):
    files = [os.path.join(toy_root, sub, "train", n) for sub in ("images", "annotations")
             for n in sorted(os.listdir(os.path.join(toy_root, sub, "train")))]
    files.append(os.path.join(toy_root, "toyscenes.json"))
    mtimes = [os.stat(f).st_mtime_ns for f in files]
    summary = ts.generate_toyscenes(toy_root, workers=0, **SMALL, **QUIET)
    assert summary["generated"] == 0 and summary["skipped"] == 48
    assert [os.stat(f).st_mtime_ns for f in files] == mtimes
    with pytest.raises(ValueError, match=r"(?s)different parameters.*seed: 0 \(there\) vs 7.*another --root"):
        ts.generate_toyscenes(toy_root, workers=0, **{**SMALL, "seed": 7}, **QUIET)

    # an interrupted run: some files missing, marker present -> only the missing ones are made, identically
    root = str(tmp_path / "resume")
    ts.generate_toyscenes(root, workers=0, **{**SMALL, "num_train": 6, "num_val": 2}, **QUIET)
    lbl = os.path.join(root, "annotations", "train", "toy_train_00003.png")
    before = open(lbl, "rb").read()
    os.unlink(lbl)
    os.unlink(os.path.join(root, "toyscenes.json"))
    with open(os.path.join(root, ".toyscenes_in_progress.json"), "w") as f:
        json.dump(ts._params(6, 2, 48, 0), f)
    summary = ts.generate_toyscenes(root, workers=0, **{**SMALL, "num_train": 6, "num_val": 2}, **QUIET)
    assert summary["generated"] == 1 and summary["skipped"] == 7
    assert open(lbl, "rb").read() == before
    assert os.path.isfile(os.path.join(root, "toyscenes.json"))
    assert not os.path.exists(os.path.join(root, ".toyscenes_in_progress.json"))


def test_bad_arguments():
    with pytest.raises(ValueError, match="size"):
        ts.generate_toyscenes("/nonexistent/x", size=16, **QUIET)
    with pytest.raises(ValueError, match="num_train"):
        ts.generate_toyscenes("/nonexistent/x", num_train=0, **QUIET)


def test_value_noise_and_textures_in_range():
    rng = np.random.default_rng(0)
    n = ts.value_noise(rng, 64, 4.0)
    assert n.shape == (64, 64) and n.dtype == np.float32
    assert 0 <= n.min() and n.max() <= 1 and n.std() > 0.05
    # smooth: neighbouring values differ far less than independent samples would
    assert np.abs(np.diff(n, axis=1)).mean() < 0.05
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    maps = {}
    for kind in ts.TEXTURE_CONTRAST:
        t = ts.texture(kind, rng, yy, xx, 64)
        assert t.shape == (64, 64) and np.isfinite(t).all() and t.min() >= 0 and t.max() <= 1, kind
        maps[kind] = t
    for kind in ("hstripes", "vstripes", "dots", "checker", "bricks", "speckle", "blobs"):
        assert maps[kind].std() > 0.15, kind  # visibly textured
    assert maps["smooth"].std() < maps["hstripes"].std()
    # horizontal stripes vary along y, vertical ones along x
    h, v = maps["hstripes"], maps["vstripes"]
    assert np.abs(np.diff(h, axis=0)).mean() > 3 * np.abs(np.diff(h, axis=1)).mean()
    assert np.abs(np.diff(v, axis=1)).mean() > 3 * np.abs(np.diff(v, axis=0)).mean()


def test_thing_shapes_are_compact_and_distinct():
    g = np.linspace(-1.6, 1.6, 161, dtype=np.float32)
    v, u = np.meshgrid(g, g, indexing="ij")
    masks = {}
    for c in ts.TOYSCENES_CLASSES:
        if c.kind != "thing":
            continue
        parts = ts.thing_parts(c.name, u, v)
        m = np.zeros_like(u, dtype=bool)
        for part, key in parts:
            assert key == "main" or key in ts.PART_APPEARANCE
            m |= part
        area = m.mean() * 3.2 ** 2
        assert 0.3 < area < 4.5, (c.name, area)
        assert not m[0].any() and not m[-1].any() and not m[:, 0].any() and not m[:, -1].any(), c.name
        masks[c.name] = m
    names = list(masks)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
            assert iou < 0.8, (a, b, iou)


def test_appearance_is_noisy_not_flat(toy_root):
    """Class colours vary between images and within a region (a classifier must generalise)."""
    means = []
    for i in range(40):
        stem = f"toy_train_{i:05d}"
        lab = np.array(Image.open(os.path.join(toy_root, "annotations", "train", stem + ".png")))
        img = np.array(Image.open(os.path.join(toy_root, "images", "train", stem + ".jpg"))).astype(np.float32)
        m = lab == 0  # sky
        if m.sum() > 100:
            means.append(img[m].mean(0))
            assert img[m].std(0).max() > 3.0
    assert len(means) >= 3
    assert np.ptp(np.array(means), axis=0).max() > 10


def test_catalog_and_command(tmp_path, monkeypatch, capsys):
    from simformer.data import catalog

    monkeypatch.setenv("SIMFORMER_DATASETS", str(tmp_path))
    from simformer.commands import add_common_options

    parser = argparse.ArgumentParser()
    prepare_cmd.add_arguments(parser)
    add_common_options(parser)  # as simformer.cli adds them to every verb
    args = parser.parse_args(["toyscenes", "--num-train", "5", "--num-val", "3", "--size", "40", "--seed", "2",
                              "--workers", "0", "--no-progress"])
    assert prepare_cmd.run(args) == 0
    assert "generated 8" in capsys.readouterr().out
    root = tmp_path / "toyscenes"
    recs = catalog.get_dataset_dicts("toyscenes_train")
    assert [r["image_id"] for r in recs] == [f"toy_train_{i:05d}" for i in range(5)]
    assert recs[2]["sem_seg_file_name"] == str(root / "annotations" / "train" / "toy_train_00002.png")
    assert len(catalog.get_dataset_dicts("toyscenes_val")) == 3
    assert catalog.get_dataset("toyscenes_val").classes == json.load(open(root / "classes.json"))
    assert json.load(open(root / "toyscenes.json"))["seed"] == 2


def test_render_scene_class_count_and_info_over_many_scenes():
    """At a tiny size (many occlusions / tiny fragments) every scene still shows 3..8 classes."""
    for i in range(300):
        img, lab, info = ts.render_scene(ts.image_rng(3, "train", i), 32)
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8
        present = np.flatnonzero(np.bincount(lab.ravel(), minlength=256)[:24])
        assert 3 <= present.size <= 8, (i, present)
        assert info["classes"] == present.tolist()
        assert set(np.unique(lab)) <= set(range(24)) | {255}


def test_pixel_noise_inside_regions():
    """Sensor-like noise: adjacent pixels deep inside the (smooth) sky still differ."""
    from scipy.ndimage import binary_erosion

    diffs = []
    for i in range(30):
        img, lab, _ = ts.render_scene(ts.image_rng(0, "train", i), 48)
        inner = binary_erosion(lab == 0, iterations=2)
        pair = inner[:, 1:] & inner[:, :-1]
        if pair.sum() > 50:
            d = np.abs(img[:, 1:].astype(np.float32) - img[:, :-1].astype(np.float32))
            diffs.append(d[pair].mean())
    assert len(diffs) >= 5
    assert np.median(diffs) > 2.0
