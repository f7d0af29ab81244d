"""analysis/toyscenes_report.py: the Table 2 ordering block against hand-computed Welch tests."""
import os
import sys

import pandas as pd
import pytest
from scipy import stats

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "analysis"))

from test_axis_blocks import alpha_results, budget_runs  # noqa: E402
import toyscenes_report  # noqa: E402

VALUES = {"Pr": [10.0, 12.0, 11.0], "Pr+Pi": [20.0, 24.0, 22.0], "Pr+Co": [9.0, 8.0, 12.0],
          "SimFormer": [30.0, 29.0, 34.0]}


def results():
    return pd.DataFrame([dict(method=m, split="split1", seed=i + 1, novel_miou=v)
                         for m, vals in VALUES.items() for i, v in enumerate(vals)])


def fmt_p(p: float) -> str:
    """The suite's p-value format, written out: 3 decimals, scientific below 0.001."""
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


def row_cells(text, low, high):
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {low} | {high} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_ordering_table_matches_scipy_welch_and_hand_holm():
    text = toyscenes_report.ordering_table(results())
    pairs = toyscenes_report.TABLE2_ORDER
    raw = [stats.ttest_ind(VALUES[h], VALUES[lo], equal_var=False).pvalue for lo, h in pairs]
    # Holm by hand: sort ascending, multiply by (m - rank), running maximum, capped at 1.
    order = sorted(range(len(raw)), key=lambda i: raw[i])
    adjusted, running = [0.0] * len(raw), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(raw) - rank) * raw[i]))
        adjusted[i] = running
    for (low, high), p, p_holm in zip(pairs, raw, adjusted):
        cells = row_cells(text, low, high)
        diff = sum(VALUES[high]) / 3 - sum(VALUES[low]) / 3
        assert cells[2] == "3 vs 3"
        assert float(cells[5]) == round(diff, 1)
        assert cells[7] == fmt_p(p) and cells[8] == fmt_p(p_holm)
        assert cells[9].startswith("yes" if diff > 0 else "no")
    # Pr+Co sits below Pr here: its pair is reported as out of the paper's order, not dropped.
    assert row_cells(text, "Pr", "Pr+Co")[9].startswith("no")
    # The paper's COCO split1 differences: Pr 23.5, Pr+Pi 27.4, Pr+Co 27.0, SimFormer 31.1.
    assert row_cells(text, "Pr", "Pr+Pi")[10] == "+3.9"
    assert row_cells(text, "Pr+Co", "SimFormer")[10] == "+4.1"


def test_ordering_table_lists_a_method_not_run():
    df = results()
    text = toyscenes_report.ordering_table(df[df["method"] != "Pr+Pi"])
    assert "not run" in row_cells(text, "Pr", "Pr+Pi")
    assert "not run" in row_cells(text, "Pr+Pi", "SimFormer")
    assert row_cells(text, "Pr+Co", "SimFormer")[9].startswith("yes")


def test_budget_suffixes_need_both_ends_of_the_ordering():
    methods = {"Pr", "SimFormer", "Pr@1200", "SimFormer@1200", "SimFormer@1800", "FullyOracle@600",
               "Pr@300", "SimFormer@300", "Pr+Co@900"}
    assert toyscenes_report.budget_suffixes(methods) == ["", "@300", "@1200"]
    assert toyscenes_report.budget_suffixes({"Pr@1200", "SimFormer@1200"}) == ["@1200"]


def test_ordering_table_at_a_budget_renames_methods_and_keeps_the_paper_difference():
    df = results()
    at_budget = df.assign(method=df["method"] + "@1200", novel_miou=df["novel_miou"] + 1.0)
    text = toyscenes_report.ordering_table(pd.concat([df, at_budget]), budget="@1200")
    assert "1200 iterations" in text.splitlines()[0]
    plain = toyscenes_report.ordering_table(df)
    for low, high in toyscenes_report.TABLE2_ORDER:
        # Both methods shifted by 1: every difference, p-value and the paper's figure are unchanged.
        assert row_cells(text, low + "@1200", high + "@1200")[5:] == row_cells(plain, low, high)[5:]
        assert float(row_cells(text, low + "@1200", high + "@1200")[3]) == pytest.approx(
            float(row_cells(plain, low, high)[3]) + 1.0)


def test_summary_lists_reference_rows_after_the_methods(tmp_path):
    import json

    for seed, novel in [(1, 30.0), (2, 34.0)]:
        os.makedirs(tmp_path / f"seed{seed}")
        json.dump({"novel_miou": novel, "base_miou": 50.0, "miou": 45.0, "hm": 40.0},
                  open(tmp_path / f"seed{seed}" / "metrics.json", "w"))
    refs = toyscenes_report.read_references([f"pixel={tmp_path}/seed*/metrics.json"])
    df = pd.DataFrame([dict(method="FullyOracle", novel_miou=64.0, base_miou=60.0, miou=61.0, hm=62.0)])
    lines = toyscenes_report.summary_table(df, refs).splitlines()
    assert lines[2].startswith("| FullyOracle | 1 | 64.0 |")
    assert lines[3] == "| pixel (reference, not deep) | 2 | 32.0 ± 2.8 | 50.0 ± 0.0 | 45.0 ± 0.0 | 40.0 ± 0.0 | 50 % |"
    with pytest.raises(SystemExit, match="none found"):
        toyscenes_report.read_references([f"pixel={tmp_path}/nothing/*.json"])


