"""Tables and curves of the convergence study (docs/convergence.md) from committed files:

    python analysis/convergence_report.py docs/results/convergence --doc docs/convergence.md

Reads DIR/results.csv and DIR/curves.csv (written by analysis/collect_runs.py), writes
DIR/curves_miou.png (all-class val mIoU vs iteration), DIR/curves_novel_miou.png (novel-class,
when logged), DIR/curves_loss.png (training loss vs iteration) and the generated block "convergence-table" of the document (``--block NAME`` for
another block of the same document, e.g. a second sweep's table).
"""
from __future__ import annotations

import argparse
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from markdown_blocks import replace_block  # noqa: E402

METRICS = [("miou", "all"), ("base_miou", "base"), ("novel_miou", "novel"), ("hm", "HM")]


def mean_std(values: pd.Series) -> str:
    v = values.dropna()
    if len(v) == 0:
        return "n/a"
    if len(v) == 1:
        return f"{v.iloc[0]:.1f}"
    return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}"


def final_table(results: pd.DataFrame) -> str:
    lines = ["| run | n | " + " | ".join(f"{label} mIoU (%)" for _, label in METRICS) + " |",
             "|---|---:|" + "---:|" * len(METRICS)]
    for method, grp in results.groupby("method", sort=False):
        cells = [mean_std(grp[m]) for m, _ in METRICS]
        lines.append(f"| {method} | {len(grp)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curve_table(curves: pd.DataFrame, series: str = "eval/miou") -> str:
    """Seeds and mean over seeds of ``series`` at each evaluated iteration, one row per method ("" if
    never logged), and each run's change over its own last evaluation period (its last value minus
    the one before), mean ± std over the method's runs: is the curve still rising at the end?"""
    ev = curves[curves["series"] == series].dropna(subset=["value"])
    if ev.empty:
        return ""
    pivot = ev.groupby(["method", "iteration"])["value"].mean().unstack("iteration")
    seeds = ev.groupby("method")["seed"].nunique()
    run = ["run"] if "run" in ev.columns else [c for c in ("split", "seed") if c in ev.columns]  # older CSVs
    last = (ev.sort_values("iteration").groupby(["method", *run])["value"]
            .apply(lambda v: v.iloc[-1] - v.iloc[-2] if len(v) > 1 else float("nan")))
    its = list(pivot.columns)
    lines = ["| run | n | " + " | ".join(f"it {i}" for i in its) + " | last period: change |",
             "|---|---:|" + "---:|" * (len(its) + 1)]
    for method, row in pivot.iterrows():
        lines.append(f"| {method} | {seeds[method]} | "
                     + " | ".join("" if pd.isna(v) else f"{v:.1f}" for v in row) + f" | {mean_std(last[method])} |")
    return "\n".join(lines)


def plot_curves(curves: pd.DataFrame, series: str, ylabel: str, path: str, smooth: int = 1) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    sub = curves[curves["series"] == series]
    for method, grp in sub.groupby("method", sort=False):
        for k, (seed, g) in enumerate(grp.groupby("seed")):
            g = g.sort_values("iteration")
            y = g["value"].rolling(smooth, min_periods=1).mean()
            ax.plot(g["iteration"], y, marker="o" if smooth == 1 else None, ms=3,
                    label=f"{method} (n={grp['seed'].nunique()})" if k == 0 else None)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _csv_table(path: str, caption: str, header: str, row) -> str:
    """``caption`` and a Markdown table of the CSV at ``path`` (one ``row(record)`` line per row);
    "" when the file does not exist."""
    if not os.path.isfile(path):
        return ""
    lines = [header, "|" + "|".join("---" if i == 0 else "---:" for i in range(header.count("|") - 1)) + "|"]
    lines += [row(r) for _, r in pd.read_csv(path).iterrows()]
    return f"\n{caption}:\n\n" + "\n".join(lines) + "\n"


def probe_tables(folder: str) -> str:
    """The fixed-batch probes (experiments/toyscenes/fixed_batch_probe.py), when their CSVs exist."""
    return (
        _csv_table(os.path.join(folder, "clip_probe.csv"),
                   "Gradient clipping on one fixed batch (suspect 4; FullyOracle, one seed)",
                   "| setting | images | steps | total loss at the last step | parameters with sqrt(v) < 10 eps (%) |",
                   lambda r: f"| {r['setting']} | {r['images']} | {r['steps']} | {r['total_loss']:.2f} | "
                             f"{r['damped_share_pct']:.1f} |")
        + _csv_table(os.path.join(folder, "decoder_map_probe.csv"),
                     "Decoder input map on the learning tests' fixed batch (FullyOracle, evaluated on the same images)",
                     "| TRANSFORMER_IN_FEATURE | images | steps | all-class train mIoU (%) |",
                     lambda r: f"| {r['transformer_in_feature']} | {r['images']} | {r['steps']} | {r['train_miou']:.1f} |")
        + _csv_table(os.path.join(folder, "dropout_probe.csv"),
                     "Decoder dropout on the learning tests' fixed batch and step budgets (evaluated on the same images)",
                     "| config | MODEL.MASK_FORMER.DROPOUT | images | steps | train mIoU all / base / novel (%) |",
                     lambda r: f"| {r['config']} | {r['dropout']:g} | {r['images']} | {r['steps']} | "
                               f"{r['train_miou']:.1f} / {r['train_base_miou']:.1f} / {r['train_novel_miou']:.1f} |"))


def build(folder: str, doc: str, block_name: str = "convergence-table") -> str:
    results = pd.read_csv(os.path.join(folder, "results.csv"))
    curves = pd.read_csv(os.path.join(folder, "curves.csv"))
    plot_curves(curves, "eval/miou", "ToyScenes val all-class mIoU (%)", os.path.join(folder, "curves_miou.png"))
    plot_curves(curves, "total_loss", "training loss (moving mean of 5 logs)", os.path.join(folder, "curves_loss.png"),
                smooth=5)
    text = ("Final metrics (ToyScenes val, split1; mean ± std over seeds where n > 1):\n\n" + final_table(results)
            + "\n\nAll-class val mIoU (%) during training:\n\n" + curve_table(curves) + "\n")
    novel = curves[(curves["series"] == "eval/novel_miou") & curves["value"].notna()]
    if novel["iteration"].nunique() > 1:  # a curve, not only the final value of the table above
        plot_curves(curves, "eval/novel_miou", "ToyScenes val novel-class mIoU (%)",
                    os.path.join(folder, "curves_novel_miou.png"))
        text += ("\nNovel-class val mIoU (%) during training:\n\n" + curve_table(curves, "eval/novel_miou")
                 + "\n")
    order = os.path.join(folder, "inference_order.csv")
    if os.path.isfile(order):  # suspect 3: the same weights, two inference orders
        df = pd.read_csv(order)
        lines = ["| run | order | " + " | ".join(f"{label} mIoU (%)" for _, label in METRICS) + " |",
                 "|---|---|" + "---:|" * len(METRICS)]
        lines += [f"| {r['run']} | {r['order']} | " + " | ".join(f"{r[m]:.1f}" for m, _ in METRICS) + " |"
                  for _, r in df.iterrows()]
        text += "\nInference order on the same weights (suspect 3):\n\n" + "\n".join(lines) + "\n"
    text += probe_tables(folder)
    if doc:
        replace_block(doc, block_name, text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder")
    p.add_argument("--doc", default="", help="Markdown file whose generated block to rewrite")
    p.add_argument("--block", default="convergence-table", help="name of that block (default: convergence-table)")
    args = p.parse_args(argv)
    print(build(args.folder, args.doc, args.block))
    return 0


if __name__ == "__main__":
    sys.exit(main())
