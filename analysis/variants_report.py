"""Significance tables and per-seed figures of the model-variants sweep (docs/variants.md):

    python analysis/variants_report.py docs/results/toyscenes_variants --doc docs/variants.md

Reads DIR/results.csv (analysis/collect_runs.py). Every SimFormer variant is compared with
SimFormer, every FullyOracle variant with FullyOracle and a re-training row (SimFormer*...) with
its stage-1 model (Welch t-test, two-sided, unpaired, ddof 1; Holm over the variants compared
with one baseline, per metric). Writes DIR/tables.md (the full
``simformer stats`` tables), DIR/points_<metric>.png (methods on the x axis, every seed a dot, n
under each bar) and, with --doc, the generated block "variants-tests": one row per variant with
the differences, p-values and the novel mIoU relative to FullyOracle trained alike (oracle_of), and
each stacked variant against the variant it adds to (parent_of: SimFormer+CMT+CrossRef vs
SimFormer+CMT). With
DIR/oracle_gap.csv (analysis/oracle_gap.py) also the block "variants-oracle-gap" (novel mIoU
achieved vs the best single query mask, docs/proposals.md). With the runs' metrics.json under
DIR/run_dir (what collect_runs.py copies), also the block "variants-per-class": every class's val
IoU per method, and the mean over ToyScenes' stuff and thing classes, base and novel. With
DIR/curves.csv, also the block "variants-step-time": each method's training step time from its runs'
logs and its ratio to the baseline. Rows and columns are in family order (method_order).
``--block NAME`` names the blocks "NAME-tests" / "NAME-oracle-gap" / "NAME-per-class" /
"NAME-step-time" instead, for a second sweep reported in the same document
(experiments/toyscenes/variants_recipe.yaml -> --block variants-recipe).
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
import warnings

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine_blocks import NOT_RECORDED, with_machines  # noqa: E402
from markdown_blocks import replace_block  # noqa: E402
from retraining_blocks import read_json  # noqa: E402
from toyscenes_report import oracle_gap_table  # noqa: E402

from simformer.stats import StatsWarning, compare, format_markdown, format_p, holm
from simformer.sweeps.plots import plot_bars, save_figure
from simformer.utils.io import atomic_write_text

FAMILIES = ("SimFormer", "FullyOracle")
METRICS = (("novel_miou", "novel"), ("base_miou", "base"), ("miou", "all"), ("hm", "HM"))
TEST = "Welch t-test, two-sided, unpaired, ddof 1; Holm over the variants compared with one baseline"


def baseline_of(method: str) -> str:
    """The run a variant is compared with: SimFormer / FullyOracle for their variants, and for a
    re-training row (SimFormer*...) its stage-1 model ('SimFormer*+CMT+GFSAM' -> 'SimFormer+CMT')."""
    if method.startswith("SimFormer*"):
        return "SimFormer+CMT" if "+CMT" in method else "SimFormer"
    for base in FAMILIES:
        if method == base or method.startswith(base + "+") or method.startswith(base + "-"):
            return base
    return ""


def oracle_of(method: str, available=()) -> str:
    """FullyOracle trained the same way: same decoder and same "-suffix" setting when that run exists
    in ``available`` ('SimFormer-dropout0' -> 'FullyOracle-dropout0'), else the same decoder only
    ('SimFormer+CMT+CrossRef' -> 'FullyOracle+CMT'; cross-reference and GF-SAM are weak-shot parts)."""
    decoder = "FullyOracle+CMT" if "+CMT" in method else "FullyOracle"
    suffix = re.search(r"(-[^+*]+)$", method)
    if suffix and decoder + suffix.group(1) in set(available):
        return decoder + suffix.group(1)
    return decoder


def parent_of(method: str, available=()) -> str:
    """The variant a stacked variant adds its last part to, when that run exists in ``available`` and
    is not already its baseline ('SimFormer+CMT+CrossRef' -> 'SimFormer+CMT'); else ""."""
    head, plus, _ = method.rpartition("+")
    if not plus or head == baseline_of(method) or head not in set(available):
        return ""
    return head


def method_order(methods) -> list:
    """``methods`` grouped by family (SimFormer's rows, then FullyOracle's, then any other), each
    family's baseline first, the rest in their given order: a table's rows do not depend on the
    order in which runs finished or were collected."""
    methods = list(dict.fromkeys(methods))

    def key(m: str):
        family = next((i for i, f in enumerate(FAMILIES) if m == f or m.startswith(f)), len(FAMILIES))
        return family, m not in FAMILIES, methods.index(m)

    return sorted(methods, key=key)


def _fmt(v: float, nd: int = 1) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def _p(v: float) -> str:
    return format_p(v, missing="–")


def comparisons(df: pd.DataFrame) -> dict:
    """{(baseline, metric): compare() table} for every baseline present with >= 1 variant."""
    out = {}
    of = df["method"].map(baseline_of)
    for base in pd.unique(of[of != ""]):
        sub = df[(of == base) | (df["method"] == base)]
        if base not in set(sub["method"]) or sub["method"].nunique() < 2:
            continue
        for metric, _ in METRICS:
            table = compare(sub, metric=metric, baseline=base, test="welch")
            # compare() corrects over splits; here the family is the variants of one baseline
            variants = (table["method"] != base).to_numpy()
            table.loc[variants, "p_holm"] = holm(table.loc[variants, "p_value"].to_numpy(float))
            out[(base, metric)] = table
    return out


def tests_block(df: pd.DataFrame, tables: dict) -> str:
    lines = ["| method | vs | n | novel mIoU | Δ novel | p novel | all mIoU | Δ all | p all | Δ HM | p HM "
             "| novel / FullyOracle (trained alike) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    oracle_novel = df.groupby("method")["novel_miou"].mean()
    for method in method_order(df["method"]):
        base = method if method in FAMILIES else baseline_of(method)
        if not base or (base, "novel_miou") not in tables:
            continue
        row = {}
        for metric, _ in METRICS:
            t = tables[(base, metric)]
            r = t[t["method"] == method].iloc[0]
            row[metric] = r
        nov = row["novel_miou"]
        std = "" if math.isnan(nov["std"]) else f" ± {nov['std']:.1f}"
        all_r = row["miou"]
        all_std = "" if math.isnan(all_r["std"]) else f" ± {all_r['std']:.1f}"
        oracle = oracle_of(method, oracle_novel.index)
        rel = (f"{100 * nov['mean'] / oracle_novel[oracle]:.0f} % of {oracle}"
               if method.startswith("SimFormer") and oracle in oracle_novel.index else "")
        if method == base:
            lines.append(f"| **{method}** | (baseline) | {nov['n']} | {nov['mean']:.1f}{std} | | | "
                         f"{all_r['mean']:.1f}{all_std} | | | | | {rel} |")
            continue
        lines.append(
            f"| {method} | {base} | {nov['n']} | {nov['mean']:.1f}{std} | {_fmt(nov['diff'])} | "
            f"{_p(nov['p_holm'])} | {all_r['mean']:.1f}{all_std} | {_fmt(all_r['diff'])} | "
            f"{_p(all_r['p_holm'])} | {_fmt(row['hm']['diff'])} | {_p(row['hm']['p_holm'])} | {rel} |")
    return ("\n".join(lines) + f"\n\nmIoU in percent on ToyScenes val (split1), mean ± std over seeds; Δ = variant "
            f"mean - baseline mean; p: {TEST} ('–' where a side has n < 2).\n" + stacked_block(df))


def stacked_block(df: pd.DataFrame) -> str:
    """Each stacked variant against the variant it adds its last part to (parent_of): does the part
    still help on top of the other? Welch, Holm over these comparisons; "" when there is none."""
    methods = method_order(df["method"])
    pairs = [(m, parent_of(m, methods)) for m in methods if parent_of(m, methods)]
    if not pairs:
        return ""
    rows = {}
    for metric, _ in METRICS:
        found = []
        for method, parent in pairs:
            with warnings.catch_warnings():  # a side with one seed: its p is '–'
                warnings.simplefilter("ignore", StatsWarning)
                t = compare(df[df["method"].isin([method, parent])], metric=metric, baseline=parent, test="welch")
            found.append(t[t["method"] == method].iloc[0])
        adjusted = holm([r["p_value"] for r in found])
        rows[metric] = [(r, p) for r, p in zip(found, adjusted)]
    lines = ["| method | vs | n | Δ novel | p novel | Δ all | p all | Δ HM | p HM |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for i, (method, parent) in enumerate(pairs):
        cells = [f"{_fmt(rows[m][i][0]['diff'])} | {_p(rows[m][i][1])}" for m in ("novel_miou", "miou", "hm")]
        lines.append(f"| {method} | {parent} | {rows['novel_miou'][i][0]['n']} | " + " | ".join(cells) + " |")
    return ("\n### Stacked variants against the variant they add to\n\n" + "\n".join(lines)
            + "\n\nΔ = variant mean - the other's mean; p: Welch t-test, two-sided, unpaired, ddof 1; Holm over "
            "these comparisons ('–' where a side has n < 2).\n")


def per_class_block(df: pd.DataFrame, directory: str) -> str:
    """Val IoU per class (rows) and method (columns), mean over the seeds whose metrics.json is under
    ``directory``/run_dir, then the mean of those means over each group of classes: ToyScenes' stuff
    (region-filling textures) and things (compact shapes, simformer/data/datasets/toyscenes.py),
    each split into base and novel by the runs' split. "" when no run has its files here."""
    from simformer.data.datasets.toyscenes import TOYSCENES_CLASSES

    if "run_dir" not in df:
        return ""
    kinds = {c.name: c.kind for c in TOYSCENES_CLASSES}
    iou, split = {}, None
    for method in method_order(df["method"]):
        rows = []
        for run_dir in df.loc[df["method"] == method, "run_dir"]:
            folder = os.path.join(directory, str(run_dir))
            if os.path.isfile(os.path.join(folder, "metrics.json")):
                rows.append(read_json(os.path.join(folder, "metrics.json"))["per_class_iou"])
                split = split or read_json(os.path.join(folder, "run_info.json"))["split"]
        if rows:
            iou[method] = pd.DataFrame(rows)
    if not iou:
        return ""
    names, novel = split["class_names"], {split["class_names"][i] for i in split["novel"]}
    means = pd.DataFrame({m: v.mean() for m, v in iou.items()}).reindex(names)
    group = {c: f"{kinds.get(c, 'other')}, {'novel' if c in novel else 'base'}" for c in names}
    methods = list(iou)
    lines = ["| class | kind | " + " | ".join(f"{m} (n = {len(iou[m])})" for m in methods) + " |",
             "|---|---|" + "---:|" * len(methods)]
    lines += [f"| {c} | {group[c]} | " + " | ".join(f"{means.at[c, m]:.1f}" for m in methods) + " |" for c in names]
    for g in sorted(set(group.values())):
        members = [c for c in names if group[c] == g]
        lines.append(f"| **mean of {len(members)}** | **{g}** | "
                     + " | ".join(f"**{means.loc[members, m].mean():.1f}**" for m in methods) + " |")
    return ("### Per class\n\n" + "\n".join(lines) + "\n\nVal IoU in percent, mean over seeds; a group's row "
            "is the mean of its classes' means.\n")


