"""Copy a finished sweep's small result files into the repository so that reports regenerate
from committed files alone (no checkpoints):

    simformer sweep experiments/toyscenes/convergence.yaml --collect      # writes results.csv
    python analysis/collect_runs.py runs/toyscenes_convergence --to docs/results/convergence

DEST/results.csv   the sweep's results.csv, run_dir made relative to DEST
DEST/curves.csv    run, method, split, seed, iteration, series, value: every logged loss term, the
                   median step time of each logging period (time_per_iter, s) and every periodic
                   evaluation (eval/miou, eval/base_miou, eval/novel_miou, ...)
DEST/runs/<run>/metrics.json, run_info.json   each run's final metrics and provenance
DEST/runs/<run>/pseudo_labels.json             a pipeline run's pseudo-label quality on the train set
DEST/runs/<run>/stage1_metrics.json            a pipeline run's stage-1 model on val (stage1_train/metrics.json)

With --keep, the runs already collected in DEST that this machine's sweep does not hold (trained in
an earlier session or on another machine) keep their rows and curves; runs collected again replace
theirs.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kept_rows import merge_rows  # noqa: E402

# (file in a run folder, name in DEST/runs/<run>): small text files only, never checkpoints
COPIED = [("metrics.json", "metrics.json"), ("run_info.json", "run_info.json"),
          (os.path.join("pseudo_labels", "pseudo_labels.json"), "pseudo_labels.json"),
          (os.path.join("stage1_train", "metrics.json"), "stage1_metrics.json")]
CURVE_COLUMNS = ["run", "method", "split", "seed", "iteration", "series", "value"]
# the logged loss terms, and the median step time (s) over each logging period: run time from committed files
LOG_SERIES = ("total_loss", "loss_ce", "loss_mask", "loss_dice", "loss_sim", "loss_dist", "loss_comp", "time_per_iter")


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
                rows += [dict(key, iteration=it, series=k, value=rec[k]) for k in LOG_SERIES if k in rec]
    return rows


def committed(dest: str):
    """DEST's results and curves (None, None when DEST has no results.csv yet). Curves written before
    they carried a ``run`` column get it from the results' (method, split, seed), which must then name
    one run each."""
    results = os.path.join(dest, "results.csv")
    if not os.path.isfile(results):
        return None, None
    known = pd.read_csv(results)
    curves_path = os.path.join(dest, "curves.csv")
    curves = pd.read_csv(curves_path) if os.path.isfile(curves_path) else pd.DataFrame(columns=CURVE_COLUMNS)
    if "run" not in curves.columns:
        ids = known[["method", "split", "seed"]].astype(str).agg("/".join, axis=1)
        if ids.duplicated().any():
            raise ValueError(f"{curves_path} has no run column and {results} has several runs per "
                             "(method, split, seed); collect without --keep")
        run_of = dict(zip(ids, known["run"]))
        curves.insert(0, "run", curves[["method", "split", "seed"]].astype(str).agg("/".join, axis=1).map(run_of))
    return known, curves


def collect(sweep_dir: str, dest: str, keep: bool = False) -> pd.DataFrame:
    results = os.path.join(sweep_dir, "results.csv")
    if not os.path.isfile(results):
        raise FileNotFoundError(f"{results} not found: run `simformer sweep FILE --collect` first.")
    df = pd.read_csv(results)
    curves = []
    for i, row in df.iterrows():
        src = row["run_dir"]
        rel = os.path.join("runs", row["run"])
        os.makedirs(os.path.join(dest, rel), exist_ok=True)
        for name, to in COPIED:
            if os.path.isfile(os.path.join(src, name)):
                shutil.copyfile(os.path.join(src, name), os.path.join(dest, rel, to))
        log = os.path.join(src, "metrics.jsonl")
        if os.path.isfile(log):
            curves += curve_rows(log, {"run": row["run"], "method": row["method"], "split": row["split"],
                                       "seed": int(row["seed"])})
        df.loc[i, "run_dir"] = rel
    curves = pd.DataFrame(curves, columns=CURVE_COLUMNS)
    if keep:
        known, known_curves = committed(dest)
        if known is not None:
            df = merge_rows(known, df)
            curves = pd.concat([known_curves[~known_curves["run"].isin(set(curves["run"]))
                                             & known_curves["run"].isin(set(df["run"]))], curves], ignore_index=True)
    os.makedirs(dest, exist_ok=True)
    from simformer.utils.io import atomic_path

    with atomic_path(os.path.join(dest, "results.csv"), ".csv") as tmp:
        df.to_csv(tmp, index=False)
    with atomic_path(os.path.join(dest, "curves.csv"), ".csv") as tmp:
        curves[CURVE_COLUMNS].to_csv(tmp, index=False)
    return df


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dir", help="a sweep's output folder (holding results.csv)")
    p.add_argument("--to", required=True, help="destination folder inside the repository")
    p.add_argument("--keep", action="store_true",
                   help="keep the runs already collected in --to that this sweep folder does not hold")
    args = p.parse_args(argv)
    try:
        df = collect(args.sweep_dir, args.to, keep=args.keep)
    except (OSError, ValueError) as e:
        print(f"collect_runs: {e}", file=sys.stderr)
        return 2
    print(f"collected {len(df)} runs into {args.to}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
