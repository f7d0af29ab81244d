"""config/checks.py: cross-key rules fail at load time naming every key involved."""
import os

import pytest

from simformer.config import get_cfg, load_cfg, resolve_path
from simformer.config.checks import ConfigCheckError, check_cfg, novel_masks, uses_pairs
from simformer.utils.env import checkout_root

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "toyscenes", "simformer.yaml")


def test_shipped_config_passes():
    cfg = load_cfg(CONFIG)
    check_cfg(cfg)
    assert uses_pairs(cfg)


@pytest.mark.parametrize("opts, keys", [
    (["WEAKSHOT.PAIR_MODE", "none"], ["WEAKSHOT.PAIR_MODE", "WEAKSHOT.SIMNET.ENABLED", "WEAKSHOT.DISTILL.ENABLED"]),
    (["WEAKSHOT.SIMNET.ENABLED", "False"], ["WEAKSHOT.DISTILL.ENABLED", "WEAKSHOT.SIMNET.ENABLED"]),
    (["SOLVER.IMS_PER_BATCH", "6", "SOLVER.GRAD_ACCUM_STEPS", "2"],
     ["SOLVER.IMS_PER_BATCH", "SOLVER.GRAD_ACCUM_STEPS", "WEAKSHOT.PAIR_MODE"]),
    (["WEAKSHOT.PAIR_MODE", "pairs"], ["WEAKSHOT.PAIR_MODE"]),
    (["SOLVER.GRAD_ACCUM_STEPS", "0"], ["SOLVER.GRAD_ACCUM_STEPS"]),
    (["MODEL.MASK_FORMER.DECODER", "cmt", "MODEL.MASK_FORMER.CMT.APPROX_WEIGHT", "0.0"],
     ["MODEL.MASK_FORMER.CMT.LOCATION", "MODEL.MASK_FORMER.CMT.APPROX_WEIGHT"]),
])
def test_invalid_combination_fails_at_load_naming_the_keys(opts, keys):
    with pytest.raises(ConfigCheckError) as e:
        load_cfg(CONFIG, opts)
    msg = str(e.value)
    assert CONFIG in msg
    for key in keys:
        assert key in msg, (key, msg)
    assert isinstance(e.value, ValueError)


def test_batch_rule_counts_pairs_and_accumulation():
    # 6 images, 2 accumulation steps: fine without pairs (3 per step), not with pairs (odd per step)
    ok = load_cfg(CONFIG, ["WEAKSHOT.PAIR_MODE", "none", "WEAKSHOT.SIMNET.ENABLED", "False",
                           "WEAKSHOT.DISTILL.ENABLED", "False", "SOLVER.IMS_PER_BATCH", "6",
                           "SOLVER.GRAD_ACCUM_STEPS", "2"])
    assert not uses_pairs(ok)
    load_cfg(CONFIG, ["SOLVER.IMS_PER_BATCH", "8", "SOLVER.GRAD_ACCUM_STEPS", "2"])  # 2 pairs per step


def test_novel_masks_decision():
    cfg = get_cfg()
    assert not novel_masks(cfg)
    cfg.WEAKSHOT.NOVEL_MASKS = True
    assert novel_masks(cfg)
    cfg.WEAKSHOT.NOVEL_MASKS = False
    cfg.WEAKSHOT.PSEUDO_LABEL_DIR = "/some/labels"
    assert novel_masks(cfg)


def test_one_checkout_root():
    import simformer

    root = checkout_root()
    assert root == os.path.dirname(os.path.dirname(os.path.abspath(simformer.__file__)))
    assert os.path.isdir(os.path.join(root, "configs"))
    # the shipped configs name splits/... relative to the checkout
    assert resolve_path("configs/toyscenes/simformer.yaml") in ("configs/toyscenes/simformer.yaml",
                                                               os.path.join(root, "configs/toyscenes/simformer.yaml"))
    assert os.path.isfile(resolve_path("configs/toyscenes/simformer.yaml"))
