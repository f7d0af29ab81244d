"""detectron2 / MaskFormer / SimFormer-release configs: the real files load, keys map as documented."""
import os
import re

import numpy as np
import pytest

from simformer.config import ConfigError, load_cfg, load_cfg_report
from simformer.config.d2compat import TRANSLATORS
from simformer.config.d2rules import IGNORED_PREFIXES, RULES
from simformer.config.safe_yaml import UnsafeExpression, safe_eval

HERE = os.path.dirname(__file__)
FIX = os.path.join(HERE, "fixtures")
MF_ADE = os.path.join(FIX, "maskformer", "ade20k-150", "maskformer_R50_bs16_160k.yaml")
MF_COCO = os.path.join(FIX, "maskformer", "coco-stuff-10k-171", "maskformer_R50_bs32_60k.yaml")
REL_ADE = os.path.join(FIX, "release", "ade20k-150")
REL_COCO = os.path.join(FIX, "release", "coco_sutff_10k")


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMFORMER_WEIGHTS", str(tmp_path / "w"))
    return str(tmp_path / "w")


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


# --- the eval tag ---------------------------------------------------------------------------------
@pytest.mark.parametrize("expr", [
    "[int(x * 0.1 * 512) for x in range(5, 21)]",
    "[int(x * 0.1 * 640) for x in range(5, 16)]",
    "[int(x * 0.1 * 1024) for x in range(5, 21)]",
    "[x * 32 for x in range(8, 25, 2) if x % 4 == 0]",
    "(512 + 128) // 2 - 3 ** 2",
    "[round(x / 3, 2) for x in range(3)]",
])
def test_safe_eval_matches_python(expr):
    assert safe_eval(expr) == eval(expr)  # the test's own, trusted literal


@pytest.mark.parametrize("expr", [
    "__import__('os').system('true')", "open('/etc/passwd').read()", "().__class__.__bases__",
    "[c for c in ().__class__.__subclasses__()]", "(lambda: 1)()", "'a' * 10", "[0] * 10**9",
    "[x for x in range(10**9)]", "exec('1')", "getattr(1, 'real')", "[y for x in range(3)]",
    "globals()", "2 ** 100000",
])
def test_safe_eval_refuses(expr):
    with pytest.raises(UnsafeExpression):
        safe_eval(expr)


def test_eval_tag_in_file_refused_names_file_and_tag(tmp_path):
    bad = write(tmp_path, "evil.yaml",
                'INPUT:\n  MIN_SIZE_TRAIN: !!python/object/apply:eval ["__import__(\'os\').getcwd()"]\n')
    with pytest.raises(ConfigError) as e:
        load_cfg(bad)
    assert "evil.yaml" in str(e.value) and "python/object/apply:eval" in str(e.value)
    other = write(tmp_path, "tag.yaml", 'SEED: !!python/object/apply:os.getcwd []\n')
    with pytest.raises(ConfigError, match=r"tag\.yaml.*python/object/apply:os\.getcwd"):
        load_cfg(other)


# --- MaskFormer's own configs ---------------------------------------------------------------------
def test_maskformer_ade20k_r50_loads(weights_dir):
    cfg, notes = load_cfg_report(MF_ADE)
    # MaskFormer = SimFormer with every weak-shot module off
    assert cfg.MODEL.META_ARCHITECTURE == "SimFormer"
    assert not cfg.WEAKSHOT.SIMNET.ENABLED and not cfg.WEAKSHOT.DISTILL.ENABLED
    assert not cfg.WEAKSHOT.COMPLEMENTARY.ENABLED and cfg.WEAKSHOT.PAIR_MODE == "none"
    assert cfg.WEAKSHOT.SPLIT == ""
    # build_resnet_backbone + DEPTH 50; ImageNet init goes to the backbone, not the full model
    assert cfg.MODEL.BACKBONE.NAME == "resnet50"
    assert cfg.MODEL.BACKBONE.WEIGHTS == os.path.join(weights_dir, "detectron2", "ImageNetPretrained",
                                                      "torchvision", "R-50.pkl")
    assert cfg.MODEL.WEIGHTS == ""
    assert any("is not there yet" in n and "dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/torchvision/R-50.pkl"
               in n for n in notes)
    assert cfg.INPUT.MIN_SIZE_TRAIN == [int(x * 0.1 * 512) for x in range(5, 21)]
    assert list(cfg.INPUT.CROP.SIZE) == [512, 512] and cfg.INPUT.SIZE_DIVISIBILITY == 512
    assert cfg.DATASETS.TRAIN == ["ade20k_train"] and cfg.DATASETS.TEST == ["ade20k_val"]
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_ITER, cfg.TEST.EVAL_PERIOD) == (16, 160000, 5000)
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 150 and cfg.DATALOADER.NUM_WORKERS == 4
    assert cfg.VERSION == 1  # detectron2's VERSION 2 is not ours
    ignored = {n.split(" = ")[0] for n in notes if ": ignored - " in n}
    assert ignored == {"MODEL.RESNETS.STEM_TYPE", "MODEL.RESNETS.RES5_MULTI_GRID", "MODEL.SEM_SEG_HEAD.COMMON_STRIDE",
                       "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT", "DATALOADER.FILTER_EMPTY_ANNOTATIONS"}


