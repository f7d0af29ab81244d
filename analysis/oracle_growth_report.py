"""How the proposal oracle grows with the number of queries (docs/proposals.md, block "oracle-growth"):

    python analysis/oracle_growth_report.py docs/results/oracle_growth --doc docs/proposals.md

DIR/oracle_gap.csv (analysis/oracle_gap.py over the runs of experiments/toyscenes/oracle_growth.yaml)
holds one row per run; the number of queries is the ``-qN`` suffix of the method name. One table row
per query count: novel and base mIoU achieved, of the best single query mask (oracle) and of the
greedy union (mean ± std over seeds, n), beside MM-Former's own ablation (Pascal-5i oracle with 10 /
50 / 100 segmenters: 70.4 / 78.2 / 82.5; docs/proposals.md).
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
