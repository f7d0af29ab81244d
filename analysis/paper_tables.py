"""Turn a finished sweep's results.csv into the paper's tables, beside the paper's numbers.

    python analysis/paper_tables.py runs/toyscenes_main/results.csv --table table2 --out docs/tables
    python analysis/paper_tables.py runs/paper_coco_stuff_10k/results.csv --table table1_main

Tables (keys of simformer/resources/paper_results.json): table1_main, table2_modules_coco,
table4_points_J_coco, table5_pairing_coco, table6_more_novel_coco. For each method x split the
measured mean ± std (over seeds) of the metric is printed next to the paper's value; methods map
to the paper's row names through METHOD_ROWS. For Table 1 the ratio novel mIoU / FullyOracle is
reported too (the paper's SimFormer reaches 77-89 % of FullyOracle), which is the comparison
that transfers across datasets of different difficulty.
"""
from __future__ import annotations

import argparse
import json
import sys
from importlib import resources

import numpy as np
import pandas as pd

# Our method names (sweep files) -> the paper's row names.
METHOD_ROWS = {
    "table1_main": {"SimFormer": "SimFormer", "SimFormer*": "SimFormer*", "FullyOracle": "FullyOracle",
                    "CAM*": None},
    "table2_modules_coco": {"Pr": "proposal-pixel only (Pr)", "Pr+Pi": "Pr + pixel-pixel (Pi)",
                            "Pr+Co": "Pr + complementary (Co)", "SimFormer": "Pr + Pi + Co"},
    "table5_pairing_coco": {"Pr+Co": "basic model (no pixel-pixel transfer)",
                            "SelfPair": "self-pair (reference = the image itself)",
                            "SimFormer": "cross-pair (full model)"},
    "table6_more_novel_coco": {"SimFormer": "SimFormer", "SimFormer*": "SimFormer*", "FullyOracle": "FullyOracle"},
}
ALIASES = {"table1": "table1_main", "table2": "table2_modules_coco", "table4": "table4_points_J_coco",
           "table5": "table5_pairing_coco", "table6": "table6_more_novel_coco"}


def paper_results() -> dict:
    return json.loads(resources.files("simformer.resources").joinpath("paper_results.json").read_text())


def mean_std_table(df: pd.DataFrame, metric: str, row: str = "method", col: str = "split") -> pd.DataFrame:
    """Cells 'mean ± std (n)' of ``metric`` per row x col (std with ddof=1; '-' for n=1)."""
    g = df.groupby([row, col])[metric].agg(["mean", "std", "count"]).reset_index()

    def cell(r):
        std = "" if r["count"] < 2 or np.isnan(r["std"]) else f" ± {r['std']:.1f}"
        return f"{r['mean']:.1f}{std} (n={int(r['count'])})"

    g["cell"] = g.apply(cell, axis=1)
    order_rows = list(dict.fromkeys(df[row]))
    order_cols = list(dict.fromkeys(df[col]))
    return g.pivot(index=row, columns=col, values="cell").reindex(index=order_rows, columns=order_cols)


def oracle_ratio(df: pd.DataFrame, metric: str = "novel_miou", oracle: str = "FullyOracle") -> pd.DataFrame:
    """Per method x split: mean(metric) / mean(oracle's metric), in percent."""
    means = df.groupby(["method", "split"])[metric].mean().unstack()
    if oracle not in means.index:
        return pd.DataFrame()
    return (100.0 * means / means.loc[oracle]).round(1)


def paper_block(table: str, methods) -> pd.DataFrame:
    data = paper_results()[table]
    rows = {}
    mapping = METHOD_ROWS.get(table, {})
    for m in methods:
        paper_row = mapping.get(m, m)
        if paper_row and paper_row in data.get("rows", {}):
            rows[m] = data["rows"][paper_row]
    return pd.DataFrame.from_dict(rows, orient="index", columns=data["columns"]) if rows else pd.DataFrame()


def to_markdown(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(none)\n"
    cols = [str(c) for c in frame.columns]
    lines = ["| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for idx, r in frame.iterrows():
        lines.append(f"| {idx} | " + " | ".join("" if pd.isna(v) else str(v) for v in r.values) + " |")
    return "\n".join(lines) + "\n"


def render(results_csv: str, table: str, metric: str = "novel_miou", methods=None) -> str:
    table = ALIASES.get(table, table)
    df = pd.read_csv(results_csv)
    if methods:
        df = df[df["method"].isin(methods)]
    if df.empty:
        raise ValueError(f"{results_csv}: no rows for methods {methods}")
    out = [f"### {table}: {metric} (%), measured (mean ± std over seeds)\n", to_markdown(mean_std_table(df, metric))]
    if table == "table1_main" and metric == "novel_miou":
        ratio = oracle_ratio(df, metric)
        if not ratio.empty:
            out += [f"\n{metric} as % of FullyOracle (paper: SimFormer 77-89 %, SimFormer* 82-93 %):\n", to_markdown(ratio)]
    paper = paper_block(table, list(dict.fromkeys(df["method"])))
    if not paper.empty:
        out += ["\nPaper (COCO-Stuff-10K / ADE20K, ResNet-50; novel mIoU %):\n", to_markdown(paper)]
    return "".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", help="results.csv written by `simformer sweep`")
    p.add_argument("--table", required=True, help=f"one of {sorted(ALIASES)} or a paper_results.json key")
    p.add_argument("--metric", default="novel_miou")
    p.add_argument("--methods", help="comma-separated subset of methods, in this order")
    p.add_argument("--out", help="write the Markdown to this file as well")
    args = p.parse_args(argv)
    text = render(args.results, args.table, args.metric, args.methods.split(",") if args.methods else None)
    print(text)
    if args.out:
        from simformer.utils.io import atomic_write_text

        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
