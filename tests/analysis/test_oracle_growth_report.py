"""analysis/oracle_growth_report.py: rows in numeric query order, mean ± std by hand, bad names refused."""
import os
import sys

import pandas as pd
import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "analysis"))

import oracle_growth_report  # noqa: E402


def _gap_csv(folder, rows):
    cols = ["method", "split", "seed", "novel_achieved", "novel_oracle", "novel_union", "oracle_gap",
            "base_achieved", "base_oracle"]
    pd.DataFrame(rows, columns=cols).to_csv(folder / "oracle_gap.csv", index=False)


def test_rows_sorted_by_query_count_with_hand_mean_std(tmp_path):
    _gap_csv(tmp_path, [
        ("SimFormer-q16", "split1", 1, 40.0, 60.0, 61.0, 20.0, 50.0, 55.0),
        ("SimFormer-q8", "split1", 1, 10.0, 30.0, 31.0, 20.0, 40.0, 45.0),
        ("SimFormer-q8", "split1", 2, 20.0, 40.0, 41.0, 20.0, 42.0, 47.0),
    ])
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- generated:oracle-growth -->\nold\n<!-- /generated:oracle-growth -->\nend\n")
    oracle_growth_report.build(str(tmp_path), str(doc))
    text = doc.read_text()
    rows = [r for r in text.splitlines() if r.startswith("| 8 ") or r.startswith("| 16 ")]
    assert [r.split("|")[1].strip() for r in rows] == ["8", "16"]  # numeric, not string, order
    # q8: novel achieved 10, 20 -> mean 15, sample std sqrt(50) = 7.07
    assert rows[0].split("|")[2].strip() == "2"
    assert rows[0].split("|")[3].strip() == "15.0 ± 7.1"
    assert rows[1].split("|")[4].strip() == "60.0"
    assert "old" not in text and text.startswith("intro") and text.rstrip().endswith("end")


def test_method_without_query_suffix_is_refused(tmp_path):
    _gap_csv(tmp_path, [("SimFormer", "split1", 1, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0)])
    with pytest.raises(ValueError, match="no -qN suffix"):
        oracle_growth_report.build(str(tmp_path))


def test_query_collapse_block_from_its_csv(tmp_path):
    _gap_csv(tmp_path, [("SimFormer-q64", "split1", 1, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0)])
    cols = ["run", "queries", "dropout_cfg", "iterations", "inference", "object_queries_per_image", "mask_corr",
            "novel_achieved", "novel_oracle", "all_achieved", "all_oracle"]
    pd.DataFrame([("runs/x/q64_dropout0.1", 64, 0.1, 300, "eval", 0.0, 0.714, 0.84, 27.4, 6.19, 26.85)],
                 columns=cols).to_csv(tmp_path / "query_collapse.csv", index=False)
    doc = tmp_path / "doc.md"
    oracle_growth_report.build(str(tmp_path), str(doc))
    assert "| q64_dropout0.1 | 64 | 0.1 | 300 | eval | 0.0 | 0.71 | 0.8 | 27.4 | 6.2 | 26.9 |" in doc.read_text()
