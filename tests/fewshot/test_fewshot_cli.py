"""`simformer fewshot` end to end on a tiny model and the tiny ToyScenes, and its errors; the
committed fold files."""
import json
import os

import pytest

from simformer.cli import main
from tiny_config import TINY

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
CONFIG = os.path.join(ROOT, "configs", "toyscenes", "simformer.yaml")
OPTS = TINY + ["MODEL.BACKBONE.WEIGHTS", ""]


def save_tiny_model(path, num_classes):
    from simformer.config import load_cfg
    from simformer.engine.checkpoint import Checkpointer
    from simformer.modeling.meta_arch import build_model

    model = build_model(load_cfg(CONFIG, OPTS), num_classes, None)
    Checkpointer(os.path.dirname(path)).save(os.path.splitext(os.path.basename(path))[0], model=model, iteration=0)
    return path


def tiny_fold(path, min_pixels):
    """A fold of the training classes present in >= 3 of the 8 tiny training images."""
    from simformer.data.catalog import class_names
    from simformer.data.class_split import make_split, save_split
    from simformer.data.presence import class_pixel_counts

    counts = class_pixel_counts("toyscenes_train")
    novel = [c for c in range(counts.shape[1]) if (counts[:, c] >= min_pixels).sum() >= 3][:3]
    assert len(novel) >= 2
    save_split(make_split("toyscenes", class_names("toyscenes"), novel, {"method": "test"}), path)
    return path, int(min((counts[:, c] >= min_pixels).sum() for c in novel))


def test_fewshot_command_end_to_end_and_errors(toy_env, tmp_path, capsys):
    weights = save_tiny_model(str(tmp_path / "model" / "model_final.pth"), 24)
    fold, fewest = tiny_fold(str(tmp_path / "fold.json"), 20)
    out = str(tmp_path / "fs")
    base = ["fewshot", "--config", CONFIG, "--weights", weights, "--fold", fold, "--dataset", "toyscenes_train",
            "--min-pixels", "20"]
    code = main(base + ["--shots", "1", "--episodes", "5", "--seed", "0", "--method", "prototype",
                        "--method", "oracle", "--output", out, "--no-progress"] + OPTS)
    printed = capsys.readouterr().out
    assert code == 0, printed
    rows = [line.split() for line in printed.splitlines() if not line.startswith("[")]  # log lines start with [time
    assert rows[0] == ["method", "mIoU", "FB-IoU", "n"]
    assert [r[0] for r in rows[1:3]] == ["prototype", "oracle"] and rows[1][3] == rows[2][3] == "5"
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert set(metrics["methods"]) == {"prototype", "oracle"}
    assert metrics["methods"]["oracle"]["n_episodes"] == 5 and metrics["run"]["dataset_name"] == "toyscenes_train"
    for f in ("episodes.json", "per_class.csv", "results.csv"):
        assert os.path.isfile(os.path.join(out, f))

    def error(argv):
        code = main(argv)
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        return code, err

    o = ["--output", str(tmp_path / "x")] + OPTS
    assert error(base + ["--shots", "0"] + o)[0] == 2
    code, err = error(base + ["--method", "nope"] + o)
    assert code == 2 and "unknown --method ['nope']" in err
    code, err = error(base + ["--shots", str(fewest), "--episodes", "2"] + o)  # one image short for some class
    assert code == 1 and f"fewer than shots + 1 = {fewest + 1} images" in err
    other = save_tiny_model(str(tmp_path / "other" / "model_final.pth"), 20)
    code, err = error(base[:4] + [other] + base[5:] + ["--episodes", "2"] + o)
    assert code == 1 and "another number of classes (the checkpoint has 20, dataset 'toyscenes_train' has 24)" in err
    code, err = error(base[:6] + [os.path.join(ROOT, "splits", "ade20k", "split1.json")] + o)
    assert code == 1 and "class names do not match" in err


def test_committed_folds_regenerate(tmp_path):
    for family, stem in (("toyscenes", "fewshot_fold"), ("coco_stuff_10k", "coco20i_fold")):
        out = tmp_path / family
        assert main(["split", "--fewshot-folds", family, "--output", str(out), "--no-stats"]) == 0
        for i in range(4):
            committed = json.load(open(os.path.join(ROOT, "splits", family, f"{stem}{i}.json")))
            assert json.load(open(out / f"{stem}{i}.json")) == committed


def test_committed_folds():
    from simformer.data.catalog import builtin_class_names
    from simformer.fewshot.folds import COCO20I_LABEL, coco20i_folds, interleaved_folds, load_fold

    toy = [load_fold(os.path.join(ROOT, "splits", "toyscenes", f"fewshot_fold{i}.json")) for i in range(4)]
    assert [f.class_ids for f in toy] == [tuple(range(i, 24, 4)) for i in range(4)]
    assert [f.class_ids for f in toy] == [s.novel for s in interleaved_folds("toyscenes", builtin_class_names("toyscenes"))]
    assert toy[0].name == "toyscenes/fewshot_fold0" and toy[0].label == ""
    coco = [load_fold(os.path.join(ROOT, "splits", "coco_stuff_10k", f"coco20i_fold{i}.json")) for i in range(4)]
    names = builtin_class_names("coco_stuff_10k")
    assert [f.class_ids for f in coco] == [s.novel for s in coco20i_folds(names)]
    assert sorted(c for f in coco for c in f.class_ids) == list(range(80))  # the 80 things, each in one fold
    # HSNet's fold 0: COCO classes 1, 5, 9, ... (1-based) = person, airplane, boat, parking meter, dog, ...
    assert [names[c] for c in coco[0].class_ids[:5]] == ["person", "airplane", "boat", "parking meter", "dog"]
    assert [names[c] for c in coco[3].class_ids[-2:]] == ["vase", "toothbrush"]
    assert all(f.label == COCO20I_LABEL for f in coco)
    split1 = load_fold(os.path.join(ROOT, "splits", "toyscenes", "split1.json"))  # any split file is a fold
    assert split1.class_ids == (1, 7, 16, 17, 21, 23)
    with pytest.raises(ValueError, match="not the 80 COCO thing classes"):
        coco20i_folds(names[1:] + names[:1])
