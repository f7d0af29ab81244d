import importlib.util
import os

import pandas as pd
import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
spec = importlib.util.spec_from_file_location("paper_tables", os.path.join(ROOT, "analysis", "paper_tables.py"))
paper_tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(paper_tables)


@pytest.fixture
def results(tmp_path):
    rows = [
        ("Pr", "split1", 1, 10.0), ("Pr", "split1", 2, 14.0), ("Pr", "split2", 1, 8.0),
        ("SimFormer", "split1", 1, 20.0), ("SimFormer", "split1", 2, 22.0), ("SimFormer", "split2", 1, 18.0),
        ("FullyOracle", "split1", 1, 25.0), ("FullyOracle", "split2", 1, 30.0),
    ]
    df = pd.DataFrame(rows, columns=["method", "split", "seed", "novel_miou"])
    path = tmp_path / "results.csv"
    df.to_csv(path, index=False)
    return str(path), df


def test_mean_std_cells(results):
    _, df = results
    t = paper_tables.mean_std_table(df, "novel_miou")
    # mean 12, sample std of (10, 14) = 2.83
    assert t.loc["Pr", "split1"] == "12.0 ± 2.8 (n=2)"
    assert t.loc["Pr", "split2"] == "8.0 (n=1)"
    assert list(t.index) == ["Pr", "SimFormer", "FullyOracle"]


def test_oracle_ratio(results):
    _, df = results
    r = paper_tables.oracle_ratio(df)
    assert r.loc["SimFormer", "split1"] == pytest.approx(100 * 21 / 25, abs=0.05)
    assert r.loc["SimFormer", "split2"] == pytest.approx(60.0)
    assert r.loc["FullyOracle", "split1"] == 100.0


def test_render_includes_paper_rows(results):
    path, _ = results
    text = paper_tables.render(path, "table2")
    assert "Pr + Pi + Co" not in text  # rows are labelled with our names
    paper = paper_tables.paper_block("table2_modules_coco", ["Pr", "SimFormer"])
    assert paper.loc["SimFormer", "split1"] == 31.1 and paper.loc["Pr", "split1"] == 23.5
    assert "31.1" in text and "23.5" in text
