import json
import os

import numpy as np
import pytest
from PIL import Image

from simformer.config import get_cfg
from simformer.data.catalog import get_dataset_dicts, register_folder
from simformer.data.mapper import WeakShotDatasetMapper, build_mapper
from simformer.data.class_split import make_split
from simformer.utils.io import save_label_png

K = 6
# Cube corners: each is an extreme point of the set (and of grey), so no blend of other colours
# produced by bilinear resizing can reproduce a palette colour exactly.
PALETTE = np.array([[230, 30, 30], [30, 230, 30], [30, 30, 230], [230, 230, 30], [230, 30, 230], [30, 230, 230]],
                   dtype=np.uint8)
VOID_RGB = np.array([128, 128, 128], np.uint8)
MEAN = (123.675, 116.28, 103.53)


def _make_dataset(root, name, sizes, seed=0, block=4):
    """Random block label maps (some void) and images whose colour encodes the label."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images", "train"), exist_ok=True)
    with open(os.path.join(root, "classes.json"), "w") as f:
        json.dump([f"c{i}" for i in range(K)], f)
    for i, (h, w) in enumerate(sizes):
        grid = rng.integers(0, K + 1, size=(-(-h // block), -(-w // block)))
        grid[grid == K] = 255
        lbl = np.kron(grid, np.ones((block, block), int))[:h, :w].astype(np.uint8)
        img = np.where((lbl == 255)[..., None], VOID_RGB, PALETTE[np.minimum(lbl, K - 1)])
        Image.fromarray(img).save(os.path.join(root, "images", "train", f"im{i:03d}.png"))
        save_label_png(os.path.join(root, "annotations", "train", f"im{i:03d}.png"), lbl)
    register_folder(name, root, "train")
    return get_dataset_dicts(name)


class NumpyMapper:
    """The mapper returns tensors; these tests compare arrays."""

    def __init__(self, mapper):
        self.mapper = mapper

    def __getattr__(self, name):
        return getattr(self.mapper, name)

    def __call__(self, *a, **kw):
        return {k: v.numpy() if hasattr(v, "numpy") else v for k, v in self.mapper(*a, **kw).items()}


def _mapper(**kw):
    args = dict(is_train=True, num_classes=K, min_size_train=[40, 72], min_size_train_sampling="range",
                max_size_train=200, crop_size=(40, 48), color_aug_ssd=False, random_flip=True,
                size_divisibility=32, pixel_mean=MEAN)
    args.update(kw)
    return NumpyMapper(WeakShotDatasetMapper(**args))


@pytest.fixture
def records(tmp_path):
    return _make_dataset(str(tmp_path / "ds"), "mapper_test_ds", [(28, 36), (36, 28), (32, 44)])


def _label_of(path):
    return np.asarray(Image.open(path)).astype(np.int64)


def test_augmentation_keeps_image_and_label_aligned(records):
    m = _mapper()
    checked = 0
    for seed in range(12):
        for rec in records:
            s = m(rec, np.random.default_rng(seed))
            img = s["image"].transpose(1, 2, 0)  # H W 3
            full, valid = s["sem_seg_full"], s["valid"]
            # Pixels whose colour is (within rounding) exactly a palette colour lie inside a block
            # of that class; the label there must be that class.
            d = np.abs(img[:, :, None, :] - PALETTE[None, None].astype(np.float32)).max(-1)  # H W K
            hit = (d <= 1.0) & valid[..., None]
            ys, xs, cs = np.nonzero(hit)
            np.testing.assert_array_equal(full[ys, xs], cs)
            assert len(ys) > 0.3 * (valid & (full != 255)).sum()  # most labelled pixels are checked
            checked += len(ys)
            # Void colour pixels carry the void label.
            grey = (np.abs(img - VOID_RGB.astype(np.float32)).max(-1) <= 1.0) & valid
            assert (full[grey] == 255).all()
    assert checked > 10000


def test_flip_exactly_mirrors(records):
    on, off = _mapper(random_flip=True), _mapper(random_flip=False)
    flipped = same = 0
    for seed in range(16):
        a, b = on(records[2], np.random.default_rng(seed)), off(records[2], np.random.default_rng(seed))
        h, w = np.nonzero(a["valid"])[0].max() + 1, np.nonzero(a["valid"])[1].max() + 1
        np.testing.assert_array_equal(a["valid"], b["valid"])
        ia, ib = a["image"][:, :h, :w], b["image"][:, :h, :w]
        la, lb = a["sem_seg_full"][:h, :w], b["sem_seg_full"][:h, :w]
        if np.array_equal(ia, ib) and np.array_equal(la, lb):
            same += 1
        else:
            np.testing.assert_array_equal(ia, ib[:, :, ::-1])
            np.testing.assert_array_equal(la, lb[:, ::-1])
            np.testing.assert_array_equal(a["sem_seg"][:h, :w], b["sem_seg"][:h, :w][:, ::-1])
            flipped += 1
    assert flipped >= 3 and same >= 3


def test_padding_values(records):
    # Short side 36 on a 28x36 image keeps 36x46 (36*36/28=46.3); crop (40, 48) -> 36x46, pad to 64x64.
    m = _mapper(min_size_train=[36], min_size_train_sampling="choice", color_aug_ssd=True)
    s = m(records[0], np.random.default_rng(0))
    assert s["image"].shape == (3, 64, 64) and s["image"].dtype == np.float32
    v = s["valid"]
    assert v.dtype == np.bool_ and v.sum() == 36 * 46 and v[:36, :46].all()
    for c in range(3):
        assert np.all(s["image"][c][~v] == np.float32(MEAN[c]))
    assert (s["sem_seg_full"][~v] == 255).all() and (s["sem_seg"][~v] == 255).all()
    assert s["sem_seg_full"].dtype == np.int64 and s["sem_seg"].dtype == np.int64


def test_base_target_and_image_labels(records):
    novel = np.zeros(K, bool)
    novel[[1, 4]] = True
    m = _mapper(novel_mask=novel)
    for seed, rec in enumerate(records):
        s = m(rec, np.random.default_rng(seed))
        full, base = s["sem_seg_full"], s["sem_seg"]
        assert not np.isin(base, [1, 4]).any()
        expect = full.copy()
        expect[(full == 1) | (full == 4)] = 255
        np.testing.assert_array_equal(base, expect)
        orig = _label_of(rec["sem_seg_file_name"])
        ids = set(np.unique(orig).tolist()) - {255}
        assert set(np.flatnonzero(s["image_labels"]).tolist()) == ids
        assert s["image_labels"].dtype == np.bool_ and s["image_labels"].shape == (K,)
    # novel_masks (FullyOracle / pseudo labels) and no split keep every id.
    for m2 in (_mapper(novel_mask=novel, novel_masks=True), _mapper(novel_mask=None)):
        s = m2(records[0], np.random.default_rng(0))
        np.testing.assert_array_equal(s["sem_seg"], s["sem_seg_full"])


def test_image_labels_from_crop(tmp_path):
    recs = _make_dataset(str(tmp_path / "big"), "mapper_crop_ds", [(96, 120)], seed=5, block=16)
    whole = set(np.unique(_label_of(recs[0]["sem_seg_file_name"])).tolist()) - {255}
    m = _mapper(image_labels_from_crop=True, min_size_train=[96], min_size_train_sampling="choice",
                crop_size=(16, 16), size_divisibility=0)
    differs = 0
    for seed in range(10):
        s = m(recs[0], np.random.default_rng(seed))
        crop_ids = set(np.unique(s["sem_seg_full"][s["valid"]]).tolist()) - {255}
        assert set(np.flatnonzero(s["image_labels"]).tolist()) == crop_ids
        differs += crop_ids != whole
    assert differs > 0


def test_rng_determinism(records):
    m = _mapper(color_aug_ssd=True)
    a, b = m(records[1], np.random.default_rng(7)), m(records[1], np.random.default_rng(7))
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k])
        else:
            assert a[k] == b[k]
    c = m(records[1], np.random.default_rng(8))
    assert c["image"].shape != a["image"].shape or not np.array_equal(c["image"], a["image"])
    assert m(records[1])["image"].ndim == 3  # rng=None works


def test_test_mode(records):
    m = _mapper(is_train=False, min_size_test=14, max_size_test=1000)
    rec = records[2]  # 32x44 -> short 14 -> 14 x 19.25 -> 14x19
    s = m(rec)
    assert s["image"].shape == (3, 14, 19)
    assert s["valid"].shape == (14, 19) and s["valid"].all()
    orig = _label_of(rec["sem_seg_file_name"])
    np.testing.assert_array_equal(s["sem_seg_full"], orig)
    assert (s["height"], s["width"]) == (32, 44) and "sem_seg" not in s
    assert set(np.flatnonzero(s["image_labels"]).tolist()) == set(np.unique(orig).tolist()) - {255}
    assert s["file_name"] == rec["file_name"] and s["image_id"] == rec["image_id"] and s["index"] == 2


def test_errors_name_the_file(tmp_path, records):
    img_path = records[0]["file_name"]
    bad_lbl = str(tmp_path / "bad_size.png")
    save_label_png(bad_lbl, np.zeros((10, 10), np.uint8))
    rec = dict(records[0], sem_seg_file_name=bad_lbl)
    with pytest.raises(ValueError) as e:
        _mapper()(rec, np.random.default_rng(0))
    assert bad_lbl in str(e.value) and img_path in str(e.value)
    oor = str(tmp_path / "oor.png")
    lbl = np.zeros((28, 36), np.uint8)
    lbl[3, 3] = K  # id K is out of range; 255 is fine
    lbl[4, 4] = 255
    save_label_png(oor, lbl)
    with pytest.raises(ValueError) as e:
        _mapper(is_train=False)(dict(records[0], sem_seg_file_name=oor))
    assert oor in str(e.value) and f"[{K}]" in str(e.value)


def test_build_mapper_from_cfg(records):
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = ["mapper_test_ds"]
    cfg.INPUT.CROP.SIZE = [24, 20]
    cfg.INPUT.MIN_SIZE_TRAIN = [30]
    cfg.INPUT.SIZE_DIVISIBILITY = 0
    cfg.INPUT.COLOR_AUG_SSD = False
    m = NumpyMapper(build_mapper(cfg, True, None))
    assert m.num_classes == K and m.novel_mask is None and m.crop_size == (24, 20)
    s = m(records[0], np.random.default_rng(0))
    assert s["image"].shape == (3, 24, 20)
    split = make_split("mapper_test_ds", [f"c{i}" for i in range(K)], [2, 5])
    m = NumpyMapper(build_mapper(cfg, True, split))
    np.testing.assert_array_equal(m.novel_mask, np.isin(np.arange(K), [2, 5]))
    s = m(records[0], np.random.default_rng(0))
    assert not np.isin(s["sem_seg"], [2, 5]).any()
    cfg.WEAKSHOT.NOVEL_MASKS = True
    assert build_mapper(cfg, True, split).novel_masks
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = K + 1
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        build_mapper(cfg, True, split)
