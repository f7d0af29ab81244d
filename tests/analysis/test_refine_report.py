"""analysis/refine_report.py: the table's differences and paired t-test against a hand computation."""
import json
import os
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "analysis"))

import refine_report  # noqa: E402


def _write(folder, before, after):
    folder.mkdir(parents=True)
    rep = {"quality_unrefined": {"novel_miou": before, "miou": before + 30},
           "quality": {"novel_miou": after, "miou": after + 30},
           "labelled_pixel_share_unrefined": 92.0, "labelled_pixel_share": 93.0}
    (folder / "pseudo_labels.json").write_text(json.dumps(rep))


def test_table_matches_hand_computed_paired_t(tmp_path):
    pairs = [(50.0, 53.0), (60.0, 61.0), (55.0, 60.0)]  # differences 3, 1, 5
    for seed, (b, a) in enumerate(pairs, 1):
        _write(tmp_path / f"SimFormer_seed{seed}", b, a)
    _write(tmp_path / "Other_seed1", 40.0, 39.0)
    doc = tmp_path / "doc.md"
    text = refine_report.build(str(tmp_path), str(doc))
    # mean diff 3, std 2, t = 3 / (2 / sqrt 3) = 2.598 with 2 df -> two-sided p = 0.1217
    row = next(r for r in text.splitlines() if r.startswith("| SimFormer"))
    cells = [c.strip() for c in row.split("|")]
    assert cells[2] == "3" and cells[3] == "55.0 ± 5.0" and cells[4] == "58.0 ± 4.4"
    assert cells[5] == "3.0 ± 2.0" and cells[6] == "0.122"
    other = [c.strip() for c in next(r for r in text.splitlines() if r.startswith("| Other")).split("|")]
    assert other[5] == "-1.0" and other[6] == "–"
    assert "<!-- generated:refine-table -->" in doc.read_text()
    assert (tmp_path / "refine.csv").read_text().count("\n") == 5


def test_labels_of_a_sweeps_runs_join_by_glob_with_the_seed_of_their_path(tmp_path):
    # the same reports in the METHOD_seedN layout and in a sweep's runs/METHOD/SPLIT/seedN layout
    pairs = [(50.0, 53.0), (60.0, 61.0), (55.0, 60.0)]
    for seed, (b, a) in enumerate(pairs, 1):
        _write(tmp_path / "flat" / f"SimFormer_seed{seed}", b, a)
        _write(tmp_path / "runs" / "SimFormer*+GFSAM" / "split1" / f"seed{seed}", b, a)
    (tmp_path / "empty").mkdir()
    flat = refine_report.load(str(tmp_path / "flat"))
    globbed = refine_report.load(str(tmp_path / "empty"),
                                 [f"SimFormer={tmp_path}/runs/SimFormer[*]+GFSAM/split1/seed*/pseudo_labels.json"])
    assert list(globbed["seed"]) == [1, 2, 3]
    assert globbed.drop(columns="run").equals(flat.drop(columns="run"))
    with pytest.raises(SystemExit, match="--labels"):
        refine_report.load(str(tmp_path / "empty"), [f"X={tmp_path}/nothing/*.json"])


def test_rejects_a_report_without_both_qualities(tmp_path):
    (tmp_path / "SimFormer_seed1").mkdir()
    (tmp_path / "SimFormer_seed1" / "pseudo_labels.json").write_text(json.dumps({"quality": {}}))
    with pytest.raises(ValueError, match="quality_unrefined"):
        refine_report.load(str(tmp_path))


def test_retrained_rows_pair_by_seed_with_hand_paired_t():
    import pandas as pd

    rows = [("SimFormer*+CMT", "split1", s, n, n + 2) for s, n in ((1, 70.0), (2, 72.0), (3, 74.0))]
    rows += [("SimFormer*+CMT+GFSAM", "split1", s, n, n + 2) for s, n in ((1, 73.0), (2, 73.0), (3, 79.0))]
    rows += [("SimFormer*+CMT+GFSAM", "split1", 9, 10.0, 12.0)]  # no partner: not a pair
    rows += [("Lonely+GFSAM", "split1", 1, 1.0, 1.0)]  # no "Lonely" method: no row
    df = pd.DataFrame(rows, columns=["method", "split", "seed", "novel_miou", "miou"]).assign(sweep="variants")
    # another sweep's runs of the same names and seeds: a row of their own, never paired across sweeps
    other = pd.DataFrame([("SimFormer*+CMT", "split1", 1, 50.0, 50.0), ("SimFormer*+CMT+GFSAM", "split1", 1, 40.0, 40.0)],
                         columns=["method", "split", "seed", "novel_miou", "miou"]).assign(sweep="probe")
    text = refine_report.retrained_table(pd.concat([df, other], ignore_index=True))
    row = [c.strip() for c in next(r for r in text.splitlines() if r.startswith("| variants | SimFormer*+CMT ")).split("|")]
    # differences 3, 1, 5: mean 3, std 2, t = 2.598 (2 df) -> p = 0.122, as the pseudo-label test
    assert row[3] == "3" and row[4] == "72.0 ± 2.0" and row[5] == "75.0 ± 3.5"
    assert row[6] == "3.0 ± 2.0" and row[7] == "0.122" and row[10] == "3.0 ± 2.0"
    row = [c.strip() for c in next(r for r in text.splitlines() if r.startswith("| probe | SimFormer*+CMT ")).split("|")]
    assert row[3] == "1" and row[6] == "-10.0"
    assert "Lonely" not in text
