"""How the proposal oracle grows with the number of queries (docs/proposals.md, block "oracle-growth"):

    python analysis/oracle_growth_report.py docs/results/oracle_growth --doc docs/proposals.md

DIR/oracle_gap.csv (analysis/oracle_gap.py over the runs of experiments/toyscenes/oracle_growth.yaml)
holds one row per run; the number of queries is the ``-qN`` suffix of the method name. One table row
per query count: novel and base mIoU achieved, of the best single query mask (oracle) and of the
greedy union (mean ± std over seeds, n), beside MM-Former's own ablation (Pascal-5i oracle with 10 /
50 / 100 segmenters: 70.4 / 78.2 / 82.5; docs/proposals.md). If DIR/query_collapse.csv exists
(experiments/toyscenes/query_collapse.py) also the block "query-collapse": per model and inference
mode (eval / dropout left on), queries predicting a class per image, the mean correlation between
two queries' masks, and novel / all mIoU achieved and of the oracle.
"""
from __future__ import annotations

import argparse
import os
import re
import sys

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convergence_report import mean_std  # noqa: E402
from markdown_blocks import replace_block  # noqa: E402

COLUMNS = ("novel_achieved", "novel_oracle", "novel_union", "oracle_gap", "base_achieved", "base_oracle")


def queries_of(method: str) -> int:
    m = re.search(r"-q(\d+)$", method)
    if not m:
        raise ValueError(f"method {method!r} has no -qN suffix (the number of queries); "
                         "name the sweep's methods as experiments/toyscenes/oracle_growth.yaml does")
    return int(m.group(1))


def collapse_table(df: pd.DataFrame) -> str:
    lines = ["| model | queries | training dropout | iterations | inference | queries predicting a class / image "
             "| mask correlation between queries | novel achieved | novel oracle | all achieved | all oracle |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in df.to_dict("records"):
        lines.append(f"| {os.path.basename(str(r['run']).rstrip('/'))} | {r['queries']} | {r['dropout_cfg']:g} | "
                     f"{r['iterations']} | {r['inference']} | {r['object_queries_per_image']:.1f} | {r['mask_corr']:.2f} | "
                     f"{r['novel_achieved']:.1f} | {r['novel_oracle']:.1f} | {r['all_achieved']:.1f} | "
                     f"{r['all_oracle']:.1f} |")
    return "\n".join(lines) + "\n"


def build(folder: str, doc: str = "") -> str:
    gap = pd.read_csv(os.path.join(folder, "oracle_gap.csv"))
    gap["queries"] = gap["method"].map(queries_of)
    lines = ["| queries | n | novel achieved | novel oracle | novel union | gap (oracle - achieved) | base achieved "
             "| base oracle |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for q, g in gap.groupby("queries", sort=True):
        lines.append(f"| {q} | {len(g)} | " + " | ".join(mean_std(g[c]) for c in COLUMNS) + " |")
    text = "\n".join(lines) + "\n"
    if doc:
        replace_block(doc, "oracle-growth", text)
    collapse_csv = os.path.join(folder, "query_collapse.csv")
    if os.path.isfile(collapse_csv):
        collapse = collapse_table(pd.read_csv(collapse_csv))
        text += "\n" + collapse
        if doc:
            replace_block(doc, "query-collapse", collapse)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder")
    p.add_argument("--doc", default="", help="Markdown file whose 'oracle-growth' block to rewrite")
    args = p.parse_args(argv)
    print(build(args.folder, args.doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
