"""SimNet transferability (the paper's Table 3) of every trained run with a SimNet under a folder.

    python analysis/simnet_transfer.py runs/toyscenes_main --out docs/results/toyscenes_main/simnet_transfer.csv \
        --doc docs/results-toyscenes.md

Runs are found as analysis/oracle_gap.py finds them (config.yaml + model_final.pth; method / split /
seed from sweep_run.json). Runs without SimNet or without pairs (Pr, Pr+Co, pipelines' re-trained
MaskFormer) are skipped. For each run, ``--pairs`` training image pairs are scored
(simformer/evaluation/simnet_transfer.py, docs/simnet.md) and one row is written. With --doc, the
generated "simnet_transfer" block of that document gets the per-method mean ± std beside the
paper's Table 3 (COCO-Stuff-10K split1).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convergence_report import mean_std  # noqa: E402
from kept_rows import merge_rows  # noqa: E402
from markdown_blocks import replace_block  # noqa: E402
from oracle_gap import find_runs, run_key  # noqa: E402
from paper_tables import paper_results  # noqa: E402

GROUP_COLUMNS = [f"{g}_{k}" for g in ("base", "novel") for k in ("f1_similar", "f1_dissimilar", "similar_share",
                                                                  "pairs")]
COLUMNS = ["method", "split", "seed", "run", *GROUP_COLUMNS, "image_pairs"]
# Paper Table 3 rows (simformer/resources/paper_results.json) -> our columns.
PAPER_ROWS = {"base_f1_similar": "base similar", "base_f1_dissimilar": "base dissimilar",
              "novel_f1_similar": "novel similar", "novel_f1_dissimilar": "novel dissimilar"}


def analyze_run(run: dict, *, pairs: int, seed: int, opts=()) -> Optional[dict]:
    from simformer.config import load_cfg
    from simformer.engine.defaults import load_trained_model
    from simformer.evaluation.simnet_transfer import has_simnet_pairs, simnet_transfer_on_training_pairs

    config = os.path.join(run["model_dir"], "config.yaml")
    cfg = load_cfg(config, list(opts))
    if not has_simnet_pairs(cfg):
        return None
    key = run_key(run, int(cfg.SEED))
    cfg, model, split, _ = load_trained_model(config, os.path.join(run["model_dir"], "model_final.pth"),
                                              list(opts) + ["SEED", str(seed)], default_dataset="train")
    acc = simnet_transfer_on_training_pairs(model, cfg, split, num_image_pairs=pairs, seed=seed)
    return dict(key, run=run["run"], image_pairs=acc.image_pairs, **group_figures(acc.summary()))


def group_figures(summary: dict) -> dict:
    """``SimNetTransfer.summary()`` (``{group: {figure: value}}``) as the flat ``GROUP_COLUMNS``."""
    return {column: summary[column.split("_", 1)[0]][column.split("_", 1)[1]] for column in GROUP_COLUMNS}


def table(df: pd.DataFrame) -> str:
    """Mean ± std over seeds per method beside the paper's COCO split1 row."""
    paper = paper_results()["table3_simnet_f1_coco"]
    col = paper["columns"].index("split1")
    cols = list(PAPER_ROWS)
    lines = ["| method | n | " + " | ".join(c.replace("_", " ") for c in cols) + " | novel similar share |",
             "|---|---:|" + "---:|" * (len(cols) + 1)]
    for method in pd.unique(df["method"]):
        g = df[df["method"] == method]
        cells = [mean_std(g[c]) for c in cols + ["novel_similar_share"]]
        lines.append(f"| {method} | {len(g)} | " + " | ".join(cells) + " |")
    lines.append("| paper, COCO-Stuff-10K split1 | | " + " | ".join(
        "n/a" if paper["rows"][PAPER_ROWS[c]][col] is None else f"{paper['rows'][PAPER_ROWS[c]][col]:.1f}"
        for c in cols) + " | n/a |")
    pairs = int(df["image_pairs"].iloc[0]) if len(df) else 0
    return "\n".join(lines) + (f"\n\nF1 (%) of SimNet's similar / dissimilar decision (probability > 0.5) on cross-image "
                               f"pixel pairs of {pairs} training image pairs per run, mean ± std over seeds (ddof 1); "
                               "novel similar share: the percentage of novel pairs that are truly similar.\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs_root", help="folder searched for runs (config.yaml + model_final.pth)")
    p.add_argument("--out", required=True, help="CSV to write (one row per run)")
    p.add_argument("--doc", default="", help="Markdown file whose 'simnet_transfer' block to rewrite")
    p.add_argument("--pairs", type=int, default=100, help="training image pairs per run (default 100, the paper's)")
    p.add_argument("--seed", type=int, default=0, help="loader order and point draws (default 0)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: as the simformer CLI)")
    p.add_argument("--keep", action="store_true",
                   help="keep the rows of runs already in --out, including those of runs no longer under runs_root")
    p.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides applied to every run")
    args = p.parse_args(argv)
    from simformer.utils.io import atomic_path
    from simformer.utils.threads import configure_threads

    configure_threads(args.threads)
    known = pd.read_csv(args.out) if args.keep and os.path.isfile(args.out) else None
    if known is not None and list(known.columns) != COLUMNS:
        print(f"{args.out} is not a SimNet-transfer CSV (columns {list(known.columns)}); drop --keep", file=sys.stderr)
        return 2
    rows, done = [], {} if known is None else {r["run"]: r for r in known.to_dict("records")}
    for run in find_runs(args.runs_root):
        row = done.get(run["run"]) or analyze_run(run, pairs=args.pairs, seed=args.seed, opts=args.opts)
        if row is not None:
            rows.append(row)
            print(f"{row['run']}: novel F1 similar {row['novel_f1_similar']:.1f} / dissimilar "
                  f"{row['novel_f1_dissimilar']:.1f}, base {row['base_f1_similar']:.1f} / "
                  f"{row['base_f1_dissimilar']:.1f}", flush=True)
    df = merge_rows(known, pd.DataFrame(rows, columns=COLUMNS))
    df = df.sort_values("run", kind="stable").reset_index(drop=True)  # find_runs' order
    if df.empty:
        print(f"no run with SimNet and pairs under {args.runs_root}", file=sys.stderr)
        return 1
    with atomic_path(args.out, ".csv") as tmp:
        df.to_csv(tmp, index=False, float_format="%.4f")
    if args.doc:
        replace_block(args.doc, "simnet_transfer", table(df))
    print(f"wrote {len(df)} runs to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
