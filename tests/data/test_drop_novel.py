"""WEAKSHOT.DROP_NOVEL (base-only training): the mapper hides novel classes; check_cfg rules."""
import os

import numpy as np
import pytest

from simformer.config import get_cfg, load_cfg
from simformer.config.checks import ConfigCheckError, check_cfg
from simformer.data.class_split import Split
from simformer.data.mapper import build_mapper
from simformer.utils.io import save_label_png

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
K = 5
NOVEL = [1, 3]


def record(tmp_path):
    """A 16x16 label with two base, two novel classes and a void block; a matching image."""
    from PIL import Image

    lbl = np.zeros((16, 16), np.uint8)
    lbl[:8, 8:] = 1
    lbl[8:, :8] = 3
    lbl[8:, 8:] = 2
    lbl[:4, :4] = 255
    save_label_png(str(tmp_path / "l.png"), lbl)
    Image.fromarray(np.full((16, 16, 3), 100, np.uint8)).save(tmp_path / "i.png")
    return {"file_name": str(tmp_path / "i.png"), "sem_seg_file_name": str(tmp_path / "l.png"),
            "image_id": "i", "index": 0}, lbl


def cfg_for(drop: bool):
    cfg = get_cfg()
    cfg.defrost()
    cfg.INPUT.MIN_SIZE_TRAIN = [16]
    cfg.INPUT.CROP.SIZE = [12, 12]
    cfg.INPUT.SIZE_DIVISIBILITY = 16
    cfg.INPUT.COLOR_AUG_SSD = False
    cfg.WEAKSHOT.DROP_NOVEL = drop
    return cfg


def split():
    return Split(dataset="t", class_names=tuple(f"c{i}" for i in range(K)), base=(0, 2, 4), novel=tuple(NOVEL))


@pytest.mark.parametrize("crop_labels", [False, True])
def test_mapper_hides_novel_classes(tmp_path, crop_labels):
    rec, lbl = record(tmp_path)
    cfg = cfg_for(True)
    cfg.WEAKSHOT.IMAGE_LABELS_FROM_CROP = crop_labels
    keep = build_mapper(cfg_for(False), True, split())
    drop = build_mapper(cfg, True, split())
    for seed in range(4):
        a = keep(rec, np.random.default_rng(seed))
        b = drop(rec, np.random.default_rng(seed))
        full = a["sem_seg_full"].numpy()
        expected = np.where(np.isin(full, NOVEL), 255, full)  # same augmentation, novel -> ignore
        assert np.array_equal(b["sem_seg_full"].numpy(), expected)
        assert np.array_equal(b["sem_seg"].numpy(), expected)
        assert not np.isin(b["sem_seg_full"].numpy(), NOVEL).any()
        labels = b["image_labels"].numpy()
        assert not labels[NOVEL].any()
        if not crop_labels:  # whole-image labels: exactly the base classes of the label map
            assert labels.tolist() == [True, False, True, False, False]
        # without DROP_NOVEL the novel classes stay in the image labels (weak-shot supervision)
        assert a["image_labels"].numpy()[NOVEL].any() or crop_labels
    # the test mapper (evaluation on the full GT) is unaffected
    test = build_mapper(cfg, False, None, num_classes=K)(rec)
    assert np.array_equal(test["sem_seg_full"].numpy(), lbl.astype(np.int64))


def test_shipped_base_only_configs_load():
    for family in ("toyscenes", "coco_stuff_10k"):
        cfg = load_cfg(os.path.join(ROOT, "configs", family, "base_only.yaml"))
        assert cfg.WEAKSHOT.DROP_NOVEL and cfg.WEAKSHOT.PAIR_MODE == "none"


@pytest.mark.parametrize("changes, keys", [
    ({"NOVEL_MASKS": True}, ["WEAKSHOT.DROP_NOVEL", "WEAKSHOT.NOVEL_MASKS", "WEAKSHOT.PSEUDO_LABEL_DIR"]),
    ({"PSEUDO_LABEL_DIR": "/labels"}, ["WEAKSHOT.DROP_NOVEL", "WEAKSHOT.NOVEL_MASKS", "WEAKSHOT.PSEUDO_LABEL_DIR"]),
    ({"PAIR_MODE": "cross", "SIMNET": True, "DISTILL": True}, ["WEAKSHOT.DROP_NOVEL", "WEAKSHOT.PAIR_MODE"]),
    ({"COMPLEMENTARY": True}, ["WEAKSHOT.DROP_NOVEL", "WEAKSHOT.COMPLEMENTARY.ENABLED"]),
    ({"SPLIT": ""}, ["WEAKSHOT.DROP_NOVEL", "WEAKSHOT.SPLIT"]),
])
def test_check_cfg_rejects_bad_combinations(changes, keys):
    cfg = load_cfg(os.path.join(ROOT, "configs", "toyscenes", "base_only.yaml"))
    cfg.defrost()
    ws = cfg.WEAKSHOT
    for key, value in changes.items():
        if key in ("SIMNET", "DISTILL", "COMPLEMENTARY"):
            getattr(ws, key).ENABLED = value
        else:
            setattr(ws, key, value)
    with pytest.raises(ConfigCheckError) as e:
        check_cfg(cfg, where="base_only.yaml")
    for key in keys:
        assert key in str(e.value), (key, str(e.value))
