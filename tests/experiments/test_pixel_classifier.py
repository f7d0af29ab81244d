"""experiments/toyscenes/pixel_classifier.py: features, the Gaussian classifier and a run on a user folder."""
import json
import os
import sys

import numpy as np
from PIL import Image
from scipy.stats import multivariate_normal

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "experiments", "toyscenes"))

import pixel_classifier  # noqa: E402


def test_features_equal_explicit_5x5_windows():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(6, 7, 3), dtype=np.uint8)
    feats = pixel_classifier.pixel_features(image)
    x = image / 255.0
    padded = np.pad(x, ((2, 2), (2, 2), (0, 0)), mode="symmetric")  # scipy's "reflect" mode
    for i, j in ((0, 0), (3, 4), (5, 6)):
        window = padded[i:i + 5, j:j + 5].reshape(-1, 3)
        np.testing.assert_allclose(feats[i, j], np.concatenate([x[i, j], window.mean(0), window.std(0)]),
                                   atol=1e-7)


def test_prediction_is_the_argmax_of_the_gaussian_log_posterior():
    rng = np.random.default_rng(1)
    a = rng.normal([0.0, 0.0], [1.0, 0.3], size=(300, 2))
    b = rng.normal([2.0, 1.0], [0.5, 1.0], size=(100, 2))
    feats, labels = np.concatenate([a, b]), np.repeat([0, 1], [300, 100])
    clf = pixel_classifier.GaussianPixelClassifier().fit(feats, labels, num_classes=3, reg=1e-4)
    queries = rng.normal(1.0, 1.5, size=(50, 2))
    scores = np.stack([
        multivariate_normal(x.mean(0), np.cov(x, rowvar=False) + 1e-4 * np.eye(2)).logpdf(queries)
        + np.log(len(x) / 400) for x in (a, b)], axis=1)
    np.testing.assert_array_equal(clf.predict(queries), scores.argmax(1))  # class 2 never seen: never chosen


def test_run_on_a_user_folder(tmp_path):
    # two colours, one per class: the classifier must separate them exactly
    for split in ("train", "val"):
        os.makedirs(tmp_path / "data" / "images" / split)
        os.makedirs(tmp_path / "data" / "annotations" / split)
        for k in range(3):
            label = np.zeros((16, 16), np.uint8)
            label[:, 8 + k:] = 1
            image = np.where(label[..., None] == 1, [200, 30, 30], [30, 30, 200]).astype(np.uint8)
            image = (image + np.random.default_rng(k).integers(0, 5, image.shape)).astype(np.uint8)
            Image.fromarray(image).save(tmp_path / "data" / "images" / split / f"{k}.png")
            Image.fromarray(label).save(tmp_path / "data" / "annotations" / split / f"{k}.png")
    (tmp_path / "data" / "classes.json").write_text(json.dumps(["water", "brick"]))
    (tmp_path / "split.json").write_text(json.dumps({"dataset": "data", "class_names": ["water", "brick"],
                                                     "base": [0], "novel": [1]}))
    data = str(tmp_path / "data")
    pixel_classifier.main(["--seed", "1", "--out", str(tmp_path / "out"), "--num-pixels", "100",
                           "--train", f"{data}:train", "--test", f"{data}:val", "--split", str(tmp_path / "split.json")])
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["base_miou"] > 95 and metrics["novel_miou"] > 95
