"""Add the labels' novel precision and coverage to pipeline runs whose pseudo-label report predates
them (simformer.retrain.pseudo_label.label_precision; the pipeline writes them itself since
2026-12-06):

    python analysis/rescore_pseudo_labels.py runs/toyscenes_main/CAM_/split1/seed*

For each RUN folder: scores RUN/pseudo_labels/*.png against the full ground truth of the dataset
the report names, with the class split of RUN/stage1_train/run_info.json, and rewrites
RUN/pseudo_labels/pseudo_labels.json (atomically) with "novel_precision", "novel_coverage" and
"per_class_precision" added. A report that has them already is left alone. GF-SAM-refined labels
are scored as they are in the folder (the refined ones).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from simformer.data.catalog import get_dataset_dicts
from simformer.evaluation.sem_seg import SemSegEvaluator
from simformer.retrain.pseudo_label import label_precision
from simformer.utils.io import atomic_write_json, read_label


def rescore(run: str) -> dict:
    """The run's pseudo-label report with the precision fields (written back when they were missing)."""
    path = os.path.join(run, "pseudo_labels", "pseudo_labels.json")
    info = os.path.join(run, "stage1_train", "run_info.json")
    for need in (path, info):
        if not os.path.isfile(need):
            raise FileNotFoundError(f"{need} not found: {run} is not a finished `simformer pipeline` run")
    with open(path) as f:
        report = json.load(f)
    if "novel_precision" in report:
        return report
    with open(info) as f:
        split = json.load(f)["split"]
    names = split["class_names"]
    novel = np.isin(np.arange(len(names)), split["novel"])
    metric = SemSegEvaluator(class_names=names, novel_mask=novel)
    for record in get_dataset_dicts(report["dataset"]):
        label = os.path.join(run, "pseudo_labels", record["image_id"] + ".png")
        metric.process(read_label(label), read_label(record["sem_seg_file_name"]), name=label)
    report.update(label_precision(metric.confusion, novel, names))
    atomic_write_json(path, report)
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN")
    args = p.parse_args(argv)
    for run in args.runs:
        try:
            report = rescore(run)
        except (OSError, ValueError, KeyError) as e:
            print(f"rescore_pseudo_labels: {run}: {e}", file=sys.stderr)
            return 2
        print(f"{run}: novel precision {report['novel_precision']} %, coverage {report['novel_coverage']} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
