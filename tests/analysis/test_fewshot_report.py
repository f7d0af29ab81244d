"""The few-shot report: mean ± std cells and Welch p-values against scipy, paper figures block."""
import os
import sys

import pandas as pd
from scipy import stats

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "analysis"))

import fewshot_report  # noqa: E402


def fake_results(path):
    rows = []
    values = {"mm-match": [40.0, 41.0, 42.5], "mm-former": [33.0, 35.0, 34.0], "oracle": [50.0, 49.0, 51.0],
              "gfsam": [44.0, 45.0, 46.0], "gfsam (no gating)": [30.0, 31.0, 29.5]}
    for method, vals in values.items():
        for seed, v in enumerate(vals):
            rows.append({"method": method, "split": "fold0:1shot", "seed": seed, "novel_miou": v, "fbiou": v + 20})
    pd.DataFrame(rows).to_csv(path, index=False)
    return values


def test_table_and_welch_match_independent_computation(tmp_path):
    values = fake_results(tmp_path / "r.csv")
    doc = tmp_path / "doc.md"
    doc.write_text("# t\n\n<!-- generated:fewshot-table -->\nPLACEHOLDER\n<!-- /generated:fewshot-table -->\n")
    fewshot_report.build(str(tmp_path / "r.csv"), str(doc))
    text = doc.read_text()
    assert "PLACEHOLDER" not in text
    # mm-match: mean 41.17, std (ddof=1) 1.26
    assert "| mm-match | 41.2 ± 1.3 (n=3) | 61.2 ± 1.3 (n=3) |" in text
    p = stats.ttest_ind(values["mm-former"], values["mm-match"], equal_var=False).pvalue
    row = [line for line in text.splitlines() if line.startswith("| mm-former | fold0:1shot |")][0]
    assert f"{p:.3g}"[:4] in row or f"{p:.4f}"[:5] in row, (p, row)
    assert "| GF-SAM (NeurIPS 2024) | gfsam (no gating) | COCO-20i | 1-shot | 44.0 |" in text
