"""The command line end to end on tiny data: train -> eval -> visualize -> pseudo-label, and errors."""
import json
import os

import pytest

from simformer.cli import COMMANDS, build_parser, main
from tiny_config import TINY

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "toyscenes", "simformer.yaml")


def test_every_verb_has_help(capsys):
    parser = build_parser()
    for verb in COMMANDS:
        with pytest.raises(SystemExit) as e:
            parser.parse_args([verb, "--help"])
        assert e.value.code == 0
        assert "usage: simformer " + verb in capsys.readouterr().out


def test_train_eval_visualize_pseudo_label(toy_env, tmp_path):
    run = str(tmp_path / "run")
    opts = TINY + ["SOLVER.MAX_ITER", "2"]
    assert main(["train", "--config", CONFIG, "--output", run] + opts) == 0
    weights = os.path.join(run, "model_final.pth")
    out = str(tmp_path / "eval")
    assert main(["eval", "--config", CONFIG, "--weights", weights, "--out", out] + opts) == 0
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert {"miou", "base_miou", "novel_miou", "hm", "fwiou", "macc", "pacc", "per_class_iou"} <= set(metrics)
    # the training run evaluated the same weights on the same data
    assert json.load(open(os.path.join(run, "metrics.json")))["miou"] == pytest.approx(metrics["miou"])
    figs = str(tmp_path / "figs")
    assert main(["visualize", "--config", CONFIG, "--weights", weights, "--out", figs, "--num", "2"] + opts) == 0
    assert any(f.endswith("_grid.png") for f in os.listdir(figs))
    labels = str(tmp_path / "pseudo")
    assert main(["pseudo-label", "--config", CONFIG, "--weights", weights, "--out", labels] + opts) == 0
    assert len([f for f in os.listdir(labels) if f.endswith(".png")]) == 8


def test_bad_input_exits_2_with_message(toy_env, tmp_path, capsys):
    assert main(["train", "--config", CONFIG, "--output", str(tmp_path), "SOLVER.MAX_ITERS", "2"]) == 2
    err = capsys.readouterr().err
    assert "SOLVER.MAX_ITERS" in err and "command line" in err
    assert main(["eval", "--config", CONFIG, "--weights", str(tmp_path / "missing.pth")]) == 2
    assert "missing.pth" in capsys.readouterr().err
