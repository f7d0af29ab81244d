"""Tables of the few-shot results (docs/fewshot-results.md) from the committed results CSV:

    python analysis/fewshot_report.py docs/results/fewshot/results.csv --doc docs/fewshot-results.md

Reads the CSV written by experiments/toyscenes/fewshot.py (one row per method x shots x seed;
novel_miou = the fold's mIoU, fbiou) and docs/results/fewshot/paper_figures.csv, and writes the
generated blocks "fewshot-table" (mean ± std, n, per method and shot count), "fewshot-stats"
(Welch tests: mm-former vs mm-match, every single-proposal method vs oracle, GF-SAM ablations vs
GF-SAM) and "fewshot-paper" (the papers' figures, for scale only).
"""
from __future__ import annotations

import argparse
import os
import sys

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from markdown_blocks import replace_block  # noqa: E402

from simformer.stats import compare, format_markdown  # noqa: E402

PAPER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "results", "fewshot",
                     "paper_figures.csv")


def mean_std(v: pd.Series) -> str:
    v = v.dropna()
    if len(v) == 0:
        return "–"
    if len(v) == 1:
        return f"{v.iloc[0]:.1f} (n=1)"
    return f"{v.mean():.1f} ± {v.std(ddof=1):.1f} (n={len(v)})"


def main_table(df: pd.DataFrame) -> str:
    splits = list(dict.fromkeys(df["split"]))
    lines = ["| method | " + " | ".join(f"{s} mIoU" for s in splits) + " | " + " | ".join(f"{s} FB-IoU" for s in splits)
             + " |", "|---|" + "---:|" * (2 * len(splits))]
    for method, g in df.groupby("method", sort=False):
        cells = [mean_std(g[g["split"] == s]["novel_miou"]) for s in splits]
        cells += [mean_std(g[g["split"] == s]["fbiou"]) for s in splits]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def stats_blocks(df: pd.DataFrame) -> str:
    parts = []
    for baseline, methods in (("mm-match", ["mm-match", "mm-former"]),
                              ("oracle", ["oracle", "prototype", "mm-match", "mm-former", "gfsam"]),
                              ("gfsam", ["gfsam"] + [m for m in dict.fromkeys(df["method"]) if m.startswith("gfsam (")])):
        sub = df[df["method"].isin(methods)]
        if sub["method"].nunique() < 2:
            continue
        parts.append(f"Against **{baseline}**:\n\n" + format_markdown(compare(sub, metric="novel_miou", baseline=baseline)))
    return "\n".join(parts)


def paper_table() -> str:
    paper = pd.read_csv(PAPER)
    lines = ["| paper | method | benchmark | setting | mIoU | where |", "|---|---|---|---|---:|---|"]
    lines += [f"| {r.paper} | {r.method} | {r.benchmark} | {r.setting} | {r.miou:.1f} | {r.source} |"
              for r in paper.itertuples()]
    return "\n".join(lines)


def build(path: str, doc: str) -> str:
    df = pd.read_csv(path)
    table, stats, paper = main_table(df), stats_blocks(df), paper_table()
    if doc:
        replace_block(doc, "fewshot-table", table)
        replace_block(doc, "fewshot-stats", stats)
        replace_block(doc, "fewshot-paper", paper)
    return "\n\n".join([table, stats, paper])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results")
    p.add_argument("--doc", default="", help="Markdown file whose generated blocks to rewrite")
    args = p.parse_args(argv)
    print(build(args.results, args.doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
