"""analysis/retraining_blocks.py: the re-training tables against hand computations and scipy."""
import os
import sys

import pandas as pd
from scipy import stats

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "analysis"))

import retraining_blocks  # noqa: E402
from test_toyscenes_report import fmt_p  # noqa: E402


def test_retraining_table_pairs_seeds_and_reads_pseudo_label_quality(tmp_path):
    import json

    rows, before, after = [], [40.0, 50.0, 45.0], [44.0, 49.0, 50.0]
    for seed, (b, a) in enumerate(zip(before, after), 1):
        run = f"runs/SimFormer_/split1/seed{seed}"
        os.makedirs(tmp_path / run)
        json.dump({"quality": {"novel_miou": 60.0 + seed, "miou": 80.0}}, open(tmp_path / run / "pseudo_labels.json", "w"))
        rows += [dict(method="SimFormer", split="split1", seed=seed, novel_miou=b, run_dir=f"runs/SimFormer/split1/seed{seed}"),
                 dict(method="SimFormer*", split="split1", seed=seed, novel_miou=a, run_dir=run)]
    rows.append(dict(method="SimFormer", split="split1", seed=4, novel_miou=30.0, run_dir="x"))  # no partner: left out
    text = retraining_blocks.retraining_table(pd.DataFrame(rows), str(tmp_path))
    assert "| split1 | 1 | 40.0 | 61.0 | 80.0 | 44.0 | +4.0 |" in text
    assert "| split1 | 3 | 45.0 | 63.0 | 80.0 | 50.0 | +5.0 |" in text
    assert "| split1 | 4 |" not in text
    p = stats.ttest_rel(after, before).pvalue
    assert "Gain +2.7 ± 3.2 novel mIoU (n = 3 seeds)" in text and f"p = {fmt_p(p)}" in text
    # the paper's Table 1 gains SimFormer* - SimFormer over its 8 splits: +1.2 (ADE20K split1) to +3.3 (split4)
    assert "Paper (Table 1, 8 splits): +1.2 to +3.3." in text
    assert retraining_blocks.retraining_table(pd.DataFrame(rows[:1]), str(tmp_path)) == ""


def test_retraining_table_pairs_two_retrainings_without_a_paper_gain(tmp_path):
    rows = []
    for seed, (short, long) in enumerate([(44.0, 47.0), (49.0, 48.0)], 1):
        rows += [dict(method="SimFormer*", split="split1", seed=seed, novel_miou=short, run_dir="a"),
                 dict(method="SimFormer*@1800", split="split1", seed=seed, novel_miou=long, run_dir="b")]
    text = retraining_blocks.retraining_table(pd.DataFrame(rows), str(tmp_path), "SimFormer*@1800", "SimFormer*")
    assert text.startswith("### Re-training: SimFormer*@1800 against SimFormer*, paired by seed")
    assert "| split1 | 1 | 44.0 | n/a | n/a | 47.0 | +3.0 |" in text
    assert "Gain +1.0 ± 2.8 novel mIoU (n = 2 seeds)" in text and "Paper" not in text


