"""analysis/simnet_checkpoints.py: checkpoint discovery, its three tables against hand / scipy
figures, and one fake run scored against analyze_simnet on the same weights."""
import json
import os
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "analysis"))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import simnet_checkpoints as sc  # noqa: E402
from tiny_config import TINY  # noqa: E402

CONFIG = os.path.join(ROOT, "configs", "toyscenes", "simformer.yaml")


def row(method, seed, iteration, pairs, draw, novel, base=70.0):
    return dict(method=method, split="split1", seed=seed, run=f"sweep/{method}/split1/seed{seed}",
                iteration=iteration, pairs=pairs, draw=draw, base_f1_similar=base, base_f1_dissimilar=80.0,
                base_similar_share=20.0, base_pairs=1000, novel_f1_similar=novel, novel_f1_dissimilar=75.0,
                novel_similar_share=40.0, novel_pairs=900)


def test_checkpoints_sorted_final_last(tmp_path):
    for name in ("model_0000400.pth", "model_0000200.pth", "model_final.pth", "model_0000600.pth", "notes.pth"):
        (tmp_path / name).write_bytes(b"")
    found = sc.checkpoints(str(tmp_path), 600)  # a periodic save at the last step is the final model
    assert [(i, os.path.basename(p)) for i, p in found] == [(200, "model_0000200.pth"), (400, "model_0000400.pth"),
                                                           (600, "model_final.pth")]


def test_tables_against_hand_and_scipy():
    novel = {"SimFormer": (50.0, 40.0, 45.0), "SimFormer@1800": (45.0, 38.0, 37.0)}
    rows = []
    for method, finals in novel.items():
        last = 1800 if "@" in method else 1200
        for seed, v in zip((1, 2, 3), finals):
            rows.append(row(method, seed, last - 200, 1000, 0, v + 4, base=60.0))
            rows.append(row(method, seed, last, 1000, 0, v, base=60.0 + seed * (2 if "@" in method else 1)))
            rows += [row(method, seed, last, 100, d, v + off) for d, off in enumerate((-10.0, 0.0, 10.0))]
    df = pd.DataFrame(rows, columns=sc.COLUMNS)
    text = sc.blocks(df)
    lines = text.splitlines()
    # checkpoint table: SimFormer at 1200 = 50, 40, 45 -> 45.0 ± 5.0; at 1000 each + 4
    assert "| SimFormer | 1200 | 3 | 45.0 ± 5.0 | 75.0 ± 0.0 | 62.0 ± 1.0 | 80.0 ± 0.0 |" in lines
    assert "| SimFormer | 1000 | 3 | 49.0 ± 5.0 | 75.0 ± 0.0 | 60.0 ± 0.0 | 80.0 ± 0.0 |" in lines
    # draws -10, 0, +10 around each run's value: std 10, range 20; checkpoints v + 4, v: std
    # sqrt(8) = 2.8, one change of 4; final models 45, 38, 37 -> 40.0 ± 4.4
    assert "| SimFormer@1800 | 3 | 10.0 | 20.0 | 2.8 | 4.0 | 40.0 ± 4.4 |" in lines
    # paired: novel differences -5, -2, -8; base +1, +2, +3
    d = np.array([-5.0, -2.0, -8.0])
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    p = stats.ttest_rel([45.0, 38.0, 37.0], [50.0, 40.0, 45.0]).pvalue
    paired = next(ln for ln in lines if ln.startswith("| SimFormer@1800 vs SimFormer |"))
    cells = [c.strip() for c in paired.strip("|").split("|")]
    assert cells[1] == "3"
    assert cells[2] == f"{d.mean():+.1f} [{d.mean() - half:+.1f}, {d.mean() + half:+.1f}]"
    assert float(cells[3]) == pytest.approx(p, rel=0.01)
    half_base = stats.t.ppf(0.975, 2) * 1.0 / np.sqrt(3)  # differences 1, 2, 3: sd 1
    assert cells[4] == f"+2.0 [{2 - half_base:+.1f}, {2 + half_base:+.1f}]"
    assert "1000 training image pairs" in text and "100 training image pairs per draw" in text
    assert "| 100 pairs: std over 3 draws |" in text
    # no X@B beside its X: no paired table
    assert "paired by seed" not in sc.blocks(df[df["method"] == "SimFormer"])


def test_fake_run_rows_equal_analyze_simnet(toy_env, tmp_path):
    from simformer.config import load_cfg
    from simformer.data.class_split import resolve_split
    from simformer.engine.checkpoint import Checkpointer
    from simformer.evaluation.simnet_transfer import simnet_transfer_on_training_pairs
    from simformer.modeling.meta_arch import build_model

    folder = tmp_path / "sweep" / "SimFormer" / "split1" / "seed2"
    cfg = load_cfg(CONFIG, TINY + ["MODEL.BACKBONE.WEIGHTS", "", "SEED", "2", "OUTPUT_DIR", str(folder),
                                   "SOLVER.MAX_ITER", "4"])
    os.makedirs(folder)
    (folder / "config.yaml").write_text(cfg.dump())
    (folder / "sweep_run.json").write_text(json.dumps({"method": "SimFormer", "split": "split1", "seed": 2}))
    split = resolve_split(cfg, "toyscenes_train")
    models = []
    for name, init in (("model_0000002", 0), ("model_final", 1)):  # two checkpoints, different weights
        torch.manual_seed(init)
        models.append(build_model(cfg, 24, split))
        Checkpointer(str(folder)).save(name, model=models[-1], iteration=init)
    out = tmp_path / "ck.csv"
    args = [str(tmp_path / "sweep"), "--out", str(out), "--pairs", "3", "--draw-pairs", "2", "--draws", "2"]
    assert sc.main(args) == 0
    df = pd.read_csv(out)
    assert df["novel_f1_similar"].iloc[0] != df["novel_f1_similar"].iloc[1]  # the two weights differ
    assert df[["run", "iteration", "pairs", "draw"]].values.tolist() == [
        [os.path.join("sweep", "SimFormer", "split1", "seed2"), 2, 3, 0],
        [os.path.join("sweep", "SimFormer", "split1", "seed2"), 4, 3, 0],
        [os.path.join("sweep", "SimFormer", "split1", "seed2"), 4, 2, 0],
        [os.path.join("sweep", "SimFormer", "split1", "seed2"), 4, 2, 1]]
    # independent: each checkpoint's own model, loader seed = draw
    for model, (_, r) in zip(models + [models[1]], df.iloc[:3].iterrows()):
        c = cfg.clone()
        c.defrost()
        c.SEED = int(r["draw"])
        s = simnet_transfer_on_training_pairs(model, c, split, num_image_pairs=int(r["pairs"]),
                                              seed=int(r["draw"])).summary()
        assert r["novel_f1_similar"] == pytest.approx(s["novel"]["f1_similar"], abs=1e-3)
        assert r["base_f1_dissimilar"] == pytest.approx(s["base"]["f1_dissimilar"], abs=1e-3)
        assert r["novel_pairs"] == s["novel"]["pairs"]
    # --keep: the run is not scored again, the rows stay
    assert sc.main(args + ["--keep"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out), df)
