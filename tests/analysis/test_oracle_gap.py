"""analysis/oracle_gap.py on a fake runs folder with tiny models, and the report's oracle gap table."""
import json
import os
import sys

import pandas as pd
import pytest
import torch

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "analysis"))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import oracle_gap  # noqa: E402
import toyscenes_report  # noqa: E402
from tiny_config import TINY  # noqa: E402

CONFIG = os.path.join(ROOT, "configs", "toyscenes", "simformer.yaml")


def fake_run(folder, seed, config=CONFIG, record=None):
    """A run folder as `simformer train` leaves it: config.yaml + model_final.pth (+ sweep_run.json)."""
    from simformer.config import load_cfg
    from simformer.engine.checkpoint import Checkpointer
    from simformer.modeling.meta_arch import build_model
    from simformer.data.class_split import resolve_split

    cfg = load_cfg(config, TINY + ["MODEL.BACKBONE.WEIGHTS", "", "SEED", str(seed), "OUTPUT_DIR", str(folder)])
    os.makedirs(folder, exist_ok=True)
    (folder / "config.yaml").write_text(cfg.dump())
    torch.manual_seed(seed)
    model = build_model(cfg, 24, resolve_split(cfg, "toyscenes_val"))
    Checkpointer(str(folder)).save("model_final", model=model, iteration=0)
    if record:
        (folder / "sweep_run.json").write_text(json.dumps(record))
    return cfg, model


def test_oracle_gap_rows_on_fake_runs(toy_env, tmp_path, capsys):
    from simformer.evaluation.evaluator import evaluate_model
    from simformer.data.class_split import resolve_split

    runs = tmp_path / "runs"
    cfg, model = fake_run(runs / "A" / "split1" / "seed3", 3)  # no sweep_run.json: from the path
    fake_run(runs / "SimFormer*" / "split1" / "seed1" / "stage2_retrain", 1)  # pipeline: the retrained model
    (runs / "SimFormer*" / "split1" / "seed1" / "sweep_run.json").write_text(
        json.dumps({"method": "SimFormer*", "split": "split1", "seed": 1}))
    fake_run(runs / "CAMrun", 2, config=os.path.join(ROOT, "configs", "toyscenes", "cam.yaml"))  # no proposals
    (runs / "A" / "split1" / "seed3.old-20240101-000000").mkdir()  # moved aside: not a run
    out = tmp_path / "gap.csv"
    assert oracle_gap.main([str(runs), "--out", str(out)]) == 0
    assert "skipped CAMrun" in capsys.readouterr().err
    df = pd.read_csv(out)
    assert list(df.columns) == oracle_gap.COLUMNS
    assert df[["method", "split", "seed"]].values.tolist() == [["A", "split1", 3], ["SimFormer*", "split1", 1]]
    assert df["run"].tolist() == [os.path.join("A", "split1", "seed3"), os.path.join("SimFormer*", "split1", "seed1")]
    # achieved = the evaluator's novel mIoU of the same weights (an independent computation)
    model.eval()
    ev = evaluate_model(model, cfg, "toyscenes_val", resolve_split(cfg, "toyscenes_val"), verbose=False)
    row = df.iloc[0]
    assert row["novel_achieved"] == pytest.approx(ev["novel_miou"], abs=1e-3)
    assert row["base_achieved"] == pytest.approx(ev["base_miou"], abs=1e-3)
    assert (df["oracle_gap"] - (df["novel_oracle"] - df["novel_achieved"])).abs().max() < 1e-3
    assert (df["num_images"] == 4).all() and df["novel_union"].notna().all()

    # a finished pipeline copies the retrained weights and config up: still one row
    star = runs / "SimFormer*" / "split1" / "seed1"
    for name in ("config.yaml", "model_final.pth"):
        (star / name).write_bytes((star / "stage2_retrain" / name).read_bytes())
    assert [r["run"] for r in oracle_gap.find_runs(str(runs))] == [os.path.join("A", "split1", "seed3"), "CAMrun",
                                                                  os.path.join("SimFormer*", "split1", "seed1")]
    # a linked run (another sweep's) is found; --keep analyses only the runs not yet in the CSV
    os.makedirs(runs / "B" / "split1")
    os.symlink(runs / "A" / "split1" / "seed3", runs / "B" / "split1" / "seed3")
    marked = df.assign(novel_oracle=df["novel_oracle"] + 1000.0)  # a kept row is copied, not recomputed
    marked.to_csv(out, index=False)
    assert oracle_gap.main([str(runs), "--out", str(out), "--keep"]) == 0
    again = pd.read_csv(out)
    assert again["run"].tolist() == [os.path.join("A", "split1", "seed3"), os.path.join("B", "split1", "seed3"),
                                     os.path.join("SimFormer*", "split1", "seed1")]
    assert (again.set_index("run").loc[list(df["run"]), "novel_oracle"] >= 1000.0).all()
    assert again.set_index("run").loc[os.path.join("B", "split1", "seed3"), "novel_oracle"] == pytest.approx(
        df.iloc[0]["novel_oracle"], abs=1e-3)
    # a run no longer on this machine (its folder gone) keeps its committed row under --keep
    os.remove(runs / "B" / "split1" / "seed3")
    assert oracle_gap.main([str(runs), "--out", str(out), "--keep"]) == 0
    assert pd.read_csv(out).equals(again)


def test_report_oracle_gap_table(tmp_path):
    gap = pd.DataFrame({"method": ["FullyOracle", "SimFormer", "SimFormer"], "split": "split1", "seed": [1, 1, 2],
                        "novel_achieved": [60.0, 20.0, 30.0], "novel_oracle": [70.0, 50.0, 54.0],
                        "novel_union": [72.0, 55.0, 60.0], "oracle_gap": [10.0, 30.0, 24.0]})
    text = toyscenes_report.oracle_gap_table(gap, order=["SimFormer", "FullyOracle"])
    lines = [x for x in text.splitlines() if x.startswith("| ")]
    assert lines[1] == "| SimFormer | 2 | 25.0 ± 7.1 | 52.0 ± 2.8 | 57.5 ± 3.5 | 27.0 ± 4.2 |"
    assert lines[2] == "| FullyOracle | 1 | 60.0 | 70.0 | 72.0 | 10.0 |"
    with pytest.raises(ValueError, match="oracle_gap"):
        toyscenes_report.oracle_gap_table(gap.drop(columns=["oracle_gap"]))
    # through build(): the table lands in tables.md and in the doc's generated block
    results = tmp_path / "results.csv"
    pd.DataFrame({"method": ["SimFormer", "SimFormer", "FullyOracle"], "split": "split1", "seed": [1, 2, 1],
                  "novel_miou": [20.0, 30.0, 60.0], "base_miou": [50.0, 52.0, 55.0], "miou": [40.0, 45.0, 56.0],
                  "hm": [28.0, 38.0, 57.0]}).to_csv(results, index=False)
    gap_csv = tmp_path / "gap.csv"
    gap.to_csv(gap_csv, index=False)
    doc = tmp_path / "doc.md"
    doc.write_text("# R\n\n<!-- generated:oracle_gap -->\nold\n<!-- /generated:oracle_gap -->\n\ntail\n")
    toyscenes_report.build(str(results), str(tmp_path / "out"), str(doc), str(gap_csv))
    assert lines[1] in (tmp_path / "out" / "tables.md").read_text()
    body = doc.read_text()
    assert lines[1] in body and "\nold\n" not in body and "tail" in body and "<!-- generated:summary -->" in body