def test_maskformer_coco_stuff_r50_loads(weights_dir):
    os.makedirs(os.path.join(weights_dir, "detectron2", "ImageNetPretrained", "torchvision"))
    open(os.path.join(weights_dir, "detectron2", "ImageNetPretrained", "torchvision", "R-50.pkl"), "wb").close()
    cfg, notes = load_cfg_report(MF_COCO)
    assert not any("is not there yet" in n for n in notes)
    assert cfg.INPUT.MIN_SIZE_TRAIN == [320, 384, 448, 512, 576, 640, 704, 768, 832, 896, 960]
    assert cfg.DATASETS.TRAIN == ["coco_stuff_10k_train"] and cfg.DATASETS.TEST == ["coco_stuff_10k_test"]
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_ITER, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES) == (32, 60000, 171)
    assert list(cfg.INPUT.CROP.SIZE) == [640, 640] and cfg.INPUT.MAX_SIZE_TRAIN == 2560


def test_overrides_win_over_translations(weights_dir):
    cfg = load_cfg(MF_ADE, ["WEAKSHOT.SIMNET.ENABLED", "True", "WEAKSHOT.PAIR_MODE", "cross",
                            "MODEL.RESNETS.DEPTH", "101", "SOLVER.OPTIMIZER", "ADAMW"])
    assert cfg.WEAKSHOT.SIMNET.ENABLED and cfg.WEAKSHOT.PAIR_MODE == "cross"
    assert cfg.MODEL.BACKBONE.NAME == "resnet101"


def test_contradiction_in_one_file(tmp_path):
    f = write(tmp_path, "c.yaml", "MODEL:\n  META_ARCHITECTURE: MaskFormer\nWEAKSHOT:\n  SIMNET: {ENABLED: True}\n")
    with pytest.raises(ConfigError, match="WEAKSHOT.SIMNET.ENABLED"):
        load_cfg(f)


def test_every_problem_reported_at_once(tmp_path, weights_dir):
    base = write(tmp_path, "base.yaml", "SOLVER:\n  OPTIMIZER: SGD\n  MAX_ITERS: 3\nMODEL:\n  RESNETS: {DEPTH: 152}\n")
    child = write(tmp_path, "child.yaml", "_BASE_: base.yaml\nMODEL:\n  BACKBONE: {NAME: D2SwinTransformer}\n"
                  "  WEIGHTS: detectron2://MaskFormer/model_final.pkl\nINPUT:\n  CROP: {TYPE: relative_range}\n"
                  "  FOO: 1\n")
    with pytest.raises(ConfigError) as e:
        load_cfg(child, ["SOLVER.BAR", "2"])
    msg, problems = str(e.value), e.value.problems
    assert len(problems) == 8, msg
    for piece in ("SOLVER.OPTIMIZER = 'SGD'", "SOLVER.MAX_ITERS", "Did you mean: SOLVER.MAX_ITER",
                  "MODEL.RESNETS.DEPTH = 152", "D2SwinTransformer", "model-zoo checkpoints",
                  "INPUT.CROP.TYPE = 'relative_range'", "INPUT.FOO", "SOLVER.BAR' in the command line"):
        assert piece in msg, piece
    assert re.search(r"SOLVER\.OPTIMIZER.*base\.yaml", msg) and re.search(r"INPUT\.FOO.*child\.yaml", msg)


def test_detectron2_flip_and_padding_values(tmp_path):
    f = write(tmp_path, "f.yaml", "INPUT:\n  RANDOM_FLIP: horizontal\n  SIZE_DIVISIBILITY: -1\nSEED: 7\n")
    cfg = load_cfg(f)
    assert cfg.INPUT.RANDOM_FLIP is True and cfg.INPUT.SIZE_DIVISIBILITY == 0 and cfg.SEED == 7
    assert load_cfg(f, ["INPUT.RANDOM_FLIP", "none"]).INPUT.RANDOM_FLIP is False
    with pytest.raises(ConfigError, match="vertical"):
        load_cfg(f, ["INPUT.RANDOM_FLIP", "vertical"])
    with pytest.raises(ConfigError, match="random seed"):
        load_cfg(f, ["SEED", "-1"])


