"""Re-scoring a pipeline run's pseudo labels: precision and coverage from the label files."""
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "analysis"))

import rescore_pseudo_labels  # noqa: E402


def test_rescore_adds_precision_from_the_label_files_and_keeps_the_rest(toy_env, tmp_path):
    from simformer.data.catalog import get_dataset_dicts

    names = json.load(open(os.path.join(toy_env, "toyscenes", "classes.json")))
    names = [c["name"] if isinstance(c, dict) else c for c in names]
    novel_ids = [1, 13, 20]
    run = tmp_path / "run"
    (run / "pseudo_labels").mkdir(parents=True)
    (run / "stage1_train").mkdir()
    json.dump({"split": {"class_names": names, "novel": novel_ids}}, open(run / "stage1_train" / "run_info.json", "w"))
    json.dump({"dataset": "toyscenes_train", "quality": {"novel_miou": 1.0}},
              open(run / "pseudo_labels" / "pseudo_labels.json", "w"))
    rng = np.random.default_rng(0)
    labelled = right = 0  # novel class 13 only: labelled non-void pixels and the right ones
    for r in get_dataset_dicts("toyscenes_train"):
        gt = np.array(Image.open(r["sem_seg_file_name"]))
        label = np.where(rng.random(gt.shape) < 0.3, 13, gt).astype(np.uint8)  # a third of the pixels -> 13
        Image.fromarray(label).save(run / "pseudo_labels" / f"{r['image_id']}.png")
        named = (label == 13) & (gt != 255)
        labelled, right = labelled + named.sum(), right + (named & (gt == 13)).sum()
    report = rescore_pseudo_labels.rescore(str(run))
    assert report["per_class_precision"][names[13]] == pytest.approx(100.0 * right / labelled)
    assert report["quality"] == {"novel_miou": 1.0}  # the rest is kept
    assert json.load(open(run / "pseudo_labels" / "pseudo_labels.json")) == report
    assert rescore_pseudo_labels.main([str(run)]) == 0  # already there: left alone
    assert rescore_pseudo_labels.main([str(tmp_path / "missing")]) == 2
