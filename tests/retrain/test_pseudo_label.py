"""Mixed labels against a hand computation, and the resumable train -> pseudo-label -> retrain pipeline."""
import json
import os

import numpy as np
import pytest

from simformer.evaluation.sem_seg import confusion_matrix
from simformer.retrain.pseudo_label import label_precision, mixed_label



def test_mixed_label_hand_case():
    # classes: 0 base, 1 base, 2 novel (in image label), 3 novel (not in image label)
    novel = np.array([False, False, True, True])
    image_labels = np.array([True, False, True, False])
    pred = np.array([[2, 2, 3, 0],
                     [1, 2, 3, 2]], np.uint8)
    gt = np.array([[0, 255, 2, 0],
                   [1, 255, 3, 255]], np.uint8)  # full GT: only its base pixels may be used
    expected = np.array([[0, 2, 255, 0],
                         [1, 2, 255, 2]], np.uint8)
    np.testing.assert_array_equal(mixed_label(pred, gt, image_labels, novel), expected)


def test_mixed_label_matches_loop():
    rng = np.random.default_rng(0)
    k = 7
    novel = rng.random(k) < 0.4
    labels = rng.random(k) < 0.5
    pred = rng.integers(0, k, (20, 30)).astype(np.uint8)
    gt = rng.integers(0, k + 1, (20, 30)).astype(np.uint8)
    gt[gt == k] = 255
    out = mixed_label(pred, gt, labels, novel)
    for y in range(20):
        for x in range(30):
            g, p = gt[y, x], pred[y, x]
            if g != 255 and not novel[g]:
                want = g
            elif novel[p] and labels[p]:
                want = p
            else:
                want = 255
            assert out[y, x] == want


def test_label_precision_hand_case():
    # classes 0 base, 1 novel, 2 novel; 255 = void GT / unlabelled
    gt = np.array([[1, 1, 1, 2, 255, 0]], np.uint8)
    lab = np.array([[1, 1, 255, 1, 1, 0]], np.uint8)
    out = label_precision(confusion_matrix(lab, gt, 3), np.array([False, True, True]), ["a", "b", "c"])
    # class 1 labelled on 3 non-void pixels (the void one is left out), 2 of them right; class 2 never labelled
    assert out["per_class_precision"] == {"a": 100.0, "b": pytest.approx(200 / 3), "c": None}
    assert out["novel_precision"] == pytest.approx(200 / 3)
    assert out["novel_coverage"] == pytest.approx(75.0)  # 3 of the 4 novel GT pixels got a class


def test_label_precision_matches_a_pixel_loop():
    rng = np.random.default_rng(1)
    k, novel = 6, np.array([False, True, False, True, True, False])
    gt = rng.choice([0, 1, 2, 3, 4, 5, 255], size=(30, 40)).astype(np.uint8)
    lab = rng.choice([0, 1, 3, 4, 255], size=(30, 40)).astype(np.uint8)
    out = label_precision(confusion_matrix(lab, gt, k), novel, [str(c) for c in range(k)])
    precisions = []
    for c in np.flatnonzero(novel):
        named = [(g, lb) for g, lb in zip(gt.ravel(), lab.ravel()) if g != 255 and lb == c]
        precisions.append(sum(g == c for g, _ in named) / len(named))
        assert out["per_class_precision"][str(c)] == pytest.approx(100 * precisions[-1])
    assert out["novel_precision"] == pytest.approx(100 * np.mean(precisions))
    novel_px = [lb for g, lb in zip(gt.ravel(), lab.ravel()) if g != 255 and novel[g]]
    assert out["novel_coverage"] == pytest.approx(100 * np.mean([lb != 255 for lb in novel_px]))


def _scored_from_files(run: str, label_dir: str, dataset: str) -> dict:
    """label_precision of the label PNGs in ``label_dir`` against the dataset's full GT, with the
    class split the pipeline ``run`` recorded: an independent re-scoring of what was written."""
    from PIL import Image

    from simformer.data.catalog import get_dataset_dicts

    split = json.load(open(os.path.join(run, "stage1_train", "run_info.json")))["split"]
    names = split["class_names"]
    conf = sum(confusion_matrix(np.array(Image.open(os.path.join(label_dir, r["image_id"] + ".png"))),
                                np.array(Image.open(r["sem_seg_file_name"])), len(names))
               for r in get_dataset_dicts(dataset))
    return label_precision(conf, np.isin(np.arange(len(names)), split["novel"]), names)


