"""MaskFormer's own ADE20K R50 config trains unchanged, given the data and detectron2's R-50.pkl.

The data is a fake ADEChallengeData2016 (6 images of 64 px, 150 classes) and the weights file a
detectron2-format pickle (detectron2 names) at the place ``detectron2://`` resolves to. Only the
run length and image sizes are overridden, for CPU speed.
"""
import json
import os
import pickle

import numpy as np
import torch
from PIL import Image

from simformer.config import load_cfg

HERE = os.path.dirname(__file__)
MF_ADE = os.path.join(HERE, "fixtures", "maskformer", "ade20k-150", "maskformer_R50_bs16_160k.yaml")
SMALL = ["SOLVER.MAX_ITER", "1", "SOLVER.IMS_PER_BATCH", "2", "INPUT.MIN_SIZE_TRAIN", "[64]",
         "INPUT.CROP.SIZE", "[64, 64]", "INPUT.SIZE_DIVISIBILITY", "64", "INPUT.MIN_SIZE_TEST", "64",
         "DATALOADER.NUM_WORKERS", "0", "SOLVER.CHECKPOINT_PERIOD", "0", "MODEL.DEVICE", "cpu"]


def _fake_ade(root):
    rng = np.random.default_rng(0)
    for split, n in (("training", 4), ("validation", 2)):
        img_dir = os.path.join(root, "ADEChallengeData2016", "images", split)
        lab_dir = os.path.join(root, "ADEChallengeData2016", "annotations_detectron2", split)
        os.makedirs(img_dir)
        os.makedirs(lab_dir)
        for i in range(n):
            stem = f"ADE_{'train' if split == 'training' else 'val'}_{i + 1:08d}"
            Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(os.path.join(img_dir, stem + ".jpg"))
            label = rng.choice([0, 3, 7, 149, 255], size=(64, 80)).astype(np.uint8)
            Image.fromarray(label).save(os.path.join(lab_dir, stem + ".png"))


def _d2_name(tv: str) -> str:
    """torchvision ResNet name -> detectron2's (as in its converted ImageNetPretrained pickles)."""
    if tv.startswith("conv1."):
        return "stem.conv1." + tv[len("conv1."):]
    if tv.startswith("bn1."):
        return "stem.conv1.norm." + tv[len("bn1."):]
    layer, block, rest = tv.split(".", 2)
    stage = f"res{int(layer[len('layer'):]) + 1}.{block}."
    for a, b in (("downsample.0.", "shortcut."), ("downsample.1.", "shortcut.norm."),
                 ("bn1.", "conv1.norm."), ("bn2.", "conv2.norm."), ("bn3.", "conv3.norm.")):
        if rest.startswith(a):
            return stage + b + rest[len(a):]
    return stage + rest


def test_maskformer_ade_config_trains_unchanged(tmp_path, monkeypatch):
    from simformer.engine.trainer import Trainer
    from simformer.modeling.backbone import build_backbone

    _fake_ade(str(tmp_path / "datasets"))
    monkeypatch.setenv("SIMFORMER_DATASETS", str(tmp_path / "datasets"))
    monkeypatch.setenv("SIMFORMER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SIMFORMER_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("SIMFORMER_PROGRESS", "0")
    out = str(tmp_path / "run")
    cfg = load_cfg(MF_ADE, SMALL + ["OUTPUT_DIR", out])

    # detectron2's ImageNet pickle, where detectron2://ImageNetPretrained/torchvision/R-50.pkl resolves
    torch.manual_seed(3)
    reference = build_backbone(load_cfg(None, ["MODEL.BACKBONE.NAME", "resnet50"])).state_dict()
    blobs = {_d2_name(k): v.numpy() for k, v in reference.items() if not k.endswith("num_batches_tracked")}
    assert cfg.MODEL.BACKBONE.WEIGHTS == str(tmp_path / "weights" / "detectron2" / "ImageNetPretrained" /
                                             "torchvision" / "R-50.pkl")
    os.makedirs(os.path.dirname(cfg.MODEL.BACKBONE.WEIGHTS))
    with open(cfg.MODEL.BACKBONE.WEIGHTS, "wb") as f:
        pickle.dump({"model": blobs, "__author__": "torchvision", "matching_heuristics": True}, f)

    trainer = Trainer(cfg)
    # the backbone starts from the pickle (seed 3, not the run's seed 1), not from a full-model checkpoint
    conv1 = trainer.model.backbone.state_dict()["conv1.weight"]
    torch.testing.assert_close(conv1, torch.from_numpy(blobs["stem.conv1.weight"]))
    assert trainer.split is None or len(trainer.split.novel) == 0
    results = trainer.train()
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["miou"] == results["miou"]
