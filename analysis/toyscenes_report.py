"""Build the tables, statistics and figures of docs/results-toyscenes.md from a finished sweep.

    python analysis/toyscenes_report.py runs/toyscenes_main/results.csv --out docs/results

Writes OUT/tables.md (Table 1, Table 2, significance, point loss) and OUT/*.png (per-method
bars), and prints the Markdown. Methods missing from the CSV are skipped.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys

import pandas as pd

from simformer.sweeps.plots import plot_bars, save_figure
from simformer.stats import compare, format_markdown
from simformer.utils.io import atomic_write_text

_spec = importlib.util.spec_from_file_location("paper_tables", os.path.join(os.path.dirname(__file__), "paper_tables.py"))
paper_tables = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(paper_tables)

TABLES = [
    ("table1", ["SimFormer", "SimFormer*", "CAM*", "FullyOracle"]),
    ("table2", ["Pr", "Pr+Pi", "Pr+Co", "SimFormer"]),
    ("table5", ["Pr+Co", "SelfPair", "SimFormer"]),
]
COMPARISONS = [  # (metric, baseline, methods)
    ("novel_miou", "Pr", ["Pr", "Pr+Pi", "Pr+Co", "SimFormer"]),
    ("novel_miou", "CAM*", ["CAM*", "SimFormer", "SimFormer*"]),
    ("novel_miou", "Pr+Co", ["Pr+Co", "SelfPair", "SimFormer"]),
    ("novel_miou", "SimFormer", ["SimFormer", "SimFormer+PointLoss"]),
    ("base_miou", "SimFormer", ["SimFormer", "SimFormer+PointLoss"]),
]


def build(results: str, out: str) -> str:
    df = pd.read_csv(results)
    present = set(df["method"])
    parts = []
    for table, methods in TABLES:
        keep = [m for m in methods if m in present]
        if keep:
            for metric in ("novel_miou", "base_miou", "hm"):
                text = paper_tables.render(results, table, metric, keep)
                if metric != "novel_miou":  # the paper block only lists novel mIoU
                    text = text.split("\nPaper (")[0]
                parts.append(text)
    for metric, baseline, methods in COMPARISONS:
        sub = df[df["method"].isin(methods)]
        if baseline not in set(sub["method"]) or sub["method"].nunique() < 2:
            continue
        table = compare(sub, metric=metric, baseline=baseline, test="welch")
        parts.append(f"### {metric}: each method vs {baseline} (Welch t-test, two-sided, unpaired, ddof=1)\n\n"
                     + format_markdown(table) + "\n")
    os.makedirs(out, exist_ok=True)
    for metric in ("novel_miou", "base_miou"):
        result = plot_bars(df, metric=metric, title=f"ToyScenes split1: {metric} (mean ± 95% CI over seeds)")
        save_figure(result.figure, os.path.join(out, f"bars_{metric}.png"))
    text = "\n".join(parts)
    atomic_write_text(os.path.join(out, "tables.md"), text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results")
    p.add_argument("--out", default="docs/results")
    args = p.parse_args(argv)
    print(build(args.results, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