def short_machine(platform: str) -> str:
    """The kernel build of a platform string (``...-fc-v1272-x86_64...`` -> ``v1272``), which tells
    this project's machines apart; the whole string where it has none."""
    found = re.search(r"-(v\d+)(?:-|$)", platform)
    return found.group(1) if found else platform


def step_time_block(df: pd.DataFrame, directory: str) -> str:
    """Training step time per method from the runs' logs (DIR/curves.csv, series time_per_iter):
    each run's median over its logged periods, then the median over a method's runs, and its
    ratio to the baseline's (baseline_of) over the runs trained on the baseline's machines only
    (run_info.json's platform; a step time is a property of the machine too). "" when fewer than
    two methods logged their step time (nothing to compare)."""
    path = os.path.join(directory, "curves.csv")
    if not os.path.isfile(path):
        return ""
    curves = pd.read_csv(path)
    steps = curves[curves["series"] == "time_per_iter"].groupby(["method", "split", "seed"])["value"].median()
    if steps.index.get_level_values("method").nunique() < 2:
        return ""
    placed = with_machines(df, directory)
    machine = {(r.method, r.split, r.seed): short_machine(str(r.machine)) for r in placed.itertuples()}
    steps = pd.DataFrame({"step": steps, "machine": [machine.get(k, NOT_RECORDED) for k in steps.index]})
    lines = ["| method | runs timed | machines (runs) | median step (s) | range over runs (s) | / baseline |",
             "|---|---:|---|---:|---:|---:|"]
    for m in method_order(df["method"]):
        if m not in steps.index.get_level_values("method"):
            continue
        own, base = steps.loc[m], baseline_of(m)
        counts = own["machine"].value_counts().sort_index()
        ratio = ""
        if m != base and base in steps.index.get_level_values("method"):
            base_runs = steps.loc[base]
            alike = own[own["machine"].isin(set(base_runs["machine"]))]
            if alike.empty:
                ratio = "– (other machine)"
            else:
                ratio = f"{alike['step'].median() / base_runs['step'].median():.2f}x {base}"
                if len(alike) < len(own):
                    ratio += f" ({len(alike)} of {len(own)} runs: same machine)"
        lines.append(f"| {m} | {len(own)} | {', '.join(f'{k} ({v})' for k, v in counts.items())} | "
                     f"{own['step'].median():.2f} | {own['step'].min():.2f}-{own['step'].max():.2f} | {ratio} |")
    return ("### Step time in the sweep's own runs\n\n" + "\n".join(lines) + "\n\nseconds per training "
            "iteration as the trainer logs it (each run's median over its logged periods, then the median over "
            "the method's runs); one thread per run and two runs side by side, so a run's figure also depends "
            "on the run beside it; machines by kernel build (run_info.json), a ratio only over runs of the "
            "baseline's machines. benchmarks/cmt_step_time.py measures the decoders side by side in one "
            "process (docs/benchmarks.md).\n")


