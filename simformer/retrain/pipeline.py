"""The SimFormer* protocol in one resumable run directory: train -> pseudo-label -> retrain -> eval
(docs/method.md section 7)."""
from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Optional

from simformer.config.compare import config_differences
from simformer.engine.checkpoint import Checkpointer
from simformer.engine.trainer import Trainer
from simformer.utils import comm
from simformer.utils.io import atomic_path, atomic_write_json
from simformer.utils.run_dir import SWEEP_FILES

from . import LABELS, stage_configs
from .pseudo_label import DONE, generate_pseudo_labels

logger = logging.getLogger("simformer")


def adopt_stage1(source: str, stage1: str, cfg1) -> bool:
    """Use a finished training run ``source`` as stage 1 when its resolved config equals the
    stage-1 config (OUTPUT_DIR aside): copy it instead of training the same model again.
    Returns False (and copies nothing) when ``source`` is unfinished or was trained differently."""
    if not all(os.path.isfile(os.path.join(source, f)) for f in ("model_final.pth", "metrics.json", "config.yaml")):
        logger.info("--stage1-from %s is not a finished run; training stage 1", source)
        return False
    diffs = config_differences(cfg1, os.path.join(source, "config.yaml"))
    if diffs:
        logger.warning("--stage1-from %s was trained with another config (%s); training stage 1", source,
                       "; ".join(diffs[:3]) + (" ..." if len(diffs) > 3 else ""))
        return False
    tmp = stage1 + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, ignore=shutil.ignore_patterns(*SWEEP_FILES))
    os.replace(tmp, stage1)
    logger.info("Stage 1 = finished run %s (same config), copied to %s", source, stage1)
    return True


def run_pipeline(config: str, output: str, opts=(), *, retrain_config: Optional[str] = None,
                 resume: bool = False, stage1_from: Optional[str] = None, refine: str = "none") -> dict:
    """train -> pseudo-label -> retrain -> eval in one resumable run directory.

    ``output``/stage1_train, ``output``/pseudo_labels, ``output``/stage2_retrain; the retrained
    model's metrics are copied to ``output``/metrics.json (with the stage-1 metrics and the
    pseudo-label quality beside them) and its weights to ``output``/model_final.pth.
    A stage whose outputs exist is skipped; an interrupted stage resumes from its checkpoint.
    ``stage1_from``: a finished ``simformer train`` run with the same config to reuse as stage 1.
    ``refine``: "gfsam" refines the pseudo labels (``pseudo_label.generate_pseudo_labels``);
    labels made with another setting are refused, not mixed in.
    """

    (cfg1, stage1), (cfg2, stage2) = stage_configs(config, output, opts, retrain_config=retrain_config)
    labels = os.path.join(output, LABELS)

    def finished(d):
        return os.path.isfile(os.path.join(d, "model_final.pth")) and os.path.isfile(os.path.join(d, "metrics.json"))

    if not finished(stage1) and stage1_from and not os.path.exists(stage1) and comm.is_main_process():
        adopt_stage1(stage1_from, stage1, cfg1)
    comm.synchronize()
    if not finished(stage1):
        Trainer(cfg1, resume=resume or os.path.isfile(os.path.join(stage1, "last_checkpoint"))).train()
    with open(os.path.join(stage1, "metrics.json")) as f:
        stage1_metrics = json.load(f)

    if not os.path.isfile(os.path.join(labels, DONE)):
        trainer = Trainer(cfg1, manage_output=False)  # only the model: stage 1's folder stays as it is
        try:
            Checkpointer.load(os.path.join(stage1, "model_final.pth"), model=trainer.model)
            generate_pseudo_labels(trainer.model, cfg1, trainer.split, labels, refine=refine)
        finally:
            trainer.close()
    with open(os.path.join(labels, DONE)) as f:
        quality = json.load(f)
    made_with = quality.get("refine", "none")
    if made_with != refine:
        raise RuntimeError(f"{labels} holds pseudo labels made with --refine {made_with}, not {refine}: use another "
                           f"--output, or delete {labels} to make them again")

    if not finished(stage2):
        Trainer(cfg2, resume=os.path.isfile(os.path.join(stage2, "last_checkpoint"))).train()
    with open(os.path.join(stage2, "metrics.json")) as f:
        final = json.load(f)
    final = dict(final, before_retrain={k: stage1_metrics.get(k) for k in ("miou", "base_miou", "novel_miou", "hm")},
                 pseudo_label_quality=quality["quality"], pseudo_label_refine=refine)
    if "quality_unrefined" in quality:
        final["pseudo_label_quality_unrefined"] = quality["quality_unrefined"]
    if comm.is_main_process():
        with atomic_path(os.path.join(output, "model_final.pth"), ".pth") as tmp:
            shutil.copyfile(os.path.join(stage2, "model_final.pth"), tmp)
        for name in ("config.yaml", "run_info.json"):
            src = os.path.join(stage2, name)
            if os.path.isfile(src):
                shutil.copyfile(src, os.path.join(output, name))
        atomic_write_json(os.path.join(output, "metrics.json"), final)
        logger.info("Pipeline done: novel mIoU %.1f -> %.1f after re-training (pseudo-label novel mIoU %.1f)",
                    stage1_metrics.get("novel_miou") or float("nan"), final.get("novel_miou") or float("nan"),
                    quality["quality"].get("novel_miou") or float("nan"))
    return final
