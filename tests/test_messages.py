"""Error and warning messages say the right thing: dropped records with count and reason, the
stats column requirement, the split-mismatch class counts, the evaluation label-range count."""
import logging
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from simformer.data import catalog
from simformer.data.class_split import SplitError, load_split, make_split, save_split


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append((record.levelname, record.getMessage()))


@pytest.fixture
def simformer_log():
    log = logging.getLogger("simformer")
    h = _Records()
    old = log.level
    log.addHandler(h)
    log.setLevel(logging.DEBUG)
    yield h.lines
    log.removeHandler(h)
    log.setLevel(old)


def test_deleted_images_are_counted_in_a_warning(toy_root, tmp_path, monkeypatch, simformer_log):
    root = tmp_path / "ds"
    shutil.copytree(os.path.join(toy_root, "toyscenes"), root / "toyscenes")
    monkeypatch.setenv("SIMFORMER_DATASETS", str(root))
    images = root / "toyscenes" / "images" / "train"
    names = sorted(os.listdir(images))
    for fn in names[:2]:
        os.unlink(images / fn)
    recs = catalog.get_dataset_dicts("toyscenes_train")
    assert len(recs) == len(names) - 2
    warnings = [m for lvl, m in simformer_log if lvl == "WARNING"]
    stems = ", ".join(os.path.splitext(fn)[0] for fn in names[:2])
    assert warnings == [f"Dataset 'toyscenes_train': dropped 2 record(s) whose image is missing from {images} "
                        f"although the label exists in {root / 'toyscenes' / 'annotations' / 'train'} "
                        f"(deleted images?), e.g. {stems}"]


def test_stats_without_seed_column_message(tmp_path):
    from simformer.stats import compare, load_results

    csv = tmp_path / "r.csv"
    pd.DataFrame({"method": ["A", "A", "B", "B"], "split": ["s"] * 4, "miou": [1.0, 2.0, 3.0, 4.5]}).to_csv(csv, index=False)
    df = load_results(str(csv), metric="miou")  # unpaired tests need no seed
    row = compare(df, metric="miou", baseline="A", test="welch").set_index("method").loc["B"]
    assert row["diff"] == pytest.approx(4.5 / 2 + 3 / 2 - 1.5)
    with pytest.raises(ValueError) as info:
        load_results(str(csv), metric="miou", required=("method", "split", "seed"))
    assert str(info.value) == (f"{csv}: missing column(s) ['seed']; columns present: ['method', 'split', 'miou']. "
                               "A results CSV needs one row per run with at least method, split and the metric "
                               "(and seed for --test paired).")


def test_split_mismatch_names_both_datasets_and_counts(tmp_path):
    split = make_split("toyscenes", [f"c{i}" for i in range(5)], [1, 3])
    path = str(tmp_path / "s.json")
    save_split(split, path)
    with pytest.raises(SplitError) as info:
        load_split(path, expected_names=[f"c{i}" for i in range(7)], expected_dataset="mydata_train")
    assert str(info.value) == (f"Split file {path}: class names do not match dataset 'mydata_train' "
                               "(7 classes; the split was made for 'toyscenes' with 5; first differing ids "
                               "[5, 6]); use a split made for this dataset")


def test_eval_mapper_uses_the_evaluated_datasets_class_count(toy_env, tmp_path):
    """A 3-class evaluation set read with a config whose training set has 24 classes: the label
    range check (and its message) uses 3."""
    from PIL import Image

    from simformer.config import load_cfg
    from simformer.data.mapper import build_mapper

    root = tmp_path / "small"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / "a.png")
    Image.fromarray(np.full((8, 8), 5, np.uint8), mode="L").save(root / "labels" / "a.png")
    cfg = load_cfg(os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "toyscenes", "simformer.yaml"), [])
    mapper = build_mapper(cfg, False, None, num_classes=3)
    assert mapper.num_classes == 3
    with pytest.raises(ValueError, match=r"contains ids \[5\] outside 0\.\.2 \(and != 255\); the dataset has 3 classes"):
        mapper({"file_name": str(root / "images" / "a.png"), "sem_seg_file_name": str(root / "labels" / "a.png"),
                "image_id": "a", "index": 0})
    assert build_mapper(cfg, False, None).num_classes == len(catalog.get_dataset("toyscenes_train").classes)
