"""The "retraining" block of docs/results-toyscenes.md: each re-trained method's pseudo labels beside
the model that made them and the model they give, each SimFormer* row against its stage 1 paired by
seed, and the per-novel-class view. Used by analysis/toyscenes_report.py."""
from __future__ import annotations

import json
import os
import sys

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convergence_report import mean_std  # noqa: E402
import paper_tables  # noqa: E402

from simformer.stats import format_p

# Re-training rows and what each is paired with by seed: the stage-1 method whose model labelled
# their training set, or (stage-2 budget) the same re-training at the recipe's budget and the
# stage-1 method at the same longer budget; SimFormer*@1800-from1800 (both stages at 1800) against
# its stage 1 and against the re-training of SimFormer@900's labels.
RETRAINED = [("SimFormer*", "SimFormer"), ("SimFormer*+GFSAM", "SimFormer"), ("SimFormer*@900", "SimFormer@900"),
             ("SimFormer*@1800", "SimFormer@900"), ("SimFormer*@1800", "SimFormer*@900"),
             ("SimFormer*@1800", "SimFormer@1800"), ("SimFormer*@1800-from1800", "SimFormer@1800"),
             ("SimFormer*@1800-from1800", "SimFormer*@1800")]


def read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def retraining_table(df: pd.DataFrame, results_dir: str, retrained: str = "SimFormer*",
                     stage1: str = "SimFormer") -> str:
    """Per seed: the novel mIoU (val) of ``stage1`` (the stage-1 method, or another re-training of
    the same pseudo labels), the novel mIoU of the ``retrained`` run's pseudo labels on the train
    set (its collected ``pseudo_labels.json``), the re-trained model's novel mIoU (val) and the
    gain; then the mean gain, paired t-test (pairs = seeds) and the paper's gains (Table 1) where
    the paper has both rows."""
    from scipy import stats

    pipe = df[df["method"] == retrained].set_index(["split", "seed"])
    first = df[df["method"] == stage1].set_index(["split", "seed"])
    keys = [k for k in pipe.index if k in first.index]
    if not keys:
        return ""
    lines = [f"### Re-training: {retrained} against {stage1}, paired by seed\n",
             f"| split | seed | {stage1} novel (val) | pseudo labels novel (train) | pseudo labels all (train) "
             f"| {retrained} novel (val) | gain |", "|---|---:|---:|---:|---:|---:|---:|"]
    gains = []
    for split, seed in keys:
        label_file = os.path.join(results_dir, str(pipe.loc[(split, seed), "run_dir"]), "pseudo_labels.json")
        quality = read_json(label_file)["quality"] if os.path.isfile(label_file) else {}
        before, after = float(first.loc[(split, seed), "novel_miou"]), float(pipe.loc[(split, seed), "novel_miou"])
        gains.append(after - before)
        cells = [f"{quality[k]:.1f}" if k in quality else "n/a" for k in ("novel_miou", "miou")]
        lines.append(f"| {split} | {seed} | {before:.1f} | {cells[0]} | {cells[1]} | {after:.1f} | {after - before:+.1f} |")
    g = pd.Series(gains)
    p = stats.ttest_1samp(g, 0.0).pvalue if len(g) > 1 else float("nan")
    paper = paper_tables.paper_block("table1_main", [stage1, retrained])
    paper_gain = paper.loc[retrained] - paper.loc[stage1] if {stage1, retrained} <= set(paper.index) else None
    text = "\n".join(lines) + (
        f"\n\nGain {g.mean():+.1f}" + (f" ± {g.std(ddof=1):.1f}" if len(g) > 1 else "")
        + f" novel mIoU (n = {len(g)} seeds); paired t-test (two-sided, pairs = seeds, ddof 1): p = {format_p(p)}.")
    if paper_gain is not None:
        text += f" Paper (Table 1, 8 splits): {paper_gain.min():+.1f} to {paper_gain.max():+.1f}."
    return text + "\n"


