"""A folder of real photographs through the user path of the README: `register` -> `split
--novel-ratio` -> `train` with the ToyScenes CPU config and crop/size overrides only.

The photos are the three ADE20K validation images of tests/fixtures (JPEG, 400-683 px, not
ToyScenes' 128 px squares); their labels are reduced to a dozen classes as a user's street-photo
set would have. This checks that the path runs end to end on photos and evaluates every class;
it says nothing about accuracy (three images).
"""
import glob
import json
import os
import shutil

import numpy as np
from PIL import Image

from simformer.cli import main
from tiny_config import TINY

ROOT = os.path.join(os.path.dirname(__file__), "..")
CONFIG = os.path.join(ROOT, "configs", "toyscenes", "simformer.yaml")
FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "ade20k", "ADEChallengeData2016")
# ADE20K raw ids kept (the twelve present in the fixture photos) and the user's names for them
KEEP = {1: "wall", 2: "building", 3: "sky", 5: "tree", 7: "road", 10: "grass", 12: "sidewalk", 14: "earth",
        18: "plant", 21: "car", 97: "escalator", 103: "van"}


def photo_folder(root: str) -> None:
    """ROOT/images/{train,val}/*.jpg, ROOT/annotations/{train,val}/*.png (0..11, 255 void), classes.json."""
    lut = np.full(256, 255, dtype=np.uint8)
    for new, raw in enumerate(KEEP):
        lut[raw] = new
    photos = sorted(glob.glob(os.path.join(FIXTURE, "images", "validation", "*.jpg")))
    for split in ("train", "val"):
        os.makedirs(os.path.join(root, "images", split))
        os.makedirs(os.path.join(root, "annotations", split))
        for photo in photos:
            stem = os.path.splitext(os.path.basename(photo))[0]
            shutil.copy(photo, os.path.join(root, "images", split, stem + ".jpg"))
            raw = np.array(Image.open(os.path.join(FIXTURE, "annotations", "validation", stem + ".png")))
            Image.fromarray(lut[raw]).save(os.path.join(root, "annotations", split, stem + ".png"))
    with open(os.path.join(root, "classes.json"), "w") as f:
        json.dump(list(KEEP.values()), f)


def test_register_split_train_on_photos(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SIMFORMER_REGISTRY", str(tmp_path / "registry.yaml"))
    monkeypatch.setenv("SIMFORMER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SIMFORMER_PROGRESS", "0")
    data = str(tmp_path / "streets")
    photo_folder(data)
    for split in ("train", "val"):
        assert main(["register", f"streets_{split}", "--root", data, "--split", split, "--family", "streets"]) == 0
    split_file = str(tmp_path / "split1.json")
    assert main(["split", "--dataset", "streets", "--novel-ratio", "0.25", "--seed", "1",
                 "--output", split_file]) == 0
    split = json.load(open(split_file))
    assert len(split["novel"]) == 3 and sorted(split["base"] + split["novel"]) == list(range(12))
    assert split["class_names"] == list(KEEP.values())  # the names of the folder's classes.json

    run = str(tmp_path / "run")
    # crop / size overrides for 400-700 px photos; everything else is the CPU recipe (TINY shrinks
    # the model widths for test time only)
    opts = TINY + ["DATASETS.TRAIN", "['streets_train']", "DATASETS.TEST", "['streets_val']",
                   "WEAKSHOT.SPLIT", split_file, "SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2",
                   "INPUT.MIN_SIZE_TRAIN", "[160, 224]", "INPUT.MAX_SIZE_TRAIN", "400",
                   "INPUT.CROP.SIZE", "[160, 160]", "INPUT.SIZE_DIVISIBILITY", "32",
                   "INPUT.MIN_SIZE_TEST", "192", "INPUT.MAX_SIZE_TEST", "320", "TEST.AUG.ENABLED", "False"]
    assert main(["train", "--config", CONFIG, "--output", run] + opts) == 0
    metrics = json.load(open(os.path.join(run, "metrics.json")))
    assert set(metrics["per_class_iou"]) == set(KEEP.values())
    assert 0.0 <= metrics["novel_miou"] <= 100.0 and 0.0 <= metrics["base_miou"] <= 100.0
    resolved = open(os.path.join(run, "config.yaml")).read()
    assert "streets_train" in resolved and split_file in resolved