# --- the SimFormer release ------------------------------------------------------------------------
def test_release_ade_stage1_without_pairs(weights_dir):
    cfg = load_cfg(os.path.join(REL_ADE, "s1_seg.yaml"))
    assert cfg.DATASETS.TRAIN == ["ade20k_train"] and cfg.DATASETS.TEST == ["ade20k_val"]
    assert cfg.WEAKSHOT.SPLIT == "splits/ade20k/split1.json"
    assert cfg.WEAKSHOT.PAIR_MODE == "none"
    assert not cfg.WEAKSHOT.SIMNET.ENABLED and not cfg.WEAKSHOT.DISTILL.ENABLED
    assert cfg.WEAKSHOT.COMPLEMENTARY.ENABLED and cfg.WEAKSHOT.COMPLEMENTARY.LOSS_WEIGHT == 0.2
    assert cfg.SOLVER.IMS_PER_BATCH == 8 and cfg.SOLVER.CHECKPOINT_PERIOD == 999999 and cfg.TEST.EVAL_PERIOD == 20000
    assert (cfg.MODEL.MASK_FORMER.CLASS_WEIGHT, cfg.MODEL.MASK_FORMER.DICE_WEIGHT,
            cfg.MODEL.MASK_FORMER.MASK_WEIGHT) == (1.0, 1.0, 20.0)


def test_release_coco_crosim(weights_dir):
    cfg = load_cfg(os.path.join(REL_COCO, "s1_seg_crosim.yaml"))
    assert cfg.WEAKSHOT.SPLIT == "splits/coco_stuff_10k/split1.json"
    assert cfg.DATASETS.TEST == ["coco_stuff_10k_test"]
    assert cfg.WEAKSHOT.PAIR_MODE == "cross"
    assert cfg.WEAKSHOT.SIMNET.ENABLED and cfg.WEAKSHOT.SIMNET.LOSS_WEIGHT == 1.0
    assert not cfg.WEAKSHOT.DISTILL.ENABLED  # DISTILL_LOSS: 0.
    assert cfg.WEAKSHOT.COMPLEMENTARY.LOSS_WEIGHT == 0.15 and cfg.SOLVER.IMS_PER_BATCH == 4


def test_release_retraining(weights_dir):
    cfg = load_cfg(os.path.join(REL_ADE, "s1_seg_retraining.yaml"))
    assert cfg.WEAKSHOT.NOVEL_MASKS and cfg.WEAKSHOT.PSEUDO_LABEL_DIR == "pseudo_ours_ADE_S1"
    assert not cfg.WEAKSHOT.COMPLEMENTARY.ENABLED and cfg.WEAKSHOT.PAIR_MODE == "none"


def test_release_rejections_name_key_and_reason(weights_dir):
    with pytest.raises(ConfigError, match=r"CROSS_IMG_SIM\.DISTILL_FUNC = 'cce'.*only 'ce'"):
        load_cfg(os.path.join(REL_ADE, "s1_seg_crosim.yaml"))
    # the same file with the paper's distillation loss loads, with the release's ADE alpha 0.5
    cfg = load_cfg(os.path.join(REL_ADE, "s1_seg_crosim.yaml"), ["CROSS_IMG_SIM.DISTILL_FUNC", "ce"])
    assert cfg.WEAKSHOT.DISTILL.ENABLED and cfg.WEAKSHOT.DISTILL.LOSS_WEIGHT == 0.5
    with pytest.raises(ConfigError, match="GeneratePseudoLabel.*simformer pseudo-label"):
        load_cfg(os.path.join(REL_ADE, "s1_seg_pseudo_label.yaml"))


def test_release_ignore_logit_becomes_probability(tmp_path):
    f = write(tmp_path, "i.yaml", "LOSS:\n  IgnoreInit: -2.9444\n")
    assert load_cfg(f).WEAKSHOT.COMPLEMENTARY.IGNORE_PROB == pytest.approx(1 / (1 + np.exp(2.9444)), abs=1e-6)


# --- the documented table ---------------------------------------------------------------------------
def test_docs_list_every_rule():
    doc = open(os.path.join(HERE, "..", "..", "docs", "detectron2.md")).read()
    keys = list(RULES) + list(TRANSLATORS) + [p for p, _ in IGNORED_PREFIXES]
    missing = [k for k in keys if f"`{k.rstrip('.')}" not in doc]
    assert not missing, f"docs/detectron2.md does not list: {missing}"
