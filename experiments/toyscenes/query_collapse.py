"""Do a model's queries only differ through dropout noise? (docs/proposals.md, "64 queries")

For each trained run, on its config's test set, once with the model in eval mode and once with the
transformer decoder's dropout left on (nn.Dropout and nn.MultiheadAttention modules in train mode,
one draw, seed 0; normalisation layers untouched):

* the proposal analysis (simformer/evaluation/proposal_report.py): achieved, oracle and union
  mIoU (base / novel / all) and the number of queries per image that predict a class;
* query diversity on the first ``--images`` test images: the mean Pearson correlation between two
  different queries' mask probabilities (1 = every query outputs the same mask).

A model whose figures are fine with dropout on and collapse in eval mode has learned to tell its
queries apart by the training noise alone.

    python experiments/toyscenes/query_collapse.py runs/a runs/b --out docs/results/oracle_growth/query_collapse.csv
"""
from __future__ import annotations

import argparse
import os
import sys

import pandas as pd
import torch

from simformer.data.build import build_test_loader
from simformer.engine.defaults import load_trained_model
from simformer.evaluation.proposal_report import analyze_proposals
from simformer.utils.io import atomic_path


def set_dropout(model: torch.nn.Module, on: bool) -> None:
    """Eval mode everywhere, then (``on``) dropout modules back in train mode."""
    model.eval()
    if on:
        for m in model.modules():
            if isinstance(m, (torch.nn.Dropout, torch.nn.MultiheadAttention)):
                m.train()


def mask_correlation(model, batches) -> float:
    """Mean over images of the mean off-diagonal Pearson correlation of the Q mask-probability maps."""
    values = []
    for batch in batches:
        with torch.no_grad():
            masks = model.forward_features(model.normalize([batch[0]]))["pred_masks"][0].flatten(1).sigmoid()
        centred = torch.nn.functional.normalize(masks - masks.mean(1, keepdim=True), dim=1)
        corr = centred @ centred.T
        values.append(corr[~torch.eye(len(corr), dtype=torch.bool)].mean().item())
    return float(sum(values) / len(values))


def probe(run: str, images: int) -> list:
    cfg, model, split, name = load_trained_model(os.path.join(run, "config.yaml"),
                                                 os.path.join(run, "model_final.pth"), [])
    batches = [b for _, b in zip(range(images), build_test_loader(cfg, name))]
    rows = []
    for dropout_on in (False, True):
        set_dropout(model, dropout_on)
        model.train = lambda mode=True: model  # analyze_proposals switches modes; keep ours
        model.eval = lambda: model
        torch.manual_seed(0)
        try:
            s = analyze_proposals(model, cfg, name, split).summary()
            torch.manual_seed(0)
            corr = mask_correlation(model, batches)
        finally:
            del model.train, model.eval  # the nn.Module methods again
        row = {"run": run, "queries": int(cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES),
               "dropout_cfg": float(cfg.MODEL.MASK_FORMER.DROPOUT), "iterations": int(cfg.SOLVER.MAX_ITER),
               "inference": "dropout on" if dropout_on else "eval",
               "object_queries_per_image": s["object_queries_per_image"], "mask_corr": corr}
        for kind in ("achieved", "oracle"):
            for group in ("novel", "base", "all"):
                row[f"{group}_{kind}"] = s[kind][group]
        rows.append(row)
        print(f"{run} [{row['inference']}]: all achieved {row['all_achieved']:.1f}, oracle {row['all_oracle']:.1f}, "
              f"{row['object_queries_per_image']:.1f} object queries per image, mask correlation {corr:.2f}",
              flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders (config.yaml + model_final.pth)")
    p.add_argument("--out", required=True, help="CSV to write")
    p.add_argument("--images", type=int, default=8, help="test images for the mask correlation")
    args = p.parse_args(argv)
    os.environ.setdefault("SIMFORMER_PROGRESS", "0")
    rows = [r for run in args.runs for r in probe(run, args.images)]
    with atomic_path(args.out, ".csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.4f")
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
