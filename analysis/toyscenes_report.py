"""Build the tables, statistics and figures of docs/results-toyscenes.md from a results CSV.

    python analysis/toyscenes_report.py docs/results/toyscenes_main/results.csv \
        --out docs/results/toyscenes_main --doc docs/results-toyscenes.md

Writes OUT/tables.md (Table 1, Table 2 and its ordering, Table 5, significance, point loss),
OUT/bars_*.png and, with --doc, the generated "summary" (mean ± std, n, per method) and
"table2_order" (the paper's Table 2 ordering, pair by pair, with Welch tests) and "retraining"
(SimFormer* against its stage 1, paired by seed, with the pseudo-label quality;
analysis/retraining_blocks.py) blocks of that document. Methods
missing from the CSV are skipped. With ``--oracle-gap CSV`` (from analysis/oracle_gap.py) the
"oracle gap" table (novel achieved vs best-query-mask oracle, docs/proposals.md) is added to
tables.md and, with --doc, written as the generated "oracle_gap" block. A CSV of the Fig. 6 sweeps
(experiments/toyscenes/fig6_*.yaml: a grid column alpha, beta or gamma) gives the sensitivity table,
OUT/fig6_<param>.png (log x, every run a dot) and, with --doc, the "fig6_<param>" block; such runs
are left out of the summary and the bars. When the curves.csv beside the CSV shows FullyOracle or
SimFormer trained at several budgets (methods X and X@B), the "budget" block (each budget's
results, and each model's change from the recipe's budget paired by seed) and OUT/budget_*.png
follow (analysis/axis_blocks.py). When the runs were trained on more than one CPU (their
run_info.json), the "machines" block sets each method's machines side by side and redoes the
comparisons within one machine; ``--machine-runs NAME=GLOB`` adds runs of other sweeps to it
(analysis/machine_blocks.py).
"""
from __future__ import annotations

import argparse
import os
import sys

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convergence_report import mean_std  # noqa: E402
from axis_blocks import grid_params, split_budget, write_axis_blocks  # noqa: E402
from machine_blocks import machine_block, named_files, read_extra_runs  # noqa: E402
from retraining_blocks import read_json, retraining_block  # noqa: E402
from markdown_blocks import replace_block  # noqa: E402
import paper_tables  # noqa: E402

from simformer.sweeps.plots import plot_bars, save_figure
from simformer.stats import compare, format_markdown, format_p, holm
from simformer.utils.io import atomic_write_text


TABLES = [
    ("table1", ["SimFormer", "SimFormer*", "CAM*", "FullyOracle"]),
    ("table2", ["Pr", "Pr+Pi", "Pr+Co", "SimFormer"]),
    ("table5", ["Pr+Co", "SelfPair", "SimFormer"]),
]
# (metric, baseline, methods); the Table 2 and Table 5 comparisons are repeated at every budget
# the ablations ran at (``Pr@1200`` vs ``SimFormer@1200``, ...).
BUDGET_COMPARISONS = [
    ("novel_miou", "Pr", ["Pr", "Pr+Pi", "Pr+Co", "SimFormer"]),
    ("novel_miou", "Pr+Co", ["Pr+Co", "SelfPair", "SimFormer"]),
    # Table 5's question itself: cross-image pairs (SimFormer) against self pairs
    ("novel_miou", "SimFormer", ["SimFormer", "SelfPair"]),
    ("base_miou", "SimFormer", ["SimFormer", "SelfPair"]),
]
COMPARISONS = [
    ("novel_miou", "CAM*", ["CAM*", "SimFormer", "SimFormer*"]),
    ("novel_miou", "SimFormer", ["SimFormer", "SimFormer+PointLoss"]),
    ("base_miou", "SimFormer", ["SimFormer", "SimFormer+PointLoss"]),
]


SUMMARY_METRICS = ("novel_miou", "base_miou", "miou", "hm")
# The paper's Table 2 ordering as (lower, higher) pairs: each module alone beats Pr, both together
# beat each alone.
TABLE2_ORDER = [("Pr", "Pr+Pi"), ("Pr", "Pr+Co"), ("Pr+Pi", "SimFormer"), ("Pr+Co", "SimFormer")]


