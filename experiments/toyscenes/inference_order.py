"""Suspect 3 of the convergence study: the same trained weights evaluated with MaskFormer's
inference order (upsample the mask *logits*, then sigmoid; simformer's since the study) and with
the order used before it (sigmoid and class-weighted sum at stride 4, then upsample the scores).

    python experiments/toyscenes/inference_order.py runs/toyscenes_convergence --out docs/results/convergence

For every finished run under the sweep folder (config.yaml + model_final.pth) writes one row per
order to OUT/inference_order.csv: run, order, miou, base_miou, novel_miou, hm.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import types

import pandas as pd
import torch
import torch.nn.functional as F


def probs_after_upsampling(model, images: torch.Tensor) -> torch.Tensor:
    """The order before the study: scores at stride 4, then bilinear upsampling of the scores."""
    from simformer.modeling.inference import semantic_inference

    outputs = model.forward_features(images)
    probs = semantic_inference(outputs["pred_logits"], outputs["pred_masks"])
    return F.interpolate(probs, size=images.shape[-2:], mode="bilinear", align_corners=False)


def evaluate_both(run_dir: str) -> list:
    from simformer.engine.defaults import load_trained_model
    from simformer.evaluation.evaluator import evaluate_model

    cfg, model, split, name = load_trained_model(os.path.join(run_dir, "config.yaml"),
                                                 os.path.join(run_dir, "model_final.pth"))
    model.eval()
    rows = []
    for order in ("logits-then-sigmoid", "scores-then-upsample"):
        if order == "scores-then-upsample":
            model.predict_probs = types.MethodType(torch.no_grad()(probs_after_upsampling), model)
        res = evaluate_model(model, cfg, name, split, verbose=False)
        rows.append({"order": order, **{k: res.get(k) for k in ("miou", "base_miou", "novel_miou", "hm")}})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dir")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    rows = []
    for ckpt in sorted(glob.glob(os.path.join(args.sweep_dir, "*", "*", "*", "model_final.pth"))):
        run_dir = os.path.dirname(ckpt)
        run = os.path.relpath(run_dir, args.sweep_dir)
        rows += [{"run": run, **r} for r in evaluate_both(run_dir)]
    os.makedirs(args.out, exist_ok=True)
    df = pd.DataFrame(rows)
    df.to_csv(os.path.join(args.out, "inference_order.csv"), index=False)
    print(df.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
