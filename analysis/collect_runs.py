"""Copy a finished sweep's small result files into the repository so that reports regenerate
from committed files alone (no checkpoints):

    simformer sweep experiments/toyscenes/convergence.yaml --collect      # writes results.csv
    python analysis/collect_runs.py runs/toyscenes_convergence --to docs/results/convergence

DEST/results.csv   the sweep's results.csv, run_dir made relative to DEST
DEST/curves.csv    method, split, seed, iteration, series, value: every logged loss term and
                   every periodic evaluation (eval/miou, eval/base_miou, eval/novel_miou, ...)
DEST/runs/<run>/metrics.json, run_info.json   each run's final metrics and provenance
DEST/runs/<run>/pseudo_labels.json             a pipeline run's pseudo-label quality on the train set
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import pandas as pd

LOSS_SERIES = ("total_loss", "loss_ce", "loss_mask", "loss_dice", "loss_sim", "loss_dist", "loss_comp")


def curve_rows(metrics_jsonl: str, key: dict) -> list:
    """One row per (iteration, series) of a run's metrics.jsonl."""
    rows = []
    with open(metrics_jsonl) as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            it = int(rec["iteration"])
            if "eval" in rec:
                rows += [dict(key, iteration=it, series=f"eval/{k}", value=v)
                         for k, v in rec["eval"].items() if isinstance(v, (int, float))]
            else:
                rows += [dict(key, iteration=it, series=k, value=rec[k]) for k in LOSS_SERIES if k in rec]
    return rows


def collect(sweep_dir: str, dest: str) -> pd.DataFrame:
    results = os.path.join(sweep_dir, "results.csv")
    if not os.path.isfile(results):
        raise FileNotFoundError(f"{results} not found: run `simformer sweep FILE --collect` first.")
    df = pd.read_csv(results)
    curves = []
    for i, row in df.iterrows():
        src = row["run_dir"]
        rel = os.path.join("runs", row["run"])
        os.makedirs(os.path.join(dest, rel), exist_ok=True)
        for name in ("metrics.json", "run_info.json", os.path.join("pseudo_labels", "pseudo_labels.json")):
            if os.path.isfile(os.path.join(src, name)):
                shutil.copyfile(os.path.join(src, name), os.path.join(dest, rel, os.path.basename(name)))
        log = os.path.join(src, "metrics.jsonl")
        if os.path.isfile(log):
            curves += curve_rows(log, {"method": row["method"], "split": row["split"], "seed": int(row["seed"])})
        df.loc[i, "run_dir"] = rel
    os.makedirs(dest, exist_ok=True)
    df.to_csv(os.path.join(dest, "results.csv"), index=False)
    pd.DataFrame(curves, columns=["method", "split", "seed", "iteration", "series", "value"]).to_csv(
        os.path.join(dest, "curves.csv"), index=False)
    return df


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dir", help="a sweep's output folder (holding results.csv)")
    p.add_argument("--to", required=True, help="destination folder inside the repository")
    args = p.parse_args(argv)
    df = collect(args.sweep_dir, args.to)
    print(f"collected {len(df)} runs into {args.to}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