def test_summary_sets_a_longer_budget_against_fullyoracle_at_that_budget():
    df = pd.DataFrame([dict(method=m, novel_miou=v, base_miou=1.0, miou=1.0, hm=1.0) for m, v in
                       [("FullyOracle", 60.0), ("FullyOracle@1800", 80.0), ("SimFormer", 45.0),
                        ("SimFormer*@1800", 60.0), ("SimFormer@3600", 70.0)]])
    rel = {line.split(" | ")[0][2:]: line.split(" | ")[-1].rstrip(" |") for line in
           toyscenes_report.summary_table(df).splitlines()[2:7]}
    assert rel == {"FullyOracle": "100 %", "FullyOracle@1800": "100 %", "SimFormer": "75 %",
                   "SimFormer*@1800": "75 %", "SimFormer@3600": "n/a"}


def test_build_on_a_fig6_csv_writes_the_curve_and_block_but_leaves_the_summary(tmp_path):
    csv = tmp_path / "results.csv"
    alpha_results().to_csv(csv, index=False)
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- generated:summary -->\nkept\n<!-- /generated:summary -->\n")
    toyscenes_report.build(str(csv), str(tmp_path / "out"), str(doc))
    text = doc.read_text()
    assert "kept" in text and "<!-- generated:fig6_alpha -->" in text and "Sensitivity to alpha" in text
    assert (tmp_path / "out" / "fig6_alpha.png").stat().st_size > 1000
    assert not (tmp_path / "out" / "bars_novel_miou.png").exists()


def test_build_writes_the_budget_block_and_figures(tmp_path):
    df, curves = budget_runs()
    df = df[df["method"] != "Pr"]
    df.assign(base_miou=df["miou"], hm=df["miou"]).to_csv(tmp_path / "results.csv", index=False)
    curves.to_csv(tmp_path / "curves.csv", index=False)
    doc = tmp_path / "doc.md"
    toyscenes_report.build(str(tmp_path / "results.csv"), str(tmp_path / "out"), str(doc))
    assert "<!-- generated:budget -->" in doc.read_text()
    assert (tmp_path / "out" / "budget_miou.png").stat().st_size > 1000


def test_by_budget_puts_the_recipe_first_then_each_budget_in_base_name_order():
    methods = ["Pr@900", "SimFormer@900", "SimFormer", "FullyOracle@1800", "Pr", "SimFormer@1800",
               "Pr@900", "FullyOracle", "SimFormer*@1800", "SimFormer*"]
    df = pd.DataFrame({"method": methods, "seed": range(len(methods))})
    out = toyscenes_report.by_budget(df)
    # base names first seen: Pr (row 0), SimFormer (1), FullyOracle (3), SimFormer* (8)
    assert list(out["method"]) == ["Pr", "SimFormer", "FullyOracle", "SimFormer*", "Pr@900", "Pr@900",
                                   "SimFormer@900", "SimFormer@1800", "FullyOracle@1800", "SimFormer*@1800"]
    assert list(out[out["method"] == "Pr@900"]["seed"]) == [0, 6]  # stable within a method


def test_summary_footnote_states_the_recipe_budget_its_runs_logged():
    df = pd.DataFrame([dict(run=f"{m}/split1/seed1", method=m, novel_miou=50.0, base_miou=1.0, miou=1.0, hm=1.0)
                       for m in ("FullyOracle", "SimFormer", "SimFormer@900")])
    curves = pd.DataFrame([dict(run=r, iteration=i, series="total_loss", value=1.0) for r, last in
                           [("FullyOracle/split1/seed1", 1200), ("SimFormer/split1/seed1", 1200),
                            ("SimFormer@900/split1/seed1", 900)] for i in (20, last)])
    assert toyscenes_report.recipe_iterations(df, curves) == [1200]  # the @900 run is not the recipe
    text = toyscenes_report.summary_table(df, recipe_iterations=[1200])
    assert "the recipe's budget, 1200 iterations (the last iteration their runs logged)" in text
    assert "Base-ToyScenes.yaml's SOLVER.MAX_ITER" in toyscenes_report.summary_table(df)  # no curves
    # runs that disagree are all named
    curves.loc[(curves["run"] == "SimFormer/split1/seed1") & (curves["iteration"] == 1200), "iteration"] = 1000
    assert toyscenes_report.recipe_iterations(df, curves) == [1000, 1200]


def test_build_writes_the_machines_block_with_runs_of_another_sweep(tmp_path):
    from test_machine_blocks import NEW, OLD, extra, results as machine_results

    df = machine_results(tmp_path)
    df.assign(miou=df["novel_miou"]).to_csv(tmp_path / "results.csv", index=False)
    extra(tmp_path)
    doc = tmp_path / "doc.md"
    toyscenes_report.build(str(tmp_path / "results.csv"), str(tmp_path / "out"), str(doc),
                           machine_runs=[f"SimFormer={tmp_path}/probe/seed*/stage1_metrics.json"])
    block = doc.read_text().split("<!-- generated:machines -->")[1]
    assert f"| SimFormer | novel_miou | {OLD} | {NEW} | 3 vs 2 |" in block
    assert f"| {NEW} | novel_miou | CAM* | SimFormer | 3 vs 2 |" in block
