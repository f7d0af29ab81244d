"""The re-training stage (SimFormer*): mixed pseudo labels, their optional refinement, the pipeline."""
from __future__ import annotations

import os

# Pseudo-label refinements, for `pseudo-label --refine`, `pipeline --refine` and the sweep key
# `refine` (docs/gfsam.md). Kept here, free of heavy imports, so that the CLI and sweep parsing
# read it without loading the models.
REFINE_METHODS = ("none", "gfsam")

# The sub-folders of a pipeline run (`simformer pipeline`, pipeline.run_pipeline).
STAGE1, LABELS, STAGE2 = "stage1_train", "pseudo_labels", "stage2_retrain"


def default_retrain_config(config: str) -> str:
    """retrain.yaml beside the stage-1 config (`pipeline --retrain-config` default)."""
    return os.path.join(os.path.dirname(os.path.abspath(config)), "retrain.yaml")


def stage_configs(config: str, output: str, opts=(), *, retrain_config: str | None = None):
    """The resolved configs of a pipeline run's two trainings: ``[(cfg1, stage1 folder), (cfg2,
    stage2 folder)]`` (also what a sweep compares with their saved config.yaml)."""
    from simformer.config import load_cfg

    retrain_config = retrain_config or default_retrain_config(config)
    stage1, labels, stage2 = (os.path.join(output, d) for d in (STAGE1, LABELS, STAGE2))
    cfg1 = load_cfg(config, list(opts) + ["OUTPUT_DIR", stage1])
    cfg2 = load_cfg(retrain_config, list(opts) + ["OUTPUT_DIR", stage2, "WEAKSHOT.PSEUDO_LABEL_DIR", labels])
    return [(cfg1, stage1), (cfg2, stage2)]
