"""The oracle gap (best query mask vs prediction, novel classes) of every trained run under a folder.

    python analysis/oracle_gap.py runs/toyscenes_main --out docs/results/toyscenes_main/oracle_gap.csv

A run is a folder holding ``config.yaml`` and ``model_final.pth`` (what ``simformer train`` leaves,
engine/run_folder.py); for a ``simformer pipeline`` run (SimFormer*, CAM*) the model is the one
whose metrics the run reports, ``stage2_retrain/``, and ``stage1_train/`` is not a run of its own.
Method, split and seed come from the run's ``sweep_run.json`` (written by ``simformer sweep``), else
from the path (``METHOD/SPLIT/seedN``) and the config's SEED. Models without mask proposals (CAM)
and moved-aside folders (``*.old-*``, ``*.partial``) are skipped.

For each run the proposal analysis (simformer/evaluation/proposal_report.py, docs/proposals.md)
is computed on the config's DATASETS.TEST[0] (or --dataset) and one row is written: method, split,
seed, run, novel achieved / oracle / union mIoU, oracle_gap (= oracle - achieved, novel), the
base figures and the number of images. ``analysis/toyscenes_report.py --oracle-gap CSV`` turns the
CSV into the report's "oracle gap" table.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import List, Optional

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kept_rows import merge_rows  # noqa: E402

COLUMNS = ["method", "split", "seed", "run", "novel_achieved", "novel_oracle", "novel_union", "oracle_gap",
           "base_achieved", "base_oracle", "base_union", "num_images"]
PIPELINE_STAGES = ("stage1_train", "stage2_retrain")


def find_runs(root: str) -> List[dict]:
    """``[{"run": rel path, "dir": run folder, "model_dir": folder with the weights}]``, sorted."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"runs folder {root} does not exist")
    found = []
    # followlinks: a sweep may link a run of another sweep with the same config (variants.yaml's
    # SimFormer seed 1 is main.yaml's)
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if ".old-" not in d and not d.endswith(".partial") and not d.startswith("."))
        name = os.path.basename(folder)
        if name == "stage1_train" or not {"config.yaml", "model_final.pth"} <= set(files):
            continue
        run_dir = os.path.dirname(folder) if name == "stage2_retrain" else folder
        if name == "stage2_retrain" and {"config.yaml", "model_final.pth"} <= set(os.listdir(run_dir)):
            continue  # a finished pipeline holds a copy of these weights itself: one row, not two
        found.append({"run": os.path.relpath(run_dir, root), "dir": run_dir, "model_dir": folder})
    return sorted(found, key=lambda r: r["run"])


def run_key(run: dict, cfg_seed: Optional[int]) -> dict:
    """method / split / seed of a run: its sweep_run.json, else the path and the config's SEED."""
    record = os.path.join(run["dir"], "sweep_run.json")
    if os.path.isfile(record):
        with open(record) as f:
            rec = json.load(f)
        return {"method": rec.get("method", ""), "split": rec.get("split", ""), "seed": rec.get("seed", cfg_seed)}
    parts = [] if run["run"] == "." else run["run"].split(os.sep)
    seed = next((int(m.group(1)) for p in parts for m in [re.fullmatch(r"seed(\d+)", p)] if m), cfg_seed)
    split = next((p for p in parts if p.startswith("split")), "")
    rest = [p for p in parts if not re.fullmatch(r"seed\d+", p) and p != split]
    return {"method": rest[0] if rest else os.path.basename(os.path.abspath(run["dir"])), "split": split,
            "seed": seed}


def analyze_run(run: dict, dataset: Optional[str] = None, opts=()) -> Optional[dict]:
    """The row of one run (None for a model without proposals)."""
    from simformer.engine.defaults import load_trained_model
    from simformer.evaluation.proposal_report import analyze_proposals, has_proposals

    config = os.path.join(run["model_dir"], "config.yaml")
    weights = os.path.join(run["model_dir"], "model_final.pth")
    cfg, model, split, name = load_trained_model(config, weights, list(opts), dataset=dataset)
    if not has_proposals(model):
        print(f"skipped {run['run']}: MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE} has no mask proposals",
              file=sys.stderr)
        return None
    s = analyze_proposals(model, cfg, name, split).summary()
    row = dict(run_key(run, int(cfg.SEED)), run=run["run"])
    for group in ("novel", "base"):
        for kind in ("achieved", "oracle", "union"):
            row[f"{group}_{kind}"] = s[kind][group]
    row.update(oracle_gap=s["oracle_gap_novel"], num_images=s["num_images"])
    return row


def oracle_gap_table(root: str, dataset: Optional[str] = None, opts=(), known: Optional[pd.DataFrame] = None
                     ) -> pd.DataFrame:
    """One row per run under ``root``; runs listed in ``known`` (an earlier CSV) keep their row."""
    rows = []
    known_rows = {} if known is None else {r["run"]: r for r in known.to_dict("records")}
    for run in find_runs(root):
        if run["run"] in known_rows:
            rows.append(known_rows[run["run"]])
            continue
        row = analyze_run(run, dataset, opts)
        if row is not None:
            rows.append(row)
            fmt = lambda v: "n/a" if v is None else f"{v:.1f}"  # noqa: E731
            print(f"{row['run']}: novel achieved {fmt(row['novel_achieved'])}, oracle {fmt(row['novel_oracle'])}, "
                  f"gap {fmt(row['oracle_gap'])}", flush=True)
    return pd.DataFrame(rows, columns=COLUMNS)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs_root", help="folder searched for runs (config.yaml + model_final.pth)")
    p.add_argument("--out", required=True, help="CSV to write (one row per run)")
    p.add_argument("--dataset", default=None, help="dataset to analyse (default: each config's DATASETS.TEST[0])")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: as the simformer CLI)")
    p.add_argument("--keep", action="store_true",
                   help="keep the rows of runs already in --out: analyse only the new runs of a growing sweep, "
                        "and keep the rows of runs no longer under runs_root (trained on another machine)")
    p.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides applied to every run")
    args = p.parse_args(argv)
    from simformer.utils.threads import configure_threads

    configure_threads(args.threads)
    os.environ.setdefault("SIMFORMER_PROGRESS", "0")
    known = pd.read_csv(args.out) if args.keep and os.path.isfile(args.out) else None
    if known is not None and list(known.columns) != COLUMNS:
        print(f"{args.out} is not an oracle-gap CSV (columns {list(known.columns)}); drop --keep to rewrite it",
              file=sys.stderr)
        return 2
    df = merge_rows(known, oracle_gap_table(args.runs_root, args.dataset, args.opts, known))
    df = df.sort_values("run", kind="stable").reset_index(drop=True)  # find_runs' order
    if df.empty:
        print(f"no run with config.yaml + model_final.pth and mask proposals under {args.runs_root}", file=sys.stderr)
        return 1
    from simformer.utils.io import atomic_path

    with atomic_path(args.out, ".csv") as tmp:
        df.to_csv(tmp, index=False, float_format="%.4f")
    print(f"wrote {len(df)} runs to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
