"""Tables and a figure of the real-photograph check (experiments/photos/camvid.yaml, docs/photos.md):

    python analysis/photos_report.py docs/results/photos_camvid --doc docs/photos.md \
        --reference 'per-pixel Gaussian=docs/results/photos_camvid/pixel_classifier/seed*/metrics.json'

Reads DIR/results.csv, DIR/curves.csv and each run's metrics.json / run_info.json under DIR (what
analysis/collect_runs.py copies) and writes, as the generated block "camvid" of --doc:

* the summary: per method n and mean ± std (ddof 1) of novel, base, all-class mIoU and HM, the
  novel mIoU as a share of FullyOracle's and each method's training step and run time; then the
  ``--reference NAME=GLOB`` rows (metrics.json files that are not runs of the sweep, e.g. the
  non-deep per-pixel classifier of experiments/toyscenes/pixel_classifier.py);
* the tests: SimFormer against every other method (Welch t-test, two-sided, unpaired, ddof 1;
  Holm over the methods compared, per metric) on novel and base mIoU;
* per class: test IoU mean ± std per method, each class marked base or novel by the runs' split;
* with DIR/oracle_gap.csv (analysis/oracle_gap.py), the oracle gap: novel mIoU achieved against the
  best single query mask per class (docs/proposals.md).

DIR/points_novel_miou.png / points_miou.png: methods on the x axis, one dot per seed, n under each bar.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convergence_report import mean_std  # noqa: E402
from markdown_blocks import replace_block  # noqa: E402
from retraining_blocks import read_json  # noqa: E402
from toyscenes_report import oracle_gap_table, read_references  # noqa: E402

from simformer.stats import StatsWarning, compare, format_p, holm
from simformer.sweeps.plots import plot_bars, save_figure

BASELINE = "SimFormer"
METRICS = (("novel_miou", "novel mIoU"), ("base_miou", "base mIoU"), ("miou", "all mIoU"), ("hm", "HM"))
TESTED = ("novel_miou", "base_miou")
TEST = "Welch t-test, two-sided, unpaired, ddof 1; Holm over the methods compared with SimFormer, per metric"


def run_times(curves: pd.DataFrame, max_iter: dict) -> pd.DataFrame:
    """Per method: the median over its runs of each run's median logged step time (s), and that
    step time x the run's iterations in minutes (training only, evaluation excluded)."""
    steps = curves[curves["series"] == "time_per_iter"].groupby(["method", "seed"])["value"].median()
    rows = [dict(method=m, step=s, minutes=s * max_iter[m] / 60.0) for (m, _), s in steps.items()]
    return pd.DataFrame(rows, columns=["method", "step", "minutes"]).groupby("method").median()


def summary_table(df: pd.DataFrame, times: pd.DataFrame, references: pd.DataFrame) -> str:
    oracle = df.loc[df["method"] == "FullyOracle", "novel_miou"].mean()
    refs = references.assign(method=references["method"] + " (reference, not deep)") if len(references) else None
    lines = ["| method | n | " + " | ".join(label for _, label in METRICS) + " | novel / FullyOracle | step (s) "
             "| training (min) |", "|---|---:|" + "---:|" * (len(METRICS) + 3)]
    for method, g in pd.concat([df, refs]).groupby("method", sort=False):
        share = f"{100 * g['novel_miou'].mean() / oracle:.0f} %" if pd.notna(oracle) else "n/a"
        step = f"{times.at[method, 'step']:.2f} | {times.at[method, 'minutes']:.1f}" if method in times.index \
            else "n/a | n/a"
        lines.append(f"| {method} | {len(g)} | " + " | ".join(mean_std(g[m]) for m, _ in METRICS)
                     + f" | {share} | {step} |")
    return "\n".join(lines) + ("\n\nmean ± std over seeds (ddof 1), percent, CamVid test (233 photos); step: "
                               "median over a method's runs of each run's median logged step time (one thread "
                               "a run, two runs side by side); training: step x iterations.\n")


def tests_table(df: pd.DataFrame) -> str:
    lines = ["| metric | method | n | mean | SimFormer mean | diff | 95 % CI | p (Welch) | p (Holm) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for metric in TESTED:
        with warnings.catch_warnings():  # a method with one run so far: its p is n/a
            warnings.simplefilter("ignore", StatsWarning)
            table = compare(df, metric=metric, baseline=BASELINE, test="welch")
        others = table[table["method"] != BASELINE].copy()
        others["p_holm"] = holm(others["p_value"].to_numpy(float))
        for r in others.itertuples():
            ci = "" if pd.isna(r.ci_low) else f"[{r.ci_low:+.1f}, {r.ci_high:+.1f}]"
            lines.append(f"| {metric} | {r.method} | {r.n} vs {r.n_baseline} | {r.mean:.1f} | {r.baseline_mean:.1f} "
                         f"| {r.diff:+.1f} | {ci} | {format_p(r.p_value)} | {format_p(r.p_holm)} |")
    return "\n".join(lines) + f"\n\n{TEST}.\n"


def per_class_table(df: pd.DataFrame, directory: str) -> str:
    iou, split = {}, None
    for method, g in df.groupby("method", sort=False):
        rows = []
        for run_dir in g["run_dir"]:
            rows.append(read_json(os.path.join(directory, run_dir, "metrics.json"))["per_class_iou"])
            split = split or read_json(os.path.join(directory, run_dir, "run_info.json"))["split"]
        iou[method] = pd.DataFrame(rows)
    names = split["class_names"]
    novel = {names[i] for i in split["novel"]}
    lines = ["| class | group | " + " | ".join(f"{m} (n = {len(v)})" for m, v in iou.items()) + " |",
             "|---|---|" + "---:|" * len(iou)]
    for c in names:
        lines.append(f"| {c} | {'novel' if c in novel else 'base'} | "
                     + " | ".join(mean_std(v[c]) for v in iou.values()) + " |")
    return "\n".join(lines) + "\n\ntest IoU in percent, mean ± std over seeds (ddof 1).\n"


def build(directory: str, doc: str = "", references=()) -> str:
    df = pd.read_csv(os.path.join(directory, "results.csv"))
    curves = pd.read_csv(os.path.join(directory, "curves.csv"))
    max_iter = {m: int(curves.loc[curves["method"] == m, "iteration"].max()) for m in df["method"].unique()}
    text = "\n".join(["### Summary\n", summary_table(df, run_times(curves, max_iter), read_references(references)),
                      "### SimFormer against each method\n", tests_table(df),
                      "### Per class\n", per_class_table(df, directory)])
    gap = os.path.join(directory, "oracle_gap.csv")
    if os.path.isfile(gap):
        text += "\n" + oracle_gap_table(pd.read_csv(gap), list(pd.unique(df["method"])))
    for metric, label in (("novel_miou", "novel"), ("miou", "all-class")):
        result = plot_bars(df, metric=metric, title=f"CamVid test: {label} mIoU (%), one dot per seed")
        save_figure(result.figure, os.path.join(directory, f"points_{metric}.png"))
    if doc:
        replace_block(doc, "camvid", text)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", help="collected results folder (analysis/collect_runs.py --to)")
    parser.add_argument("--doc", default="", help="Markdown file whose 'camvid' block is replaced")
    parser.add_argument("--reference", action="append", metavar="NAME=GLOB",
                        help="summary rows from metrics.json files outside the sweep (repeatable)")
    args = parser.parse_args(argv)
    print(build(args.directory, args.doc, args.reference or ()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