def build(directory: str, doc: str = "", block_name: str = "variants") -> str:
    df = pd.read_csv(os.path.join(directory, "results.csv"))
    with warnings.catch_warnings():  # a variant with one seed so far: its p is '–' in the table
        warnings.simplefilter("ignore", StatsWarning)
        tables = comparisons(df)
    parts = []
    for (base, metric), table in tables.items():
        text = format_markdown(table).replace("Holm across splits within each method",
                                              f"Holm over the variants compared with {base}")
        parts.append(f"### {metric}: each variant vs {base} ({TEST})\n\n" + text + "\n")
    for metric, label in METRICS[::2]:  # novel and all
        result = plot_bars(df, metric=metric, title=f"ToyScenes variants: {label} mIoU (%), one dot per seed")
        # an n = 2 t-CI spans far beyond 0-100 %: show the metric's range and say the bars are cut
        result.axes.set_ylim(0, 100)
        result.axes.set_ylabel(result.axes.get_ylabel() + "\n(CI cut at 0 and 100)", fontsize=8)
        result.figure.set_size_inches(9, 4.8)
        for tick in result.axes.get_xticklabels():
            tick.set_rotation(30)
            tick.set_fontsize(8)
        save_figure(result.figure, os.path.join(directory, f"points_{metric}.png"))
    atomic_write_text(os.path.join(directory, "tables.md"), "\n".join(parts))
    block = tests_block(df, tables)
    gap_path = os.path.join(directory, "oracle_gap.csv")
    gap = oracle_gap_table(pd.read_csv(gap_path), method_order(df["method"])) if os.path.isfile(gap_path) else ""
    classes = per_class_block(df, directory)
    steps = step_time_block(df, directory)
    if doc:
        replace_block(doc, f"{block_name}-tests", block)
        if gap:
            replace_block(doc, f"{block_name}-oracle-gap", gap)
        if classes:
            replace_block(doc, f"{block_name}-per-class", classes)
        if steps:
            replace_block(doc, f"{block_name}-step-time", steps)
    return "\n".join(filter(None, [block, gap, classes, steps]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("directory", help="folder with results.csv (analysis/collect_runs.py)")
    p.add_argument("--doc", default="", help="Markdown file whose 'variants-tests' block to rewrite")
    p.add_argument("--block", default="variants",
                   help="generated blocks to rewrite: BLOCK-tests, BLOCK-oracle-gap, BLOCK-per-class and "
                        "BLOCK-step-time (default: variants)")
    args = p.parse_args(argv)
    print(build(args.directory, args.doc, args.block))
    return 0


if __name__ == "__main__":
    sys.exit(main())
