"""ADE20K / COCO-Stuff-10K conversion (simformer.data.datasets.prepare) and `simformer prepare`."""
import argparse
import os
import shutil

import h5py
import numpy as np
import pytest
from PIL import Image

from simformer.commands import prepare as prepare_cmd
from simformer.data.datasets import prepare

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "ade20k", "ADEChallengeData2016")
STEMS = ["ADE_val_00000001", "ADE_val_00000002", "ADE_val_00000003"]


def _leftovers(folder):
    return [n for n in os.listdir(folder) if n.startswith(".tmp-")]


@pytest.fixture
def ade_root(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    shutil.copytree(FIXTURE, root)
    return str(root)


def _expected_ade(raw_path):
    raw = np.array(Image.open(raw_path)).astype(np.int64)
    return np.where(raw == 0, 255, raw - 1)


# ------------------------------------------------------------------------------------------ ADE20K
def test_ade20k_train_ids_hand_computed():
    raw = np.array([[0, 1, 2], [150, 75, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(prepare.ade20k_train_ids(raw), [[255, 0, 1], [149, 74, 255]])
    with pytest.raises(ValueError, match=r"151.*x\.png"):
        prepare.ade20k_train_ids(np.array([[151]], dtype=np.uint8), "x.png")


def test_ade20k_fixture_conversion_values(ade_root):
    logs = []
    summary = prepare.prepare_ade20k(ade_root, progress=False, log=logs.append)
    assert summary == {"validation": {"converted": 3, "skipped": 0, "total": 3}}
    assert any("training" in line and "not found" in line for line in logs)
    assert "validation: 3 converted / 0 skipped / 3 total" in logs[-1]
    saw_void = False
    for stem in STEMS:
        out = os.path.join(ade_root, "annotations_detectron2", "validation", stem + ".png")
        with Image.open(out) as im:
            assert im.mode == "L"
            got = np.array(im)
        assert got.dtype == np.uint8
        exp = _expected_ade(os.path.join(ade_root, "annotations", "validation", stem + ".png"))
        np.testing.assert_array_equal(got, exp)
        saw_void |= bool((exp == 255).any())
        # the image was left in place (MaskFormer layout) and matches the label size
        with Image.open(os.path.join(ade_root, "images", "validation", stem + ".jpg")) as im:
            assert im.size == got.shape[::-1]
    assert saw_void, "fixture should contain raw 0 (other) pixels"
    assert _leftovers(os.path.join(ade_root, "annotations_detectron2", "validation")) == []


def test_ade20k_idempotent_and_resume(ade_root):
    prepare.prepare_ade20k(ade_root, progress=False, log=lambda s: None)
    out_dir = os.path.join(ade_root, "annotations_detectron2", "validation")
    mtimes = {n: os.stat(os.path.join(out_dir, n)).st_mtime_ns for n in os.listdir(out_dir)}
    logs = []
    summary = prepare.prepare_ade20k(ade_root, progress=False, log=logs.append)
    assert summary["validation"] == {"converted": 0, "skipped": 3, "total": 3}
    assert "0 converted / 3 skipped / 3 total" in logs[-1]
    assert {n: os.stat(os.path.join(out_dir, n)).st_mtime_ns for n in os.listdir(out_dir)} == mtimes
    # a missing output (interrupted run) is redone, and only that one
    os.unlink(os.path.join(out_dir, STEMS[1] + ".png"))
    summary = prepare.prepare_ade20k(ade_root, progress=False, log=lambda s: None)
    assert summary["validation"] == {"converted": 1, "skipped": 2, "total": 3}
    np.testing.assert_array_equal(
        np.array(Image.open(os.path.join(out_dir, STEMS[1] + ".png"))),
        _expected_ade(os.path.join(ade_root, "annotations", "validation", STEMS[1] + ".png")))


@pytest.mark.parametrize("workers", [None, 2])
def test_ade20k_bad_value_names_file_and_writes_nothing(ade_root, workers):
    bad = os.path.join(ade_root, "annotations", "validation", STEMS[1] + ".png")
    raw = np.array(Image.open(bad))
    raw[3, 4] = 151
    Image.fromarray(raw, mode="L").save(bad)
    with pytest.raises(ValueError, match=r"(?s)151.*" + STEMS[1]):
        prepare.prepare_ade20k(ade_root, workers=workers, progress=False, log=lambda s: None)
    out_dir = os.path.join(ade_root, "annotations_detectron2", "validation")
    assert not os.path.exists(os.path.join(out_dir, STEMS[1] + ".png"))
    assert _leftovers(out_dir) == []


def test_ade20k_shape_mismatch_names_file(ade_root):
    bad = os.path.join(ade_root, "annotations", "validation", STEMS[2] + ".png")
    raw = np.array(Image.open(bad))
    Image.fromarray(np.ascontiguousarray(raw.T), mode="L").save(bad)  # transposed: W x H
    with pytest.raises(ValueError, match=STEMS[2] + r"\.png has shape"):
        prepare.prepare_ade20k(ade_root, progress=False, log=lambda s: None)
    out_dir = os.path.join(ade_root, "annotations_detectron2", "validation")
    assert not os.path.exists(os.path.join(out_dir, STEMS[2] + ".png"))
    assert _leftovers(out_dir) == []


def test_ade20k_missing_folders(tmp_path, ade_root):
    with pytest.raises(FileNotFoundError, match="annotations"):
        prepare.prepare_ade20k(str(tmp_path / "nowhere"), progress=False, log=lambda s: None)
    empty = tmp_path / "empty"
    (empty / "annotations").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="No split folder"):
        prepare.prepare_ade20k(str(empty), progress=False, log=lambda s: None)
    os.unlink(os.path.join(ade_root, "images", "validation", STEMS[0] + ".jpg"))
    with pytest.raises(FileNotFoundError, match=STEMS[0]):
        prepare.prepare_ade20k(ade_root, progress=False, log=lambda s: None)


# ---------------------------------------------------------------------------------- COCO-Stuff-10K
def _write_mat73(path, S_hw, dtype=np.uint16):
    """MATLAB v7.3 style: HDF5 with a 512-byte user block, matrices stored column-major (W, H)."""
    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset("S", data=np.ascontiguousarray(S_hw.T).astype(dtype))


def _coco_root(tmp_path, dtype=np.uint16):
    root = tmp_path / "coco_stuff_10k"
    for sub in ("images", "annotations", "imageLists"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = ["COCO_train2014_000000000001", "COCO_train2014_000000000002", "COCO_train2014_000000000003"]
    S = {}
    for k, n in enumerate(names):
        h, w = 5 + k, 7 + 2 * k  # non-square: a missing transpose cannot go unnoticed
        s = rng.integers(1, 173, size=(h, w))
        s[0, 0], s[0, -1], s[-1, 0] = 1, 2, 172  # unlabeled, first and last class
        S[n] = s
        _write_mat73(str(root / "annotations" / (n + ".mat")), s, dtype)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "images" / (n + ".jpg"))
    (root / "imageLists" / "train.txt").write_text(f"{names[0]}\n{names[1]}.jpg\n\n")
    (root / "imageLists" / "test.txt").write_text(f"{names[2]}\n")
    return str(root), S


@pytest.mark.parametrize("dtype", [np.uint16, np.float64])
def test_coco_conversion_exact_values_and_orientation(tmp_path, dtype):
    root, S = _coco_root(tmp_path, dtype)
    summary = prepare.prepare_coco_stuff_10k(root, progress=False, log=lambda s: None)
    assert summary == {"train": {"converted": 2, "skipped": 0, "total": 2},
                       "test": {"converted": 1, "skipped": 0, "total": 1}}
    for split, names in (("train", list(S)[:2]), ("test", list(S)[2:])):
        for n in names:
            got = np.array(Image.open(os.path.join(root, "annotations_detectron2", split, n + ".png")))
            s = S[n]
            assert got.shape == s.shape and got.dtype == np.uint8
            exp = np.where(s == 1, 255, s - 2)
            np.testing.assert_array_equal(got, exp)
            assert got[0, 0] == 255 and got[0, -1] == 0 and got[-1, 0] == 170
            img = os.path.join(root, "images_detectron2", split, n + ".jpg")
            assert os.path.samefile(img, os.path.join(root, "images", n + ".jpg"))  # hard link
    # second run: everything skipped, nothing rewritten
    lbl = os.path.join(root, "annotations_detectron2", "train", list(S)[0] + ".png")
    mtime = os.stat(lbl).st_mtime_ns
    summary = prepare.prepare_coco_stuff_10k(root, progress=False, log=lambda s: None)
    assert summary["train"] == {"converted": 0, "skipped": 2, "total": 2}
    assert summary["test"] == {"converted": 0, "skipped": 1, "total": 1}
    assert os.stat(lbl).st_mtime_ns == mtime


def test_coco_train_ids_hand_computed():
    S = np.array([[1, 2, 3], [172, 100, 1]])
    np.testing.assert_array_equal(prepare.coco_stuff_train_ids(S), [[255, 0, 1], [170, 98, 255]])
    for bad in (0, 173):
        with pytest.raises(ValueError, match=rf"(?i)unexpected label value.*\b{bad}\b.*a\.mat"):
            prepare.coco_stuff_train_ids(np.array([[2, bad]]), "a.mat")
    with pytest.raises(ValueError, match="non-integer"):
        prepare.coco_stuff_train_ids(np.array([[2.5]]), "a.mat")


@pytest.mark.parametrize("bad_value", [0, 173])
def test_coco_bad_value_names_file(tmp_path, bad_value):
    root, S = _coco_root(tmp_path)
    n = list(S)[2]
    s = S[n].copy()
    s[1, 1] = bad_value
    _write_mat73(os.path.join(root, "annotations", n + ".mat"), s)
    with pytest.raises(ValueError, match=rf"(?i)unexpected label value.*{bad_value}.*{n}\.mat"):
        prepare.prepare_coco_stuff_10k(root, progress=False, log=lambda s: None)
    out = os.path.join(root, "annotations_detectron2", "test")
    assert not os.path.exists(os.path.join(out, n + ".png")) and _leftovers(out) == []


def test_coco_shape_mismatch_names_file(tmp_path):
    root, S = _coco_root(tmp_path)
    n = list(S)[0]
    # stored without the MATLAB transpose -> after reading it is (W, H), not the image's (H, W)
    with h5py.File(os.path.join(root, "annotations", n + ".mat"), "w") as f:
        f.create_dataset("S", data=S[n].astype(np.uint16))
    with pytest.raises(ValueError, match=rf"{n}\.mat has shape 7x5.*is 5x7"):
        prepare.prepare_coco_stuff_10k(root, progress=False, log=lambda s: None)
    out = os.path.join(root, "annotations_detectron2", "train")
    assert not os.path.exists(os.path.join(out, n + ".png")) and _leftovers(out) == []


def test_coco_mat_v5_fallback_and_copy_fallback(tmp_path, monkeypatch):
    from scipy.io import savemat

    root, S = _coco_root(tmp_path)
    n = list(S)[2]
    savemat(os.path.join(root, "annotations", n + ".mat"), {"S": S[n].astype(np.uint16)})  # v5: not transposed
    np.testing.assert_array_equal(prepare.read_coco_stuff_mat(os.path.join(root, "annotations", n + ".mat")), S[n])

    def no_link(src, dst):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    prepare.prepare_coco_stuff_10k(root, progress=False, log=lambda s: None)
    dst = os.path.join(root, "images_detectron2", "test", n + ".jpg")
    src = os.path.join(root, "images", n + ".jpg")
    assert not os.path.samefile(dst, src)
    assert open(dst, "rb").read() == open(src, "rb").read()
    np.testing.assert_array_equal(np.array(Image.open(os.path.join(root, "annotations_detectron2", "test", n + ".png"))),
                                  np.where(S[n] == 1, 255, S[n] - 2))


def test_coco_missing_inputs(tmp_path):
    root, S = _coco_root(tmp_path)
    os.unlink(os.path.join(root, "imageLists", "test.txt"))
    logs = []
    summary = prepare.prepare_coco_stuff_10k(root, progress=False, log=logs.append)
    assert list(summary) == ["train"] and any("test" in line and "not found" in line for line in logs)
    os.unlink(os.path.join(root, "imageLists", "train.txt"))
    with pytest.raises(FileNotFoundError, match="No image list"):
        prepare.prepare_coco_stuff_10k(root, progress=False, log=lambda s: None)
    (tmp_path / "coco_stuff_10k" / "imageLists" / "train.txt").write_text("COCO_missing\n")
    with pytest.raises(FileNotFoundError, match="COCO_missing.mat"):
        prepare.prepare_coco_stuff_10k(root, progress=False, log=lambda s: None)
    shutil.rmtree(os.path.join(root, "annotations"))
    with pytest.raises(FileNotFoundError, match="annotations"):
        prepare.prepare_coco_stuff_10k(root, progress=False, log=lambda s: None)


def test_read_image_list_strips_extensions(tmp_path):
    p = tmp_path / "l.txt"
    p.write_text("a\nb.jpg\n  c.JPG \n\na\nd.e_f\n")
    assert prepare.read_image_list(str(p)) == ["a", "b", "c", "d.e_f"]


# ----------------------------------------------------------------------------------------- command
def _parse(argv):
    from simformer.commands import add_common_options

    parser = argparse.ArgumentParser()
    prepare_cmd.add_arguments(parser)
    add_common_options(parser)  # as simformer.cli adds them to every verb
    return parser.parse_args(argv)


def test_command_ade20k_and_default_root(ade_root, tmp_path, monkeypatch, capsys):
    assert prepare_cmd.run(_parse(["ade20k", "--root", ade_root, "--no-progress"])) == 0
    assert "3 converted" in capsys.readouterr().out
    np.testing.assert_array_equal(
        np.array(Image.open(os.path.join(ade_root, "annotations_detectron2", "validation", STEMS[0] + ".png"))),
        _expected_ade(os.path.join(ade_root, "annotations", "validation", STEMS[0] + ".png")))
    # without --root: the catalog's place under the datasets root
    monkeypatch.setenv("SIMFORMER_DATASETS", os.path.dirname(ade_root))
    assert prepare_cmd.run(_parse(["ade20k", "--no-progress"])) == 0
    assert "0 converted / 3 skipped" in capsys.readouterr().out
    assert prepare_cmd.default_root("coco-stuff-10k") == os.path.join(os.path.dirname(ade_root), "coco", "coco_stuff_10k")
    with pytest.raises(ValueError, match="--seed"):
        prepare_cmd.run(_parse(["ade20k", "--root", ade_root, "--seed", "3"]))
    with pytest.raises(SystemExit):
        _parse(["cityscapes"])