def pseudo_label_table(df: pd.DataFrame, results_dir: str) -> str:
    """One row per re-trained method (a run with a collected ``pseudo_labels.json``): the novel mIoU
    on val of the stage-1 model that labelled (its ``stage1_metrics.json``, where collected); on the
    train set, its pseudo labels' novel mIoU, their precision where they name a novel class and
    the share of novel pixels they name (simformer.retrain.pseudo_label.label_precision), and the
    share of all pixels labelled; the re-trained model's novel mIoU on val. Mean ± std over seeds
    (ddof 1). It sets pipelines whose stage 1 differs (SimFormer*, CAM*) side by side."""
    columns = ("stage1_novel", "label_novel", "novel_precision", "novel_coverage", "labelled", "val_novel")
    rows = []
    for _, r in df.iterrows() if "run_dir" in df.columns else ():
        path = os.path.join(results_dir, str(r["run_dir"]), "pseudo_labels.json")
        if os.path.isfile(path):
            labels = read_json(path)
            stage1 = os.path.join(results_dir, str(r["run_dir"]), "stage1_metrics.json")
            rows.append({"method": r["method"],
                         "stage1_novel": read_json(stage1).get("novel_miou") if os.path.isfile(stage1) else None,
                         "label_novel": labels.get("quality", {}).get("novel_miou"),
                         "novel_precision": labels.get("novel_precision"), "novel_coverage": labels.get("novel_coverage"),
                         "labelled": labels.get("labelled_pixel_share"), "val_novel": r["novel_miou"]})
    if not rows:
        return ""
    t = pd.DataFrame(rows)
    lines = ["### Pseudo labels of each re-trained method: the model that made them, their quality, the model "
             "they give\n",
             "| method | n | stage 1 novel mIoU (val) | labels novel mIoU | labels novel precision "
             "| novel pixels labelled | all pixels labelled | re-trained novel mIoU (val) | gain over stage 1 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for method, g in t.groupby("method", sort=False):
        cells = [mean_std(pd.to_numeric(g[c])) for c in columns]
        lines.append(f"| {method} | {len(g)} | " + " | ".join(cells) + f" | {_paired_gain(g)} |")
    return "\n".join(lines) + ("\n\npercent; gain: re-trained minus stage-1 novel mIoU (val) of the same run, mean ± "
                               "std, paired t-test over the runs (two-sided, ddof 1). "
                               "The labels are those of the train set, scored against its full masks "
                               "(void left out; base classes keep their own masks). Precision: of the pixels a "
                               "label names as a novel class, the share that is that class (mean over the novel "
                               "classes); a pixel left unlabelled is ignored in re-training, a wrong one is "
                               "taught. n/a: not in the collected files (stage-1 metrics and precision are kept "
                               "since 2026-12-06; a pipeline with stage1_from reuses another method's runs, e.g. "
                               "SimFormer*'s stage 1 is the SimFormer row of the same seed).\n")


def _paired_gain(g: pd.DataFrame) -> str:
    """"mean ± std (p = ...)" of ``val_novel - stage1_novel`` over the rows that have both."""
    from scipy import stats

    gain = (pd.to_numeric(g["val_novel"]) - pd.to_numeric(g["stage1_novel"])).dropna()
    if len(gain) < 2:
        return f"{gain.iloc[0]:+.1f}" if len(gain) else "n/a"
    return f"{gain.mean():+.1f} ± {gain.std(ddof=1):.1f} (p = {format_p(stats.ttest_1samp(gain, 0.0).pvalue)})"


def retraining_per_class(df: pd.DataFrame, results_dir: str, retrained: str = "SimFormer*",
                         stage1: str = "SimFormer", oracle: str = "FullyOracle") -> str:
    """Per novel class (of the first ``retrained`` run's split): mean over seeds of the val IoU of
    ``oracle``, ``stage1`` and ``retrained``, and of the train-set IoU of the ``retrained`` runs'
    pseudo labels; plus the Pearson correlation over (class, seed) of the pseudo-label IoU with
    the re-trained model's IoU as a share of the oracle's (class difficulty confounds it: a class
    that is easy to label is also easy to learn)."""
    from scipy import stats

    runs = df[df["method"] == retrained]
    if runs.empty or oracle not in set(df["method"]):
        return ""
    first = os.path.join(results_dir, str(runs["run_dir"].iloc[0]))
    split = read_json(os.path.join(first, "run_info.json"))["split"]
    novel = [split["class_names"][i] for i in split["novel"]]

    def per_class(method: str, file: str) -> pd.DataFrame:
        """``per_class_iou`` of ``file`` in each run of ``method``: rows (split, seed), novel columns."""
        rows = {}
        for _, r in df[df["method"] == method].iterrows():
            path = os.path.join(results_dir, str(r["run_dir"]), file)
            if os.path.isfile(path):
                rows[(r["split"], r["seed"])] = read_json(path)["per_class_iou"]
        return pd.DataFrame.from_dict(rows, orient="index")[novel] if rows else pd.DataFrame(columns=novel)

    cols = {f"{oracle} (val)": per_class(oracle, "metrics.json"),
            f"{stage1} (val)": per_class(stage1, "metrics.json"),
            "pseudo labels (train)": per_class(retrained, "pseudo_labels.json"),
            f"{retrained} (val)": per_class(retrained, "metrics.json")}
    lines = [f"### Re-training per novel class: {retrained}, its pseudo labels and {oracle}\n",
             "| class | " + " | ".join(f"{k} n = {len(v)}" for k, v in cols.items()) + " |",
             "|---" + "|---:" * len(cols) + "|"]
    for c in novel:
        lines.append(f"| {c} | " + " | ".join(mean_std(v[c]) if c in v else "n/a" for v in cols.values()) + " |")
    labels, final = cols["pseudo labels (train)"], cols[f"{retrained} (val)"]
    share = final.div(cols[f"{oracle} (val)"].mean(), axis=1)
    keys = labels.index.intersection(share.index)
    text = "\n".join(lines) + "\n\nIoU percent, mean ± std over seeds (ddof 1)."
    if len(keys) > 2:
        x, y = labels.loc[keys].to_numpy().ravel(), share.loc[keys].to_numpy().ravel()
        r = stats.pearsonr(x, y)
        text += (f" Pseudo-label IoU vs {retrained}'s IoU as a share of {oracle}'s mean, over "
                 f"{len(x)} (class, seed) pairs: Pearson r = {r.statistic:.2f}, p = {format_p(r.pvalue)}.")
    return text + "\n"


def retraining_block(df: pd.DataFrame, results_dir: str) -> str:
    """The whole block: the pseudo-label table, every pair of :data:`RETRAINED` present, the per-class
    table ("" when no run of ``df`` was re-trained)."""
    return "\n".join(filter(None, [pseudo_label_table(df, results_dir)]
                             + [retraining_table(df, results_dir, r, s1) for r, s1 in RETRAINED]
                             + [retraining_per_class(df, results_dir)]))
