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
    # detectron2's --config-file and the canonical --output; the old --out stays an alias below
    assert main(["eval", "--config-file", CONFIG, "--weights", weights, "--output", out] + opts) == 0
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


def test_usage_errors_exit_2_data_errors_exit_1(toy_env, tmp_path, capsys):
    # config / usage: 2, every problem listed
    assert main(["train", "--config", CONFIG, "--output", str(tmp_path), "SOLVER.MAX_ITERS", "2",
                 "SOLVER.OPTIMIZER", "SGD"]) == 2
    err = capsys.readouterr().err
    assert "SOLVER.MAX_ITERS" in err and "command line" in err and "SOLVER.OPTIMIZER = 'SGD'" in err
    assert main(["prepare", "ade20k", "--root", str(tmp_path), "--num-train", "3"]) == 2
    assert "--num-train only apply to `simformer prepare toyscenes`" in capsys.readouterr().err
    assert main(["train", "--config", CONFIG, "--num-gpus", "0"]) == 2
    assert "--num-gpus must be >= 1" in capsys.readouterr().err
    # data / runtime: 1, one line, no traceback
    assert main(["eval", "--config", CONFIG, "--weights", str(tmp_path / "missing.pth")]) == 1
    err = capsys.readouterr().err
    assert "missing.pth" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["score", "--pred", str(tmp_path / "nope"), "--gt", str(tmp_path), "--dataset", "toyscenes"]) == 1
    assert "No ground-truth PNGs in" in capsys.readouterr().err


def test_exit_code_mapping():
    from simformer.cli import exit_code_for
    from simformer.commands import UsageError
    from simformer.config import ConfigError

    assert [exit_code_for(e) for e in (UsageError("x"), ConfigError("x"), KeyError("x"), FileNotFoundError("x"),
                                       ValueError("x"), RuntimeError("x"), FloatingPointError("x"))] == [2, 2, 2, 1, 1, 1, 1]
    assert exit_code_for(TypeError("a bug")) is None  # unexpected errors keep their traceback
    try:
        from submitit.core.utils import FailedJobError, UncompletedJobError
    except ImportError:
        return
    assert exit_code_for(FailedJobError("job 1 failed")) == 1 and exit_code_for(UncompletedJobError("x")) == 1
    from simformer.cli import _one_line

    remote = FailedJobError("Job (task=0) failed during processing with trace:\n----\nTraceback (most recent call "
                            "last):\n  File \"x.py\", line 1\nValueError: boom\n")
    line = _one_line(remote, 1)
    assert "\n" not in line and line.endswith("ValueError: boom (full error: add -v)")


def test_every_verb_takes_common_options_and_documents_exit_codes(capsys):
    parser = build_parser()
    for verb in COMMANDS:
        with pytest.raises(SystemExit):
            parser.parse_args([verb, "--help"])
        out = capsys.readouterr().out
        for opt in ("-q, --quiet", "-v, --verbose", "--no-progress", "exit status:", "2    usage or config error"):
            assert opt in out, (verb, opt)
    for kind in ("bars", "curve"):
        with pytest.raises(SystemExit):
            parser.parse_args(["plot", kind, "--help"])
        assert "--no-progress" in capsys.readouterr().out
    args = parser.parse_args(["plot", "bars", "r.csv", "--out", "x.png", "-q"])
    assert args.quiet and args.out == "x.png"


def test_one_name_per_concept_old_names_kept():
    parser = build_parser()
    a = parser.parse_args(["eval", "--config-file", "c.yaml", "--weights", "w", "--out", "o"])
    b = parser.parse_args(["eval", "--config", "c.yaml", "--weights", "w", "--output", "o"])
    assert (a.config, a.out) == (b.config, b.out) == ("c.yaml", "o")
    for verb_args in (["score", "--pred", "p", "--gt", "g", "--dataset", "d"], ["stats", "r.csv", "--baseline", "b"],
                      ["visualize", "--config", "c", "--weights", "w"], ["pseudo-label", "--config", "c", "--weights", "w"]):
        assert parser.parse_args(verb_args + ["--output", "o"]).out == "o"
        assert parser.parse_args(verb_args + ["--out", "o"]).out == "o"
    assert parser.parse_args(["train", "--config-file", "c", "--out", "o"]).output == "o"
    assert parser.parse_args(["sweep", "s.yaml", "--workers", "3"]).jobs == 3
    assert parser.parse_args(["sweep", "s.yaml", "-j", "3"]).jobs == parser.parse_args(["sweep", "s.yaml", "--jobs", "3"]).jobs == 3
    assert parser.parse_args(["prepare", "toyscenes", "--jobs", "2"]).workers == 2
    assert parser.parse_args(["split", "--paper", "all", "-j", "2"]).workers == 2


