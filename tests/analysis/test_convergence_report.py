"""Collecting a sweep into committed files and regenerating the convergence tables from them."""
import json
import os
import sys

import pandas as pd

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "analysis"))

import collect_runs  # noqa: E402
import convergence_report  # noqa: E402
from markdown_blocks import replace_block  # noqa: E402


def fake_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    rows = []
    for method, seed, final in (("A", 1, 30.0), ("A", 2, 34.0), ("B", 1, 20.0)):
        run = f"{method}/split1/seed{seed}"
        d = sweep / run
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"miou": final}))
        lines = [{"iteration": 20, "total_loss": 9.0 + seed, "loss_ce": 2.0, "time_per_iter": 0.5, "lr": 1e-3},
                 {"iteration": 150, "eval": {"miou": final / 2, "novel_miou": final / 3}},
                 {"iteration": 300, "eval": {"miou": final, "novel_miou": final / 2}}]
        (d / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
        if method == "B":  # a pipeline run: its pseudo-label quality is collected too
            (d / "pseudo_labels").mkdir()
            (d / "pseudo_labels" / "pseudo_labels.json").write_text(json.dumps({"quality": {"novel_miou": 55.0}}))
            (d / "stage1_train").mkdir()
            (d / "stage1_train" / "metrics.json").write_text(json.dumps({"novel_miou": 12.5}))
        rows.append({"run": run, "method": method, "split": "split1", "seed": seed, "novel_miou": final / 2,
                     "base_miou": final, "miou": final, "hm": final / 1.5, "run_dir": str(d)})
    pd.DataFrame(rows).to_csv(sweep / "results.csv", index=False)
    return sweep


def test_collect_then_report_reproduces_the_run_values(tmp_path):
    dest = tmp_path / "docs" / "conv"
    collect_runs.collect(str(fake_sweep(tmp_path)), str(dest))
    res = pd.read_csv(dest / "results.csv")
    assert list(res["run_dir"]) == ["runs/A/split1/seed1", "runs/A/split1/seed2", "runs/B/split1/seed1"]
    assert json.loads((dest / "runs/A/split1/seed2/metrics.json").read_text()) == {"miou": 34.0}
    assert json.loads((dest / "runs/B/split1/seed1/pseudo_labels.json").read_text())["quality"]["novel_miou"] == 55.0
    assert json.loads((dest / "runs/B/split1/seed1/stage1_metrics.json").read_text()) == {"novel_miou": 12.5}
    assert not (dest / "runs/A/split1/seed1/pseudo_labels.json").exists()
    assert not (dest / "runs/A/split1/seed1/stage1_metrics.json").exists()
    curves = pd.read_csv(dest / "curves.csv")
    ev = curves[(curves.series == "eval/miou") & (curves.method == "A") & (curves.seed == 2)]
    assert list(ev["iteration"]) == [150, 300] and list(ev["value"]) == [17.0, 34.0]
    assert float(curves[(curves.series == "total_loss") & (curves.seed == 2)]["value"].iloc[0]) == 11.0
    assert float(curves[(curves.series == "time_per_iter") & (curves.seed == 2)]["value"].iloc[0]) == 0.5
    assert "lr" not in set(curves.series)
    doc = tmp_path / "doc.md"
    doc.write_text("# title\n\nprose\n")
    text = convergence_report.build(str(dest), str(doc))
    # A: mean and sample std of 30 and 34; B: a single run, no std
    assert "| A | 2 | 32.0 ± 2.8 |" in text and "| B | 1 | 20.0 |" in text
    # n, the mean over seeds at iterations 150 and 300, then each run's change over its last period:
    # A: 15 and 17 (30 / 2, 34 / 2) -> 16.0 ± 1.4; B: 10
    assert "| A | 2 | 16.0 | 32.0 | 16.0 ± 1.4 |" in text and "| B | 1 | 10.0 | 20.0 | 10.0 |" in text
    novel = text.split("Novel-class val mIoU (%) during training:")[1]
    # (30/3 + 34/3) / 2, (15 + 17) / 2; changes 30/2 - 30/3 = 5.0 and 34/6 = 5.67 -> 5.3 ± 0.5
    assert "| A | 2 | 10.7 | 16.0 | 5.3 ± 0.5 |" in novel and "| B | 1 | 6.7 | 10.0 | 3.3 |" in novel
    assert (dest / "curves_novel_miou.png").is_file()
    assert (dest / "curves_miou.png").is_file() and (dest / "curves_loss.png").is_file()
    assert doc.read_text().startswith("# title\n\nprose\n")
    # a second sweep's table goes to its own block; the first one stays
    convergence_report.main([str(dest), "--doc", str(doc), "--block", "recipe-table"])
    blocks = doc.read_text().split("<!-- generated:recipe-table -->")
    assert "<!-- generated:convergence-table -->" in blocks[0] and "| A | 2 | 32.0 ± 2.8 |" in blocks[1]


def test_replace_block_keeps_prose_and_replaces_only_the_block(tmp_path):
    doc = tmp_path / "d.md"
    doc.write_text("before\n<!-- generated:t -->\nold\n<!-- /generated:t -->\nafter\n")
    replace_block(str(doc), "t", "new table")
    assert doc.read_text() == "before\n<!-- generated:t -->\nnew table\n<!-- /generated:t -->\nafter\n"
    replace_block(str(doc), "u", "other")
    assert doc.read_text().endswith("after\n\n<!-- generated:u -->\nother\n<!-- /generated:u -->\n")


def test_dropout_probe_table_lists_each_row(tmp_path):
    pd.DataFrame([("fully_oracle.yaml", 0.1, 200, 2, 68.8, 76.0, 39.7),
                  ("fully_oracle.yaml", 0.0, 200, 2, 99.6, 99.7, 99.3)],
                 columns=["config", "dropout", "steps", "images", "train_miou", "train_base_miou",
                          "train_novel_miou"]).to_csv(tmp_path / "dropout_probe.csv", index=False)
    text = convergence_report.probe_tables(str(tmp_path))
    assert "| fully_oracle.yaml | 0.1 | 2 | 200 | 68.8 / 76.0 / 39.7 |" in text
    assert "| fully_oracle.yaml | 0 | 2 | 200 | 99.6 / 99.7 / 99.3 |" in text