def read_references(specs) -> pd.DataFrame:
    """``NAME=GLOB`` specs -> one row per metrics.json matched (method = NAME): reference rows that
    are not runs of the sweep, e.g. the non-deep per-pixel classifier."""
    return pd.DataFrame([dict(method=name, **{m: read_json(path)[m] for m in SUMMARY_METRICS})
                         for name, path in named_files(specs, "--reference")])


def summary_table(df: pd.DataFrame, references: pd.DataFrame = None, recipe_iterations=()) -> str:
    """One row per method: mean ± std (ddof 1) and n of each metric, novel relative to FullyOracle
    at the same budget (a method ``X@B`` against ``FullyOracle@B``); then the ``references`` rows
    (same columns), marked as references. ``recipe_iterations`` (from :func:`recipe_iterations`)
    goes into the footnote."""
    split = split_budget(df["method"])
    recipe = split["budget"].fillna(0.0)  # 0: the recipe's budget
    oracle = df[split["model"] == "FullyOracle"].groupby(recipe)["novel_miou"].mean()
    lines = ["| method | n | novel mIoU | base mIoU | all mIoU | HM | novel / FullyOracle |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    refs = references if references is not None else pd.DataFrame(columns=["method"])
    both = pd.concat([df.assign(ref=False, budget=recipe), refs.assign(ref=True, budget=0.0)], ignore_index=True)
    for (method, is_ref, budget), g in both.groupby(["method", "ref", "budget"], sort=False):
        same = oracle.get(budget)
        method = f"{method} (reference, not deep)" if is_ref else method
        cells = [mean_std(g[m]) for m in SUMMARY_METRICS]
        rel = f"{100 * g['novel_miou'].mean() / same:.0f} %" if same else "n/a"
        lines.append(f"| {method} | {len(g)} | " + " | ".join(cells) + f" | {rel} |")
    recipe_text = (" / ".join(str(i) for i in recipe_iterations) + " iterations (the last iteration their runs "
                   "logged)" if len(recipe_iterations) else "configs/toyscenes/Base-ToyScenes.yaml's SOLVER.MAX_ITER")
    return "\n".join(lines) + ("\n\nmean ± std over seeds (ddof 1), percent, ToyScenes val. A method `X` trains "
                               f"the recipe's budget, {recipe_text}; a method `X@B` trains B iterations and is set "
                               "against FullyOracle@B (for a re-training row, experiments/toyscenes/main.yaml says "
                               "which stages B covers).\n")


def recipe_iterations(df: pd.DataFrame, curves: pd.DataFrame) -> list:
    """The distinct last logged iterations in ``curves`` (a curves.csv) of ``df``'s runs whose method
    has no ``@B``: the recipe's budget as trained (one value when the runs agree)."""
    if not {"run", "iteration"} <= set(curves.columns) or "run" not in df.columns:
        return []
    runs = df.loc[split_budget(df["method"])["budget"].isna(), "run"]
    last = curves[curves["run"].isin(runs)].groupby("run")["iteration"].max()
    return sorted(int(i) for i in last.unique())


def oracle_gap_table(gap: pd.DataFrame, order=()) -> str:
    """One row per method: novel mIoU achieved, of the best single query mask (oracle), of the greedy
    union, and the gap oracle - achieved (mean ± std over seeds); methods in ``order`` first."""
    missing = [c for c in ("method", "novel_achieved", "novel_oracle", "novel_union", "oracle_gap")
               if c not in gap.columns]
    if missing:
        raise ValueError(f"oracle-gap CSV lacks the columns {missing}; write it with analysis/oracle_gap.py")
    methods = [m for m in order if m in set(gap["method"])]
    methods += [m for m in pd.unique(gap["method"]) if m not in methods]
    lines = ["### Oracle gap (novel classes): masks or class assignment?\n",
             "| method | n | achieved | oracle (best query mask) | greedy union | gap (oracle - achieved) |",
             "|---|---:|---:|---:|---:|---:|"]
    for method in methods:
        g = gap[gap["method"] == method]
        cells = [mean_std(g[c]) for c in ("novel_achieved", "novel_oracle", "novel_union", "oracle_gap")]
        lines.append(f"| {method} | {len(g)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + ("\n\nnovel mIoU, percent, mean ± std over seeds (ddof 1). A large gap: the masks are "
                               "there, the class assignment misses them; a small gap with a low oracle: the masks "
                               "themselves are poor (docs/proposals.md).\n")


def by_budget(df: pd.DataFrame) -> pd.DataFrame:
    """``df``'s rows grouped by method in reading order: the recipe's methods (no ``@B``) first, then
    each budget B ascending; within a budget, methods in the order their base name (``X`` of
    ``X@B``) first appears in ``df``. Stable within a method."""
    split = split_budget(df["method"]).reset_index(drop=True)
    first_seen = {name: i for i, name in reversed(list(enumerate(split["model"])))}
    key = pd.DataFrame({"budget": split["budget"].fillna(0.0), "base": split["model"].map(first_seen),
                        "row": range(len(df))})
    return df.iloc[key.sort_values(["budget", "base", "row"]).index].reset_index(drop=True)


def budget_suffixes(methods, first: str = "Pr", last: str = "SimFormer") -> list:
    """The budgets at which both ends of the Table 2 ordering ran: "" (the recipe) and every "@B"
    such that ``first@B`` and ``last@B`` are methods, sorted by B."""
    names = set(methods)
    methods = pd.Series(sorted(names), dtype=object)
    split = split_budget(methods)
    at = split[(split["model"] == last) & split["budget"].notna()].sort_values("budget")
    found = [m[len(last):] for m in methods[at.index] if first + m[len(last):] in names]
    return ([""] if {first, last} <= names else []) + found


def ordering_table(df: pd.DataFrame, pairs=TABLE2_ORDER, metric: str = "novel_miou",
                   paper_table: str = "table2_modules_coco", paper_split: str = "split1",
                   budget: str = "") -> str:
    """Each (lower, higher) pair of the paper's ordering: measured means, difference higher - lower
    with its 95 % CI, Welch p (two-sided, unpaired, ddof 1), Holm across the pairs tested, and the
    paper's difference on ``paper_split``. Pairs with a missing method are listed as not run.
    ``budget`` ("@1200") compares the methods trained at that budget (``Pr@1200`` ...), each a family
    of its own for Holm."""
    paper = paper_tables.paper_block(paper_table, sorted({m for pair in pairs for m in pair}))
    rows, pvals = [], []
    for paper_low, paper_high in pairs:
        low, high = paper_low + budget, paper_high + budget
        sub = df[df["method"].isin([low, high])]
        if sub["method"].nunique() < 2:
            rows.append((low, high, None))
            continue
        r = compare(sub, metric=metric, baseline=low, test="welch").set_index("method").loc[high]
        rows.append((low, high, r))
        pvals.append(float(r["p_value"]))
    adjusted = iter(holm(pvals)) if pvals else iter(())
    at = f", {budget[1:]} iterations" if budget else ""
    lines = [f"### Table 2 ordering ({metric}{at}): does each pair keep the paper's order?\n",
             "| lower | higher | n | lower mean | higher mean | diff (higher - lower) | 95 % CI | p (Welch) "
             "| p (Holm) | order as in the paper | paper diff (COCO " + paper_split + ") |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for (low, high, r), (paper_low, paper_high) in zip(rows, pairs):
        p_diff = (f"{paper.loc[paper_high, paper_split] - paper.loc[paper_low, paper_split]:+.1f}"
                  if {paper_low, paper_high} <= set(paper.index) else "n/a")
        if r is None:
            lines.append(f"| {low} | {high} | | | | | | | | not run | {p_diff} |")
            continue
        p_holm = next(adjusted)
        order = ("yes" if r["diff"] > 0 else "no") + (" (significant)" if p_holm < 0.05 else "")
        ci = "" if pd.isna(r["ci_low"]) else f"[{r['ci_low']:+.1f}, {r['ci_high']:+.1f}]"
        lines.append(f"| {low} | {high} | {int(r['n_baseline'])} vs {int(r['n'])} | {r['baseline_mean']:.1f} "
                     f"| {r['mean']:.1f} | {r['diff']:+.1f} | {ci} | {format_p(r['p_value'])} | {format_p(p_holm)} "
                     f"| {order} | {p_diff} |")
    return "\n".join(lines) + ("\n\npercent, ToyScenes val; Welch t-test, two-sided, unpaired, ddof 1; Holm "
                               "across the pairs tested; 'significant': Holm p < 0.05.\n")


def build(results: str, out: str, doc: str = "", oracle_gap: str = "", references=(), machine_runs=()) -> str:
    df = by_budget(pd.read_csv(results))
    refs = read_references(references)
    extra = read_extra_runs(machine_runs)
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
    budgets = budget_suffixes(present)
    comparisons = [(metric, baseline + b, [m + b for m in methods])
                   for b in budgets or [""] for metric, baseline, methods in BUDGET_COMPARISONS] + COMPARISONS
    for metric, baseline, methods in comparisons:
        sub = df[df["method"].isin(methods)]
        if baseline not in set(sub["method"]) or sub["method"].nunique() < 2:
            continue
        table = compare(sub, metric=metric, baseline=baseline, test="welch")
        parts.append(f"### {metric}: each method vs {baseline} (Welch t-test, two-sided, unpaired, ddof=1)\n\n"
                     + format_markdown(table) + "\n")
    os.makedirs(out, exist_ok=True)
    grid = grid_params(df)
    plain = df[df[grid].isna().all(axis=1)] if grid else df  # runs at the defaults: bars and summary
    for metric in ("novel_miou", "base_miou") if len(plain) else ():
        result = plot_bars(plain, metric=metric, title=f"ToyScenes: {metric} per method")
        save_figure(result.figure, os.path.join(out, f"bars_{metric}.png"))
    order_text = "\n".join(ordering_table(df, budget=b) for b in budgets)
    if order_text:
        parts.append(order_text)
    results_dir = os.path.dirname(os.path.abspath(results))
    retrain_text = retraining_block(df, results_dir)
    if retrain_text:
        parts.append(retrain_text)
    axes = write_axis_blocks(df, results_dir, out)
    parts += list(axes.values())
    gap_text = oracle_gap_table(pd.read_csv(oracle_gap), pd.unique(df["method"])) if oracle_gap else ""
    if gap_text:
        parts.append(gap_text)
    machines_text = machine_block(df, results_dir, extra)
    if machines_text:
        parts.append(machines_text)
    text = "\n".join(parts)
    atomic_write_text(os.path.join(out, "tables.md"), text)
    if doc:
        if len(plain):
            curves_csv = os.path.join(results_dir, "curves.csv")
            curves = pd.read_csv(curves_csv) if os.path.isfile(curves_csv) else pd.DataFrame()
            replace_block(doc, "summary", summary_table(plain, refs, recipe_iterations(plain, curves)))
        if order_text:
            replace_block(doc, "table2_order", order_text)
        if retrain_text:
            replace_block(doc, "retraining", retrain_text)
        if gap_text:
            replace_block(doc, "oracle_gap", gap_text)
        if machines_text:
            replace_block(doc, "machines", machines_text)
        for name, block in axes.items():
            replace_block(doc, name, block)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results")
    p.add_argument("--out", default="docs/results")
    p.add_argument("--doc", default="", help="Markdown file whose 'summary' block to rewrite")
    p.add_argument("--oracle-gap", default="", metavar="CSV",
                   help="CSV of analysis/oracle_gap.py: adds the oracle gap table (and the doc's 'oracle_gap' block)")
    p.add_argument("--reference", action="append", default=[], metavar="NAME=GLOB",
                   help="reference rows for the summary from metrics.json files, e.g. "
                        "'per-pixel Gaussian=docs/results/pixel_classifier/seed[0-9]/metrics.json'")
    p.add_argument("--machine-runs", action="append", default=[], metavar="NAME=GLOB",
                   help="runs of other sweeps for the 'machines' block (analysis/machine_blocks.py), e.g. "
                        "'SimFormer=docs/results/toyscenes_label_precision/runs/SimFormer[*]/split1/seed*/stage1_metrics.json'")
    args = p.parse_args(argv)
    print(build(args.results, args.out, args.doc, args.oracle_gap, args.reference, args.machine_runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