def test_pipeline_runs_and_resumes(toy_env, tmp_path):
    from tiny_config import TINY

    from simformer.retrain.pipeline import run_pipeline

    config = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "toyscenes", "simformer.yaml")
    opts = TINY + ["SOLVER.MAX_ITER", "2", "MODEL.BACKBONE.WEIGHTS", ""]
    out = str(tmp_path / "pipe")
    final = run_pipeline(config, out, opts)
    for key in ("miou", "base_miou", "novel_miou", "hm", "before_retrain", "pseudo_label_quality"):
        assert key in final
    labels = [f for f in os.listdir(os.path.join(out, "pseudo_labels")) if f.endswith(".png")]
    assert len(labels) == 8  # every training image
    # the report's precision and coverage are those of the written labels against the full GT
    report = json.load(open(os.path.join(out, "pseudo_labels", "pseudo_labels.json")))
    expected = _scored_from_files(out, os.path.join(out, "pseudo_labels"), report["dataset"])
    assert report["novel_coverage"] == pytest.approx(expected["novel_coverage"])
    assert report["per_class_precision"] == pytest.approx(expected["per_class_precision"])
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    retrain_cfg = open(os.path.join(out, "stage2_retrain", "config.yaml")).read()
    assert os.path.join(out, "pseudo_labels") in retrain_cfg
    # a second call skips every finished stage (no file is rewritten)
    mtime = os.path.getmtime(os.path.join(out, "stage2_retrain", "model_final.pth"))
    run_pipeline(config, out, opts)
    assert os.path.getmtime(os.path.join(out, "stage2_retrain", "model_final.pth")) == mtime
    assert json.load(open(os.path.join(out, "metrics.json")))["miou"] == final["miou"]


def test_pipeline_reuses_a_finished_stage1_with_the_same_config(toy_env, tmp_path):
    from tiny_config import TINY

    from simformer.config import load_cfg
    from simformer.engine.trainer import Trainer
    from simformer.retrain.pipeline import adopt_stage1, run_pipeline

    config = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "toyscenes", "simformer.yaml")
    opts = TINY + ["SOLVER.MAX_ITER", "2", "MODEL.BACKBONE.WEIGHTS", ""]
    trained = str(tmp_path / "trained")
    Trainer(load_cfg(config, opts + ["OUTPUT_DIR", trained])).train()
    # a different config is refused (nothing copied)
    other = load_cfg(config, opts + ["SOLVER.MAX_ITER", "3", "OUTPUT_DIR", str(tmp_path / "x" / "stage1")])
    assert not adopt_stage1(trained, str(tmp_path / "x" / "stage1"), other)
    assert not os.path.exists(tmp_path / "x" / "stage1")
    # the same split file named by an absolute path (as a sweep passes it) is the same config
    from simformer.config import resolve_path

    split = load_cfg(config, opts).WEAKSHOT.SPLIT
    absolute = os.path.abspath(resolve_path(split))
    assert split and absolute != split
    same = load_cfg(config, opts + ["WEAKSHOT.SPLIT", absolute, "OUTPUT_DIR", str(tmp_path / "y" / "stage1")])
    assert adopt_stage1(trained, str(tmp_path / "y" / "stage1"), same)
    out = str(tmp_path / "pipe")
    run_pipeline(config, out, opts, stage1_from=trained)
    a = open(os.path.join(trained, "model_final.pth"), "rb").read()
    b = open(os.path.join(out, "stage1_train", "model_final.pth"), "rb").read()
    assert a == b  # copied, not retrained
    assert os.path.isfile(os.path.join(out, "metrics.json"))


def test_pipeline_with_gfsam_refinement(toy_env, tmp_path):
    from tiny_config import TINY

    from simformer.retrain.pipeline import run_pipeline

    config = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "toyscenes", "simformer.yaml")
    opts = TINY + ["SOLVER.MAX_ITER", "2", "MODEL.BACKBONE.WEIGHTS", ""]
    out = str(tmp_path / "pipe")
    final = run_pipeline(config, out, opts, refine="gfsam")
    labels = os.path.join(out, "pseudo_labels")
    report = json.load(open(os.path.join(labels, "pseudo_labels.json")))
    assert report["refine"] == "gfsam" and final["pseudo_label_refine"] == "gfsam"
    assert final["pseudo_label_quality"] == report["quality"]
    assert final["pseudo_label_quality_unrefined"] == report["quality_unrefined"]
    # precision / coverage of the refined labels, and the mixed ones' kept as *_unrefined
    refined = _scored_from_files(out, labels, report["dataset"])
    mixed = _scored_from_files(out, os.path.join(labels, "mixed"), report["dataset"])
    assert report["novel_coverage"] == pytest.approx(refined["novel_coverage"])
    assert report["novel_coverage_unrefined"] == pytest.approx(mixed["novel_coverage"])
    assert report["per_class_precision"] == pytest.approx(refined["per_class_precision"])
    # stage 2 trained on the refined labels (the unrefined ones are kept in mixed/)
    assert len([f for f in os.listdir(os.path.join(labels, "mixed")) if f.endswith(".png")]) == 8
    assert f"PSEUDO_LABEL_DIR: {labels}" in open(os.path.join(out, "stage2_retrain", "config.yaml")).read()
    # the same folder asked for unrefined labels: refused, nothing mixed
    with pytest.raises(RuntimeError, match="made with --refine gfsam, not none"):
        run_pipeline(config, out, opts)
