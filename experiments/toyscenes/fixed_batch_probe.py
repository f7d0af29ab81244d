"""Fixed-batch probes behind two readings of docs/convergence.md (suspect 4 and the decoder map).

Every iteration sees the same ToyScenes training images (no crop, flip or colour jitter), so these
probes measure how well an optimiser setting fits, not how it generalises:

* ``clip``: 8 images, 40 steps of FullyOracle under SOLVER.CLIP_GRADIENTS 0.01 / 1.0 / off. Per
  setting: the total loss of the last step and the share of parameter *elements* whose Adam
  second-moment root sqrt(v) is below 10 x eps (there the update is damped by eps, i.e. the clip
  has scaled their gradients below what Adam can use).
* ``decoder-map``: the learning tests' batch (2 images), 200 steps of FullyOracle with
  MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE res5 / res3 / res2 / pixel_embedding; the all-class
  mIoU on the same two images.
* ``dropout``: the learning tests' batch and step budgets (FullyOracle 200 steps, SimFormer 100)
  with the transformer decoder's MODEL.MASK_FORMER.DROPOUT at MaskFormer's 0.1 and at 0.0.

    python experiments/toyscenes/fixed_batch_probe.py --out docs/results/convergence [--probe NAME]

writes ``clip_probe.csv``, ``decoder_map_probe.csv`` and ``dropout_probe.csv`` there (one thread;
about 25 minutes on a quiet 2-core machine). ``analysis/convergence_report.py`` puts them into
docs/convergence.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, "configs", "toyscenes")
FIT_OVERRIDES = [
    "INPUT.MIN_SIZE_TRAIN", "[128, 128]", "INPUT.CROP.ENABLED", "False", "INPUT.COLOR_AUG_SSD", "False",
    "INPUT.RANDOM_FLIP", "False", "SOLVER.CHECKPOINT_PERIOD", "0", "TEST.AUG.ENABLED", "False",
    "DATASETS.TEST", "['toyscenes_train']",
    # The clip and decoder-map tables were measured with MaskFormer's decoder dropout, the recipe
    # until 2026-12-01; the dropout probe sets it itself.
    "MODEL.MASK_FORMER.DROPOUT", "0.1",
]


def _train(images: int, iters: int, out: str, extra, config: str = "fully_oracle.yaml"):
    """``config`` (FullyOracle by default) on the first ``images`` generated training images, batch =
    all of them."""
    from simformer.config import load_cfg
    from simformer.engine.trainer import Trainer

    cfg = load_cfg(os.path.join(CONFIGS, config), ["OUTPUT_DIR", out, "SOLVER.MAX_ITER", str(iters),
                            "SOLVER.IMS_PER_BATCH", str(images), *FIT_OVERRIDES, *extra])
    trainer = Trainer(cfg)
    metrics = trainer.train()
    with open(os.path.join(out, "metrics.jsonl")) as f:
        last = [json.loads(line) for line in f if '"total_loss"' in line][-1]
    return trainer, metrics, last


def _damped_share(optimizer) -> float:
    """Share of parameter elements with sqrt(Adam v) < 10 x eps (the update is eps-dominated)."""
    damped = total = 0
    for group in optimizer.param_groups:
        eps = group["eps"]
        for p in group["params"]:
            state = optimizer.state.get(p)
            if not state or "exp_avg_sq" not in state:
                continue
            root = state["exp_avg_sq"].sqrt()
            damped += int((root < 10 * eps).sum())
            total += root.numel()
    return damped / max(total, 1)


def _dataset(root: str, images: int) -> None:
    from simformer.data.datasets.toyscenes import generate_toyscenes

    generate_toyscenes(os.path.join(root, "toyscenes"), num_train=images, num_val=1, size=128, seed=3,
                       progress=False)
    os.environ["SIMFORMER_DATASETS"] = root
    os.environ["SIMFORMER_CACHE"] = os.path.join(root, "cache")


def clip_probe(work: str):
    _dataset(os.path.join(work, "data8"), 8)
    rows = []
    for label, extra in (("clip 0.01", ["SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "0.01"]),
                         ("clip 1.0", ["SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "1.0"]),
                         ("no clip", ["SOLVER.CLIP_GRADIENTS.ENABLED", "False"])):
        trainer, _, last = _train(8, 40, os.path.join(work, label.replace(" ", "_")), extra)
        rows.append({"setting": label, "steps": 40, "images": 8, "total_loss": round(last["total_loss"], 3),
                     "damped_share_pct": round(100 * _damped_share(trainer.optimizer), 1)})
        print(rows[-1], flush=True)
    return rows


def decoder_map_probe(work: str):
    _dataset(os.path.join(work, "data2"), 2)
    rows = []
    for feature in ("res5", "res3", "res2", "pixel_embedding"):
        _, metrics, _ = _train(2, 200, os.path.join(work, feature),
                               ["MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE", feature])
        rows.append({"transformer_in_feature": feature, "steps": 200, "images": 2,
                     "train_miou": round(metrics["miou"], 1)})
        print(rows[-1], flush=True)
    return rows


def dropout_probe(work: str):
    _dataset(os.path.join(work, "data2"), 2)
    rows = []
    for config, steps in (("fully_oracle.yaml", 200), ("simformer.yaml", 100)):
        for dropout in ("0.1", "0.0"):
            _, metrics, _ = _train(2, steps, os.path.join(work, f"{config}_{dropout}"),
                                   ["MODEL.MASK_FORMER.DROPOUT", dropout], config=config)
            rows.append({"config": config, "dropout": float(dropout), "steps": steps, "images": 2,
                         "train_miou": round(metrics["miou"], 1), "train_base_miou": round(metrics["base_miou"], 1),
                         "train_novel_miou": round(metrics["novel_miou"], 1)})
            print(rows[-1], flush=True)
    return rows


PROBES = (("clip", clip_probe), ("decoder-map", decoder_map_probe), ("dropout", dropout_probe))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for the probes' CSV files")
    p.add_argument("--probe", choices=[name for name, _ in PROBES] + ["all"], default="all")
    args = p.parse_args(argv)
    import pandas as pd
    import torch

    from simformer.utils.io import atomic_path

    torch.set_num_threads(1)
    torch.manual_seed(0)
    os.environ["SIMFORMER_PROGRESS"] = "0"
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        for name, fn in PROBES:
            if args.probe in (name, "all"):
                path = os.path.join(args.out, f"{name.replace('-', '_')}_probe.csv")
                with atomic_path(path) as tmp:
                    pd.DataFrame(fn(work)).to_csv(tmp, index=False)
                print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