def test_retraining_per_class_reads_each_runs_files(tmp_path):
    import json

    split = {"class_names": ["a", "b", "c"], "novel": [0, 2], "base": [1]}
    iou = {  # (method, seed) -> per-class IoU written to the run's file
        ("FullyOracle", 1): {"a": 80.0, "b": 70.0, "c": 60.0}, ("FullyOracle", 2): {"a": 60.0, "b": 70.0, "c": 40.0},
        ("SimFormer", 1): {"a": 50.0, "b": 60.0, "c": 30.0}, ("SimFormer", 2): {"a": 40.0, "b": 60.0, "c": 20.0},
        ("SimFormer*", 1): {"a": 35.0, "b": 60.0, "c": 10.0}, ("SimFormer*", 2): {"a": 70.0, "b": 60.0, "c": 25.0},
        ("SimFormer*", 3): {"a": 56.0, "b": 60.0, "c": 40.0}}
    labels = {1: {"a": 60.0, "c": 20.0}, 2: {"a": 90.0, "c": 40.0}, 3: {"a": 80.0, "c": 70.0}}
    rows = []
    for (method, seed), per_class in iou.items():
        run = f"runs/{method}/s{seed}"
        os.makedirs(tmp_path / run)
        json.dump({"per_class_iou": per_class}, open(tmp_path / run / "metrics.json", "w"))
        json.dump({"split": split}, open(tmp_path / run / "run_info.json", "w"))
        if method == "SimFormer*":
            json.dump({"per_class_iou": labels[seed]}, open(tmp_path / run / "pseudo_labels.json", "w"))
        rows.append(dict(method=method, split="split1", seed=seed, run_dir=run))
    text = retraining_blocks.retraining_per_class(pd.DataFrame(rows), str(tmp_path))
    assert "| a | 70.0 ± 14.1 | 45.0 ± 7.1 | 76.7 ± 15.3 | 53.7 ± 17.6 |" in text
    assert "| c | 50.0 ± 14.1 | 25.0 ± 7.1 | 43.3 ± 25.2 | 25.0 ± 15.0 |" in text
    assert "| b |" not in text  # base class
    # share of the oracle's mean: a / 70, c / 50, paired with the labels' IoU by (class, seed)
    r = stats.pearsonr([60, 20, 90, 40, 80, 70], [35 / 70, 10 / 50, 70 / 70, 25 / 50, 56 / 70, 40 / 50])
    assert f"over 6 (class, seed) pairs: Pearson r = {r.statistic:.2f}" in text
    assert retraining_blocks.retraining_per_class(pd.DataFrame(rows[2:]), str(tmp_path)) == ""  # no oracle


def test_pseudo_label_table_sets_each_pipelines_labels_beside_its_model(tmp_path):
    import json

    rows = []
    for method, seed, novel, share, val in [("SimFormer*", 1, 70.0, 95.0, 50.0), ("SimFormer*", 2, 80.0, 97.0, 56.0),
                                            ("CAM*", 1, 20.0, 90.0, 15.0)]:
        run = f"runs/{method}/s{seed}"
        os.makedirs(tmp_path / run)
        report = {"labelled_pixel_share": share, "quality": {"novel_miou": novel, "miou": novel + 10}}
        if method == "CAM*":  # collected with its stage-1 model's metrics and the labels' precision
            json.dump({"novel_miou": 34.0}, open(tmp_path / run / "stage1_metrics.json", "w"))
            report.update(novel_precision=70.0, novel_coverage=60.0)
        json.dump(report, open(tmp_path / run / "pseudo_labels.json", "w"))
        rows.append(dict(method=method, seed=seed, novel_miou=val, run_dir=run))
    rows.append(dict(method="SimFormer", seed=1, novel_miou=48.0, run_dir="runs/SimFormer/s1"))  # no labels
    text = retraining_blocks.pseudo_label_table(pd.DataFrame(rows), str(tmp_path))
    assert "| SimFormer* | 2 | n/a | 75.0 ± 7.1 | n/a | n/a | 96.0 ± 1.4 | 53.0 ± 4.2 | n/a |" in text
    assert "| CAM* | 1 | 34.0 | 20.0 | 70.0 | 60.0 | 90.0 | 15.0 | -19.0 |" in text
    assert "| SimFormer |" not in text
    assert retraining_blocks.pseudo_label_table(pd.DataFrame(rows[3:]), str(tmp_path)) == ""


def test_pseudo_label_table_gain_is_paired_by_run(tmp_path):
    import json

    rows = []
    for seed, (stage1, val) in enumerate([(40.0, 44.0), (50.0, 49.0), (45.0, 51.0)], 1):
        run = f"runs/P/s{seed}"
        os.makedirs(tmp_path / run)
        json.dump({"novel_miou": stage1}, open(tmp_path / run / "stage1_metrics.json", "w"))
        json.dump({"quality": {"novel_miou": 60.0}}, open(tmp_path / run / "pseudo_labels.json", "w"))
        rows.append(dict(method="P*", seed=seed, novel_miou=val, run_dir=run))
    text = retraining_blocks.pseudo_label_table(pd.DataFrame(rows), str(tmp_path))
    p = stats.ttest_rel([44.0, 49.0, 51.0], [40.0, 50.0, 45.0]).pvalue
    assert f"| 48.0 ± 3.6 | +3.0 ± 3.6 (p = {fmt_p(p)}) |" in text
