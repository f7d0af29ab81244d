"""`simformer score` on a tmp folder of PNGs: values equal the evaluator's, files and errors."""
import argparse
import csv
import json
import os

import numpy as np
import pytest

from simformer.commands import score
from simformer.data.catalog import class_names
from simformer.data.class_split import make_split, save_split
from simformer.evaluation.sem_seg import SemSegEvaluator
from simformer.utils.io import save_label_png

NAMES = class_names("toyscenes")
K = len(NAMES)
NOVEL_IDS = [2, 5, 12, 20]


def parse(argv):
    parser = argparse.ArgumentParser()
    score.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(0)
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    pairs = {}
    for i in range(4):
        h, w = 12 + i, 17
        gt = rng.integers(0, 10, size=(h, w)).astype(np.uint8)  # classes 10.. never in the GT
        gt[rng.random((h, w)) < 0.2] = 255
        pred = rng.integers(0, 14, size=(h, w)).astype(np.uint8)
        right = rng.random((h, w)) < 0.5
        pred[right] = gt[right]
        pred[rng.random((h, w)) < 0.05] = 255
        stem = f"img_{i:03d}"
        save_label_png(str(gt_dir / f"{stem}.png"), gt)
        save_label_png(str(pred_dir / f"{stem}.png"), pred)
        pairs[stem] = (pred, gt)
    split = str(tmp_path / "split.json")
    save_split(make_split("toyscenes", NAMES, NOVEL_IDS), split)
    return tmp_path, pairs, split


@pytest.mark.parametrize("convention", ["current", "v0.6"])
def test_score_reproduces_evaluator_and_writes_files(folders, capsys, convention):
    tmp, pairs, split = folders
    out = tmp / "out"
    rc = score.run(parse(["--pred", str(tmp / "pred"), "--gt", str(tmp / "gt"), "--dataset", "toyscenes",
                          "--split", split, "--out", str(out), "--convention", convention]))
    assert rc == 0
    novel = np.zeros(K, dtype=bool)
    novel[NOVEL_IDS] = True
    ev = SemSegEvaluator(class_names=NAMES, novel_mask=novel, convention=convention)
    for pred, gt in pairs.values():
        ev.process(pred, gt)
    expected = ev.evaluate()
    with open(out / "metrics.json") as f:
        data = json.load(f)
    assert list(data)[:8] == ["miou", "base_miou", "novel_miou", "hm", "fwiou", "macc", "pacc", "per_class_iou"]
    ours = {"miou", "base_miou", "novel_miou", "hm", "fwiou", "macc", "pacc", "per_class_iou",
            "per_class_acc", "convention", "num_pixels"}
    assert ours <= set(data) and all(k.startswith("sem_seg/") for k in set(data) - ours)  # + detectron2's names
    assert data["sem_seg/mIoU"] == data["miou"] and data["sem_seg/pACC"] == data["pacc"]
    for key in ("miou", "base_miou", "novel_miou", "hm", "fwiou", "macc", "pacc"):
        assert data[key] == pytest.approx(expected[key], rel=1e-12), key
    assert data["per_class_iou"] == pytest.approx(expected["per_class_iou"])
    assert data["convention"] == convention
    # classes 10..13 are predicted but absent from the GT: the conventions differ there
    assert (data["per_class_iou"][NAMES[12]] is None) == (convention == "current")
    with open(out / "per_class_iou.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == K and rows[12]["group"] == "novel" and rows[0]["group"] == "base"
    printed = capsys.readouterr().out
    assert f"HM {expected['hm']:.2f}" in printed and NAMES[K - 1] in printed


def test_score_without_split_reports_all_class_metrics_only(folders, capsys):
    tmp, pairs, _ = folders
    assert score.run(parse(["--pred", str(tmp / "pred"), "--gt", str(tmp / "gt"), "--dataset", "toyscenes_val"])) == 0
    ev = SemSegEvaluator(class_names=NAMES)
    for pred, gt in pairs.values():
        ev.process(pred, gt)
    out = capsys.readouterr().out
    assert f"all {ev.evaluate()['miou']:.2f}" in out and "HM -" in out and "novel -" in out
    assert not os.path.exists(tmp / "out")


def test_missing_prediction_names_the_file(folders):
    tmp, _, split = folders
    os.remove(tmp / "pred" / "img_002.png")
    with pytest.raises(FileNotFoundError, match=r"1 of 4.*img_002\.png.*same name"):
        score.run(parse(["--pred", str(tmp / "pred"), "--gt", str(tmp / "gt"), "--dataset", "toyscenes"]))


def test_extra_predictions_are_reported(folders, capsys):
    tmp, _, _ = folders
    save_label_png(str(tmp / "pred" / "stray.png"), np.zeros((3, 3), np.uint8))
    assert score.run(parse(["--pred", str(tmp / "pred"), "--gt", str(tmp / "gt"), "--dataset", "toyscenes"])) == 0
    err = capsys.readouterr().err
    assert "1 predictions have no ground truth" in err and "stray.png" in err


def test_size_mismatch_names_the_file(folders):
    tmp, _, _ = folders
    save_label_png(str(tmp / "pred" / "img_001.png"), np.zeros((5, 5), np.uint8))
    with pytest.raises(ValueError, match=r"pred/img_001\.png.*\(5, 5\).*\(13, 17\).*gt/img_001\.png"):
        score.run(parse(["--pred", str(tmp / "pred"), "--gt", str(tmp / "gt"), "--dataset", "toyscenes"]))


def test_out_of_range_prediction_names_the_file(folders):
    tmp, _, _ = folders
    bad = np.zeros((15, 17), np.uint8)
    bad[3, 4] = K  # one past the last class id
    save_label_png(str(tmp / "pred" / "img_003.png"), bad)
    with pytest.raises(ValueError, match=rf"img_003\.png.*prediction contains values \[{K}\]"):
        score.run(parse(["--pred", str(tmp / "pred"), "--gt", str(tmp / "gt"), "--dataset", "toyscenes"]))


def test_unknown_dataset_and_missing_folder(folders):
    tmp, _, _ = folders
    with pytest.raises(KeyError):
        score.run(parse(["--pred", str(tmp / "pred"), "--gt", str(tmp / "gt"), "--dataset", "no_such_set"]))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        score.run(parse(["--pred", str(tmp / "nowhere"), "--gt", str(tmp / "gt"), "--dataset", "toyscenes"]))