def test_split_output_is_file_or_folder(tmp_path):
    assert main(["split", "--paper", "ade20k/split2", "--output", str(tmp_path / "s2.json")]) == 0
    assert main(["split", "--paper", "ade20k/split2", "--output", str(tmp_path / "d")]) == 0
    a = json.load(open(tmp_path / "s2.json"))
    b = json.load(open(tmp_path / "d" / "ade20k" / "split2.json"))
    assert a["novel"] == b["novel"] and len(a["novel"]) == 38
    assert main(["split", "--paper", "all", "--output", str(tmp_path / "all"), "--no-stats", "-q"]) == 0
    assert len(os.listdir(tmp_path / "all" / "coco_stuff_10k")) == 9
    assert main(["split", "--paper", "all", "--output", str(tmp_path / "x"), "--out-dir", str(tmp_path / "y")]) == 2


def test_config_verb(tmp_path, capsys):
    import yaml

    from simformer.config import load_cfg

    assert main(["config", "--config", CONFIG, "SOLVER.MAX_ITER", "7"]) == 0
    out = capsys.readouterr().out
    printed = yaml.safe_load(out)
    expected = load_cfg(CONFIG, ["SOLVER.MAX_ITER", "7"])
    assert printed["SOLVER"]["MAX_ITER"] == 7 and printed == yaml.safe_load(expected.dump())
    mf = os.path.join(os.path.dirname(__file__), "config", "fixtures", "maskformer", "ade20k-150",
                      "maskformer_R50_bs16_160k.yaml")
    assert main(["config", "--config-file", mf, "--output", str(tmp_path / "r.yaml")]) == 0
    out = capsys.readouterr().out
    assert "# " in out and "SOLVER.OPTIMIZER = 'ADAMW'" in out and "accepted" in out
    resolved = yaml.safe_load(out)
    assert resolved["MODEL"]["BACKBONE"]["NAME"] == "resnet50" and resolved["WEAKSHOT"]["PAIR_MODE"] == "none"
    assert yaml.safe_load(open(tmp_path / "r.yaml")) == resolved
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"_BASE_: {mf}\nSOLVER:\n  OPTIMIZER: SGD\n  LR_SCHEDULER_NAME: WarmupCosineLR\nFOO: 1\n")
    assert main(["config", "--config", str(bad), "MODEL.RESNETS.DEPTH", "18"]) == 2
    err = capsys.readouterr().err
    assert "4 problem(s)" in err
    for piece in ("SOLVER.OPTIMIZER = 'SGD'", "WarmupCosineLR", "'FOO'", "MODEL.RESNETS.DEPTH = 18"):
        assert piece in err, piece


def test_num_gpus_launches_local_processes(toy_env, tmp_path, monkeypatch):
    """--num-gpus 2 (gloo on CPU) trains the same model as one process with the same global batch."""
    import torch

    # The same thread count everywhere: another count changes the reduction order (and the weights).
    monkeypatch.setenv("SIMFORMER_THREADS", "1")

    det = ["WEAKSHOT.PAIR_MODE", "none", "WEAKSHOT.SIMNET.ENABLED", "False", "WEAKSHOT.DISTILL.ENABLED", "False",
           "WEAKSHOT.COMPLEMENTARY.ENABLED", "False", "MODEL.MASK_FORMER.DROPOUT", "0.0", "SOLVER.MAX_ITER", "1",
           "DATASETS.TEST", "[]", "SOLVER.IMS_PER_BATCH", "4"]
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    assert main(["train", "--config", CONFIG, "--output", one, "-q"] + TINY + det) == 0
    assert main(["train", "--config-file", CONFIG, "--num-gpus", "2", "--output", two, "-q"] + TINY + det) == 0
    a = torch.load(os.path.join(one, "model_final.pth"), weights_only=True)["model"]
    b = torch.load(os.path.join(two, "model_final.pth"), weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    assert "2 rank(s)" in open(os.path.join(two, "log.txt")).read()
