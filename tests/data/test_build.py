"""data/build.py: the whole pipeline from a config (records, pseudo labels, mapper, pairs, sampler)."""
import os

import numpy as np
import pytest

from simformer.config import load_cfg
from simformer.data.build import build_reference_sampler, build_test_loader, build_train_loader, train_records
from simformer.data.catalog import class_names, get_dataset_dicts
from simformer.data.class_split import make_split, resolve_split
from simformer.data.reference import ReferenceSampler
from simformer.utils.io import read_label, save_label_png

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "toyscenes", "simformer.yaml")
SMALL = ["INPUT.MIN_SIZE_TRAIN", "[64, 64]", "INPUT.CROP.SIZE", "[64, 64]", "INPUT.SIZE_DIVISIBILITY", "64",
         "INPUT.MIN_SIZE_TEST", "64", "SOLVER.IMS_PER_BATCH", "4", "DATALOADER.NUM_WORKERS", "0"]
NO_PAIRS = ["WEAKSHOT.PAIR_MODE", "none", "WEAKSHOT.SIMNET.ENABLED", "False", "WEAKSHOT.DISTILL.ENABLED", "False"]


def _split(novel=(3, 11)):
    return make_split("toyscenes", class_names("toyscenes"), list(novel))


def test_pseudo_labels_replace_the_training_labels(toy_env, tmp_path):
    records = get_dataset_dicts("toyscenes_train")
    labels = tmp_path / "pseudo"
    cfg = load_cfg(CONFIG, SMALL + NO_PAIRS + ["WEAKSHOT.PSEUDO_LABEL_DIR", str(labels)])
    with pytest.raises(FileNotFoundError, match="WEAKSHOT.PSEUDO_LABEL_DIR lacks 8 labels"):
        train_records(cfg, "toyscenes_train")
    for r in records:  # every pixel of image i is class 3 (a novel class) -> kept, since novel masks are on
        h, w = read_label(r["sem_seg_file_name"]).shape
        save_label_png(str(labels / f"{r['image_id']}.png"), np.full((h, w), 3, np.uint8))
    assert [r["sem_seg_file_name"] for r in train_records(cfg, "toyscenes_train")] == \
        [str(labels / f"{r['image_id']}.png") for r in records]
    batch = next(iter(build_train_loader(cfg, _split())))
    assert len(batch) == 4
    for s in batch:
        values = set(np.unique(s["sem_seg"].numpy()).tolist())
        assert values <= {3, 255} and 3 in values


def test_novel_classes_lose_their_masks_without_pseudo_labels(toy_env):
    cfg = load_cfg(CONFIG, SMALL + NO_PAIRS)
    split = _split(novel=range(0, 24, 2))
    for s in next(iter(build_train_loader(cfg, split))):
        sem = s["sem_seg"].numpy()
        full = s["sem_seg_full"].numpy()
        assert not np.isin(sem, list(split.novel)).any()
        keep = ~np.isin(full, list(split.novel)) & (full != 255)
        np.testing.assert_array_equal(sem[keep], full[keep])


def test_pairs_build_the_reference_sampler(toy_env, tmp_path):
    cfg = load_cfg(CONFIG, SMALL)
    split = resolve_split(cfg, "toyscenes_train")
    sampler = build_reference_sampler(cfg, "toyscenes_train", split, cache_dir=str(tmp_path / "c"))
    assert isinstance(sampler, ReferenceSampler) and sampler.mode == "cross"
    assert any(f.startswith("pairs_") for f in os.listdir(tmp_path / "c"))  # pair statistics cached
    batch = next(iter(build_train_loader(cfg, split, reference_sampler=sampler)))
    assert [s["pair_role"] for s in batch] == ["anchor", "reference"] * 2
    assert build_reference_sampler(load_cfg(CONFIG, SMALL + NO_PAIRS), "toyscenes_train", split) is None


def test_test_loader_shards_the_dataset(toy_env):
    cfg = load_cfg(CONFIG, SMALL)
    records = get_dataset_dicts("toyscenes_val")
    seen = []
    for rank in range(3):
        for batch in build_test_loader(cfg, "toyscenes_val", rank=rank, world_size=3):
            (s,) = batch
            seen.append(s["index"])
            np.testing.assert_array_equal(s["sem_seg_full"].numpy(), read_label(records[s["index"]]["sem_seg_file_name"]))
    assert sorted(seen) == list(range(len(records)))
