"""A non-deep reference row for the ToyScenes tables: a per-pixel Gaussian classifier (quadratic
discriminant analysis) on 9 colour / local-statistics features, fitted on training images with
*all* classes' masks (like FullyOracle), evaluated on toyscenes_val with the suite's evaluator.
``--train`` / ``--test`` / ``--split`` run it on another registered dataset (docs/photos.md: CamVid).

    python experiments/toyscenes/pixel_classifier.py --seed 1 --out runs/pixel_classifier/seed1

Features per pixel: RGB / 255 (3), the 5 x 5 box mean of RGB (3) and the 5 x 5 box standard
deviation of RGB (3). Each class c gets a mean mu_c and a full covariance S_c (+ 1e-4 I) from
``--num-pixels`` pixels sampled per image of ``--num-images`` training images drawn with
``--seed``; a pixel goes to argmax_c log p(x | c) + log prior_c. ``--ssd`` applies the training
mapper's SSD colour augmentation to the fitting images (as the deep models see them).
Writes OUT/metrics.json (the evaluator's metrics).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from PIL import Image
from scipy.ndimage import uniform_filter

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
DEFAULT_SPLIT = os.path.join(ROOT, "splits", "toyscenes", "split1.json")


def pixel_features(image: np.ndarray) -> np.ndarray:
    """image uint8 [H,W,3] -> features float64 [H,W,9]."""
    x = image.astype(np.float64) / 255.0
    mean = uniform_filter(x, size=(5, 5, 1), mode="reflect")
    sq = uniform_filter(x * x, size=(5, 5, 1), mode="reflect")
    std = np.sqrt(np.clip(sq - mean * mean, 0.0, None))
    return np.concatenate([x, mean, std], axis=-1)


class GaussianPixelClassifier:
    """Quadratic discriminant analysis over pixel features (vectorised over pixels)."""

    def fit(self, feats: np.ndarray, labels: np.ndarray, num_classes: int, reg: float = 1e-4):
        """feats [N,D], labels [N] in 0..K-1."""
        d = feats.shape[1]
        self.means = np.zeros((num_classes, d))
        self.prec = np.tile(np.eye(d), (num_classes, 1, 1))
        self.const = np.full(num_classes, -np.inf)  # classes never seen are never predicted
        counts = np.bincount(labels, minlength=num_classes)
        for c in np.flatnonzero(counts > d):  # one Gaussian per class (K iterations, not per pixel)
            x = feats[labels == c]
            cov = np.cov(x, rowvar=False) + reg * np.eye(d)
            self.means[c] = x.mean(0)
            self.prec[c] = np.linalg.inv(cov)
            self.const[c] = -0.5 * np.linalg.slogdet(cov)[1] + np.log(counts[c] / counts.sum())
        return self

    def predict(self, feats: np.ndarray) -> np.ndarray:
        """feats [N,D] -> class ids [N]."""
        diff = feats[:, None, :] - self.means[None]  # [N,K,D]
        maha = np.einsum("nkd,kde,nke->nk", diff, self.prec, diff)
        return np.argmax(self.const[None] - 0.5 * maha, axis=1)


def run(seed: int, out: str, num_images: int, num_pixels: int, ssd: bool, train_name: str = "toyscenes_train",
        test_name: str = "toyscenes_val", split_path: str = DEFAULT_SPLIT) -> dict:
    from simformer.data.catalog import get_dataset, get_dataset_dicts
    from simformer.data.class_split import load_split
    from simformer.evaluation.evaluator import sem_seg_evaluator
    from simformer.evaluation.sem_seg import write_results

    info = get_dataset(train_name)
    k = info.num_classes
    rng = np.random.default_rng(seed)
    train = get_dataset_dicts(train_name)
    picks = rng.choice(len(train), size=min(num_images, len(train)), replace=False)
    feats, labels = [], []
    for i in picks:
        image = np.asarray(Image.open(train[i]["file_name"]).convert("RGB"))
        if ssd:
            from simformer.data.transforms import color_aug_ssd

            image = color_aug_ssd(image, rng)
        f = pixel_features(image).reshape(-1, 9)
        y = np.asarray(Image.open(train[i]["sem_seg_file_name"])).reshape(-1).astype(np.int64)
        keep = np.flatnonzero(y != 255)
        sel = rng.choice(keep, size=min(num_pixels, keep.size), replace=False)
        feats.append(f[sel])
        labels.append(y[sel])
    clf = GaussianPixelClassifier().fit(np.concatenate(feats), np.concatenate(labels), k)
    split = load_split(split_path, info.classes)
    evaluator = sem_seg_evaluator(info.classes, split)
    for rec in get_dataset_dicts(test_name):
        image = np.asarray(Image.open(rec["file_name"]).convert("RGB"))
        gt = np.asarray(Image.open(rec["sem_seg_file_name"]))
        evaluator.process(clf.predict(pixel_features(image).reshape(-1, 9)).reshape(gt.shape), gt,
                          name=rec["file_name"])
    results = evaluator.evaluate()
    write_results(results, out, info.classes, evaluator.novel_mask)
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True)
    p.add_argument("--num-images", type=int, default=400)
    p.add_argument("--num-pixels", type=int, default=2000, help="pixels sampled per fitting image")
    p.add_argument("--ssd", action="store_true", help="SSD colour augmentation on the fitting images")
    p.add_argument("--train", default="toyscenes_train", help="dataset the classifier is fitted on")
    p.add_argument("--test", default="toyscenes_val", help="dataset it is evaluated on")
    p.add_argument("--split", default=DEFAULT_SPLIT, help="class split (base / novel groups of the metrics)")
    args = p.parse_args(argv)
    res = run(args.seed, args.out, args.num_images, args.num_pixels, args.ssd, args.train, args.test, args.split)
    print(json.dumps({k: round(v, 2) for k, v in res.items() if k.endswith("miou") or k == "hm"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
