"""Pseudo-label quality with and without GF-SAM refinement (docs/gfsam.md), from committed files:

    python analysis/refine_report.py docs/results/refine --doc docs/gfsam.md

Reads DIR/<run>/pseudo_labels.json, as `simformer pseudo-label --refine gfsam` writes it (both
qualities of the same labels: "quality_unrefined" before, "quality" after refinement); <run> is
METHOD_seedN, and the reports ``--labels NAME=GLOB`` matches (a sweep's collected runs, e.g. a
pipeline run with ``refine: gfsam``; the seed from the path's ``seedN`` folder). Writes
DIR/refine.csv (one row per run) and, with --doc, the generated block
"refine-table": per method, novel / all mIoU of the pseudo labels before and after (mean ± std
over seeds) and the paired t-test (two-sided, pairs = the same model's labels) on the novel
difference. With ``--retrained RESULTS.csv`` (a sweep's results.csv holding re-training rows
``X`` and ``X+GFSAM``, e.g. ``SimFormer*+CMT`` and ``SimFormer*+CMT+GFSAM``; repeatable) also the block
"refine-retrained": the re-trained model's novel / all mIoU on the val set without and with the
refinement, paired by split and seed (the two share their stage-1 model), and the paired t-test.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys

import pandas as pd
from scipy import stats

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convergence_report import mean_std  # noqa: E402
from machine_blocks import named_files, seed_of  # noqa: E402
from markdown_blocks import replace_block  # noqa: E402

from simformer.utils.io import atomic_write_text

RUN = re.compile(r"^(?P<method>.+)_seed(?P<seed>\d+)$")


def _row(path: str, run: str, method: str, seed: int) -> dict:
    with open(path) as f:
        rep = json.load(f)
    if "quality_unrefined" not in rep:
        raise ValueError(f"{path}: no 'quality_unrefined'; write it with `simformer pseudo-label --refine gfsam`")
    before, after = rep["quality_unrefined"], rep["quality"]
    return dict(run=run, method=method, seed=seed,
                novel_before=before["novel_miou"], novel_after=after["novel_miou"],
                all_before=before["miou"], all_after=after["miou"],
                labelled_before=rep["labelled_pixel_share_unrefined"], labelled_after=rep["labelled_pixel_share"])


def load(directory: str, labels=()) -> pd.DataFrame:
    """One row per report: DIR/METHOD_seedN/pseudo_labels.json, and the ``NAME=GLOB`` specs of
    ``labels`` (reports where a sweep collected them, the seed from the path's ``seedN`` folder)."""
    rows = []
    for path in sorted(glob.glob(os.path.join(directory, "*", "pseudo_labels.json"))):
        run = os.path.basename(os.path.dirname(path))
        m = RUN.match(run)
        if not m:
            raise ValueError(f"{path}: folder name '{run}' is not METHOD_seedN")
        rows.append(_row(path, run, m["method"], int(m["seed"])))
    for name, path in named_files(labels, "--labels"):
        seed = seed_of(path)
        if seed is None:
            raise ValueError(f"{path}: no seedN folder in the path; give the reports of a sweep's runs")
        rows.append(_row(path, path, name, seed))
    if not rows:
        raise FileNotFoundError(f"no */pseudo_labels.json under {directory}")
    return pd.DataFrame(rows).sort_values(["method", "seed"]).reset_index(drop=True)


def _paired(a: pd.Series, b: pd.Series) -> str:
    """Two-sided paired t-test p of a vs b, formatted ('–' for fewer than 2 pairs)."""
    p = stats.ttest_rel(a, b).pvalue if len(a) > 1 else float("nan")
    return "–" if p != p else f"{p:.3f}"


def table(df: pd.DataFrame) -> str:
    lines = ["| model | n | novel before | novel after | Δ novel | p (paired t, two-sided) | all before | all after "
             "| labelled px before → after |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for method, g in df.groupby("method", sort=False):
        diff = g["novel_after"] - g["novel_before"]
        lines.append(f"| {method} | {len(g)} | {mean_std(g['novel_before'])} | {mean_std(g['novel_after'])} | "
                     f"{mean_std(diff)} | {_paired(g['novel_after'], g['novel_before'])} | "
                     f"{mean_std(g['all_before'])} | {mean_std(g['all_after'])} | "
                     f"{g['labelled_before'].mean():.1f} % → {g['labelled_after'].mean():.1f} % |")
    return ("\n".join(lines) + "\n\nmIoU (%) of the mixed pseudo labels of the ToyScenes training images against their "
            "full GT (base pixels are GT, so base mIoU is 100); mean ± std over seeds (ddof 1); Δ = after - before "
            "per seed.\n")


def retrained_table(results: pd.DataFrame) -> str:
    """Per sweep (column ``sweep``) and ``X+GFSAM`` method with an ``X`` in the same sweep:
    val novel / all mIoU without and with the refinement over the (split, seed) pairs both have,
    differences and paired t-tests. Runs of different sweeps never pair."""
    lines = ["| sweep | re-trained model | n pairs | novel without | novel with GF-SAM | Δ novel | p novel (paired t) "
             "| all without | all with | Δ all | p all |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for sweep, runs in results.groupby("sweep", sort=False):
        methods = set(runs["method"])
        for method in sorted(m for m in methods if m.endswith("+GFSAM") and m[: -len("+GFSAM")] in methods):
            base = method[: -len("+GFSAM")]
            pairs = runs[runs["method"] == base].merge(runs[runs["method"] == method], on=["split", "seed"],
                                                       suffixes=("_without", "_with"))
            if pairs.empty:
                continue
            cells = []
            for metric in ("novel_miou", "miou"):
                without, with_ = pairs[f"{metric}_without"], pairs[f"{metric}_with"]
                cells += [mean_std(without), mean_std(with_), mean_std(with_ - without), _paired(with_, without)]
            lines.append(f"| {sweep} | {base} | {len(pairs)} | " + " | ".join(cells) + " |")
    return ("\n".join(lines) + "\n\nToyScenes val mIoU (%) of the re-trained model (stage 2); sweep: the folder of "
            "the results CSV; a pair = the same stage-1 model and seed, re-trained on its unrefined or its "
            "GF-SAM-refined pseudo labels; mean ± std (ddof 1); paired t-test, two-sided.\n")


def build(directory: str, doc: str = "", retrained=(), labels=()) -> str:
    """``retrained``: results CSVs of sweeps with re-training rows (one or more); ``labels``:
    ``NAME=GLOB`` specs of more reports (:func:`load`)."""
    df = load(directory, labels)
    atomic_write_text(os.path.join(directory, "refine.csv"), df.to_csv(index=False))
    text = table(df)
    if doc:
        replace_block(doc, "refine-table", text)
    if retrained:
        frames = [pd.read_csv(path).assign(sweep=os.path.basename(os.path.dirname(os.path.abspath(path))))
                  for path in retrained]
        extra = retrained_table(pd.concat(frames, ignore_index=True))
        text += "\n" + extra
        if doc:
            replace_block(doc, "refine-retrained", extra)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("directory")
    p.add_argument("--doc", default="", help="Markdown file whose 'refine-table' block to rewrite")
    p.add_argument("--retrained", action="append", default=[], metavar="RESULTS.csv",
                   help="a sweep's results.csv with X / X+GFSAM re-training rows (repeatable): adds the "
                        "'refine-retrained' block")
    p.add_argument("--labels", action="append", default=[], metavar="NAME=GLOB",
                   help="more pseudo_labels.json reports as model NAME, one per seedN folder (repeatable), e.g. "
                        "'SimFormer@1200=docs/results/toyscenes_label_precision/runs/SimFormer[*]+GFSAM/split1/"
                        "seed*/pseudo_labels.json'")
    args = p.parse_args(argv)
    print(build(args.directory, args.doc, args.retrained, args.labels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
