"""analysis/photos_report.py: summary, Welch tests and per-class IoU against hand computations."""
import json
import os
import sys

import numpy as np
import pandas as pd
from scipy import stats

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "analysis"))

import photos_report  # noqa: E402

NAMES = ["sky", "road", "tree"]
RUNS = {  # method -> per seed (novel, base, all, hm, per-class IoU)
    "SimFormer": [(40.0, 70.0, 60.0, 50.9, [80.0, 60.0, 40.0]), (50.0, 74.0, 66.0, 59.7, [82.0, 66.0, 50.0])],
    "FullyOracle": [(60.0, 72.0, 68.0, 65.5, [81.0, 63.0, 60.0]), (70.0, 76.0, 74.0, 72.9, [85.0, 67.0, 70.0])],
    "Pr": [(10.0, 71.0, 50.0, 17.5, [80.0, 62.0, 10.0]), (20.0, 69.0, 52.0, 30.9, [79.0, 59.0, 20.0])],
}


def _collected(folder):
    rows, curves = [], []
    for method, runs in RUNS.items():
        for seed, (novel, base, miou, hm, per_class) in enumerate(runs, start=1):
            run_dir = f"runs/{method}/split1/seed{seed}"
            os.makedirs(folder / run_dir)
            (folder / run_dir / "metrics.json").write_text(json.dumps(
                {"novel_miou": novel, "base_miou": base, "miou": miou, "hm": hm,
                 "per_class_iou": dict(zip(NAMES, per_class))}))
            (folder / run_dir / "run_info.json").write_text(json.dumps(
                {"split": {"class_names": NAMES, "base": [0, 1], "novel": [2]}}))
            rows.append(dict(run=f"{method}/split1/seed{seed}", method=method, split="split1", seed=seed,
                             novel_miou=novel, base_miou=base, miou=miou, hm=hm, run_dir=run_dir))
            # step times 1.0, 1.2, 1.1 s -> the run's median 1.1 s; seed 2 takes 0.2 s longer
            for it, t in ((20, 1.0), (40, 1.2), (60, 1.1)):
                curves.append(dict(run=rows[-1]["run"], method=method, split="split1", seed=seed,
                                   iteration=it, series="time_per_iter", value=t + 0.2 * (seed - 1)))
    pd.DataFrame(rows).to_csv(folder / "results.csv", index=False)
    pd.DataFrame(curves).to_csv(folder / "curves.csv", index=False)


def _row(text, first, second=None):
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if cells and cells[0] == first and (second is None or cells[1] == second):
            return cells
    raise AssertionError(f"no row {first} {second}")


def test_blocks_against_hand_computations(tmp_path):
    _collected(tmp_path)
    doc = tmp_path / "photos.md"
    doc.write_text("prose\n<!-- generated:camvid -->\nold\n<!-- /generated:camvid -->\n")
    for seed, novel in ((1, 4.0), (2, 6.0)):
        os.makedirs(tmp_path / f"ref/seed{seed}")
        (tmp_path / f"ref/seed{seed}/metrics.json").write_text(json.dumps(
            {"novel_miou": novel, "base_miou": 20.0, "miou": 16.0, "hm": 8.0}))
    text = photos_report.build(str(tmp_path), str(doc), [f"pixels={tmp_path}/ref/seed*/metrics.json"])
    assert "old" not in doc.read_text() and text.strip() in doc.read_text()

    sim = _row(text, "SimFormer")
    # novel 40, 50: mean 45, sample std sqrt(50) = 7.07; FullyOracle's mean 65 -> 69 %
    assert sim[1:3] == ["2", "45.0 ± 7.1"] and sim[6] == "69 %"
    # run medians 1.1 and 1.3 s -> 1.2 s; x 60 logged iterations / 60 = 1.2 min
    assert sim[7:9] == ["1.20", "1.2"]

    # a reference row: its mean (5.0) as a share of FullyOracle's novel mIoU, no step time
    assert _row(text, "pixels (reference, not deep)")[1:3] + _row(text, "pixels (reference, not deep)")[6:] == [
        "2", "5.0 ± 1.4", "8 %", "n/a", "n/a"]

    pr = _row(text, "novel_miou", "Pr")
    x, y = np.array([10.0, 20.0]), np.array([40.0, 50.0])
    p_pr = stats.ttest_ind(x, y, equal_var=False).pvalue
    p_fo = stats.ttest_ind(np.array([60.0, 70.0]), y, equal_var=False).pvalue
    assert pr[5] == "-30.0" and pr[7] == photos_report.format_p(p_pr)
    # Holm over the two methods: the smaller p times 2
    assert pr[8] == photos_report.format_p(min(1.0, 2 * min(p_pr, p_fo)))

    tree = _row(text, "tree")
    assert tree[1] == "novel" and tree[2] == "45.0 ± 7.1" and tree[4] == "15.0 ± 7.1"
    assert _row(text, "sky")[1] == "base"
    assert (tmp_path / "points_novel_miou.png").is_file()
    assert "Oracle gap" not in text  # no oracle_gap.csv: no block


def test_oracle_gap_block_when_its_csv_is_there(tmp_path):
    _collected(tmp_path)
    pd.DataFrame([dict(method="SimFormer", split="split1", seed=s, novel_achieved=a, novel_oracle=o,
                       novel_union=o, oracle_gap=o - a) for s, a, o in ((1, 40.0, 60.0), (2, 50.0, 64.0))]
                 ).to_csv(tmp_path / "oracle_gap.csv", index=False)
    # gaps 20 and 14: mean 17, sample std sqrt(18) = 4.24
    gap_block = photos_report.build(str(tmp_path)).split("Oracle gap")[1]
    assert _row(gap_block, "SimFormer")[1:3] + _row(gap_block, "SimFormer")[5:] == ["2", "45.0 ± 7.1", "17.0 ± 4.2"]
