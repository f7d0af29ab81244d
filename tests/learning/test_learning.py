"""Learning tests on one fixed ToyScenes batch (two 128 px training images, no crop, flip or colour
jitter: every iteration sees exactly this batch), evaluated on the same two images.

* MaskFormer can overfit such a batch with an optimiser set for fitting (frozen backbone, lr 3e-3,
  no clipping, no dropout): tests/engine/test_trainer.py.
* The ToyScenes recipe (configs/toyscenes/, its own solver settings) fits the batch: train-batch
  mIoU >= 90 within 200 / 100 steps (about 75 / 50 s of CPU each), for MaskFormer (FullyOracle) and
  SimFormer. With MaskFormer's decoder dropout 0.1, the recipe until 2026-12-01, neither does
  (FullyOracle 68.8 after 200 steps, SimFormer 46 after 100: docs/convergence.md,
  ``experiments/toyscenes/fixed_batch_probe.py --probe dropout``): trained with dropout, queries that
  start identical are told apart by its noise alone (docs/proposals.md). The recipe now has 0.0.
* Weak-shot transfer: with the recipe, SimFormer's novel-class IoU on the training images (whose
  novel classes never had masks) rises above the proposal-only model's.
"""
import os

import pytest
import torch

from simformer.config import load_cfg
from simformer.data.datasets.toyscenes import generate_toyscenes
from simformer.engine.trainer import Trainer

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "toyscenes")


@pytest.fixture(scope="module")
def batch_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("learning")
    generate_toyscenes(str(root / "toyscenes"), num_train=2, num_val=1, size=128, seed=3, progress=False)
    return str(root)


@pytest.fixture
def batch_env(batch_root, monkeypatch, tmp_path):
    monkeypatch.setenv("SIMFORMER_DATASETS", batch_root)
    monkeypatch.setenv("SIMFORMER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SIMFORMER_PROGRESS", "0")
    return batch_root


def train_on_batch(config: str, out, iters: int, *extra) -> dict:
    """Train ``config`` on the fixed batch for ``iters`` steps; metrics on the same two images."""
    torch.set_num_threads(1)
    cfg = load_cfg(os.path.join(CONFIGS, config), [
        "OUTPUT_DIR", str(out), "DATASETS.TEST", "['toyscenes_train']", "SOLVER.MAX_ITER", str(iters),
        "SOLVER.IMS_PER_BATCH", "2", "INPUT.MIN_SIZE_TRAIN", "[128, 128]", "INPUT.CROP.ENABLED", "False",
        "INPUT.COLOR_AUG_SSD", "False", "INPUT.RANDOM_FLIP", "False", "SOLVER.CHECKPOINT_PERIOD", "0",
        "TEST.AUG.ENABLED", "False", *extra])
    return Trainer(cfg).train()


def test_recipe_maskformer_fits_one_batch(batch_env, tmp_path):
    res = train_on_batch("fully_oracle.yaml", tmp_path / "oracle", 200)
    assert res["miou"] >= 90.0, res


def test_recipe_simformer_fits_one_batch(batch_env, tmp_path):
    res = train_on_batch("simformer.yaml", tmp_path / "simformer", 100)
    assert res["miou"] >= 90.0, res


def test_novel_transfer_beats_proposal_only(batch_env, tmp_path):
    """Novel classes never have masks here: their IoU on the training images measures transfer."""
    weak = train_on_batch("simformer.yaml", tmp_path / "simformer", 60)
    pr = train_on_batch("ablation_pr.yaml", tmp_path / "pr", 60)
    assert weak["novel_miou"] >= pr["novel_miou"] + 10.0, (weak, pr)
