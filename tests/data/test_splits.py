"""Split generation, committed split files, split validation and the `simformer split` command."""
import argparse
import json
import os
from importlib import resources

import numpy as np
import pytest
from PIL import Image

from simformer.commands import split as split_cmd
from simformer.data import catalog
from simformer.data.class_split import SplitError, load_split, make_split
from simformer.data.class_split_gen import (format_summary, nested_splits, paper_split, paper_split_keys, random_split,
                                   split_summary)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPLITS = os.path.join(REPO, "splits")
PAPER = json.loads(resources.files("simformer.resources").joinpath("paper_splits.json").read_text())
NAMES = json.loads(resources.files("simformer.resources").joinpath("class_names.json").read_text())
TOY = catalog.class_names("toyscenes")


def cli(*argv):
    parser = argparse.ArgumentParser()
    split_cmd.add_arguments(parser)
    args = parser.parse_args(list(argv))
    args.command = "split"
    return split_cmd.run(args)


# ----------------------------------------------------------------------------- paper splits
def test_paper_keys():
    keys = paper_split_keys()
    assert keys == [f"coco_stuff_10k/split{i}" for i in range(1, 10)] + [f"ade20k/split{i}" for i in range(1, 5)]


@pytest.mark.parametrize("family,n_splits,k", [("coco_stuff_10k", 9, 171), ("ade20k", 4, 150)])
def test_committed_paper_split_files_equal_package_data(family, n_splits, k):
    assert len(NAMES[family]) == k
    for i in range(1, n_splits + 1):
        path = os.path.join(SPLITS, family, f"split{i}.json")
        s = load_split(path)
        expected_novel = sorted(PAPER[family][f"split{i}"])
        assert list(s.novel) == expected_novel
        assert list(s.base) == [c for c in range(k) if c not in set(expected_novel)]
        assert list(s.class_names) == NAMES[family]
        assert s.dataset == family and s.source == {"method": "paper", "key": f"{family}/split{i}"}
        assert paper_split(f"{family}/split{i}") == s


def test_paper_split_sizes_and_coco_nesting():
    sizes = [len(paper_split(f"coco_stuff_10k/split{i}").novel) for i in range(1, 10)]
    assert sizes == [43, 43, 43, 43, 51, 59, 68, 76, 85]
    assert [len(paper_split(f"ade20k/split{i}").novel) for i in range(1, 5)] == [38] * 4
    for i in range(4, 9):
        assert set(paper_split(f"coco_stuff_10k/split{i}").novel) < set(paper_split(f"coco_stuff_10k/split{i + 1}").novel)


def test_unknown_paper_split():
    with pytest.raises(KeyError, match="coco_stuff_10k/split10"):
        paper_split("coco_stuff_10k/split10")


# ----------------------------------------------------------------------------- random / nested
@pytest.mark.parametrize("k,expected", [(171, 43), (150, 38), (24, 6), (10, 3)])
def test_random_split_ratio(k, expected):
    names = [f"c{i}" for i in range(k)]
    s = random_split("x", names, novel_ratio=0.25, seed=0)
    assert len(s.novel) == expected and len(s.base) == k - expected
    assert sorted(s.base + s.novel) == list(range(k))
    assert s.source == {"method": "random", "seed": 0, "novel_ratio": 0.25, "num_novel": expected}
    assert len(random_split("x", names, novel_ratio=0.5, seed=0).novel) == (k + 1) // 2  # half rounds up


def test_random_split_reproducible_and_seed_dependent():
    a = random_split("toyscenes", TOY, seed=7)
    b = random_split("toyscenes", TOY, seed=7)
    assert a.novel == b.novel
    draws = {random_split("toyscenes", TOY, seed=s).novel for s in range(10)}
    assert len(draws) >= 8  # C(24, 6) = 134596 subsets: collisions are essentially impossible
    # reference: the first n entries of the seeded permutation
    perm = np.random.default_rng(7).permutation(24)
    assert list(a.novel) == sorted(perm[:6].tolist())


def test_random_split_bad_ratio():
    with pytest.raises(ValueError, match="novel_ratio"):
        random_split("x", ["a", "b", "c"], novel_ratio=1.0, seed=0)
    with pytest.raises(ValueError, match="0 novel"):
        random_split("x", ["a", "b", "c"], novel_ratio=0.1, seed=0)


def test_nested_splits_are_nested_and_match_random():
    sizes = [6, 8, 10, 12]
    splits = nested_splits("toyscenes", TOY, seed=3, num_novel=sizes)
    assert [len(s.novel) for s in splits] == sizes
    for small, big in zip(splits, splits[1:]):
        assert set(small.novel) < set(big.novel)
        assert set(big.base) < set(small.base)
    assert splits[0].novel == random_split("toyscenes", TOY, seed=3).novel
    assert all(s.source["method"] == "nested" and s.source["seed"] == 3 for s in splits)
    # given order is kept
    rev = nested_splits("toyscenes", TOY, seed=3, num_novel=sizes[::-1])
    assert [s.novel for s in rev] == [s.novel for s in splits[::-1]]
    with pytest.raises(ValueError, match="out of range"):
        nested_splits("toyscenes", TOY, seed=3, num_novel=[6, 24])
    with pytest.raises(ValueError, match="twice"):
        nested_splits("toyscenes", TOY, seed=3, num_novel=[6, 6])


def test_min_images_constraint_honoured():
    k, n_img = 24, 40
    rng = np.random.default_rng(0)
    presence = np.zeros((n_img, k), dtype=bool)
    frequent = np.array([0, 3, 5, 9, 11, 14, 17, 20])  # 8 classes in >= 10 images
    for c in range(k):
        m = 10 + c if c in frequent else 2
        presence[rng.choice(n_img, m, replace=False), c] = True
    images_per_class = presence.sum(0)
    for seed in range(20):
        s = random_split("toy", TOY, seed=seed, presence=presence, min_images=10)
        assert set(s.novel) <= set(frequent.tolist())
        assert images_per_class[list(s.novel)].min() >= 10
        assert s.source["constraints"] == {"min_images": 10, "num_train_images": n_img}
    nested = nested_splits("toy", TOY, seed=1, num_novel=[6, 8], presence=presence, min_images=10)
    assert set(nested[1].novel) == set(frequent.tolist())
    with pytest.raises(ValueError, match="only 8 of 24 classes qualify"):
        random_split("toy", TOY, seed=0, presence=presence, min_images=10, novel_ratio=0.5)
    with pytest.raises(ValueError, match="presence"):
        random_split("toy", TOY, seed=0, min_images=1)


def test_committed_toyscenes_splits():
    for seed in (1, 2, 3):
        s = load_split(os.path.join(SPLITS, "toyscenes", f"split{seed}.json"))
        assert s.novel == random_split("toyscenes", TOY, seed=seed).novel and len(s.novel) == 6
        assert list(s.class_names) == TOY
    nested = [load_split(os.path.join(SPLITS, "toyscenes", "more_novel", f"novel{n}.json")) for n in (6, 8, 10, 12)]
    assert [n.novel for n in nested] == [x.novel for x in nested_splits("toyscenes", TOY, seed=1, num_novel=[6, 8, 10, 12])]
    assert nested[0].novel == load_split(os.path.join(SPLITS, "toyscenes", "split1.json")).novel


# ----------------------------------------------------------------------------- validation
def _write_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f)
    return str(path)


def _valid_dict():
    return paper_split("ade20k/split1").to_json()


@pytest.mark.parametrize("mutate,pattern", [
    (lambda d: d["base"].append(d["novel"][0]), "both base and novel"),
    (lambda d: d["novel"].pop(), "neither base nor novel"),
    (lambda d: d["novel"].append(150), r"outside 0\.\.149"),
    (lambda d: d["class_names"].__setitem__(3, "not-a-class"), "class names do not match"),
    (lambda d: d.pop("novel"), "lacks the key 'novel'"),
])
def test_load_split_rejects_invalid(tmp_path, mutate, pattern):
    d = _valid_dict()
    mutate(d)
    path = _write_json(tmp_path / "bad.json", d)
    with pytest.raises(SplitError, match=pattern) as e:
        load_split(path)
    assert path in str(e.value)
    assert cli("--validate", path) == 1


def test_validate_exit_codes(tmp_path, capsys):
    good = _write_json(tmp_path / "good.json", _valid_dict())
    assert cli("--validate", good) == 0
    assert "valid split" in capsys.readouterr().out
    assert cli("--validate", str(tmp_path / "missing.json")) == 1
    (tmp_path / "garbage.json").write_text("{not json")
    assert cli("--validate", str(tmp_path / "garbage.json")) == 1
    assert "not valid JSON" in capsys.readouterr().err


# ----------------------------------------------------------------------------- summary
def test_split_summary_values():
    names = ["a", "b", "c", "d"]
    s = make_split("x", names, [1, 3])
    counts = np.array([
        [10, 5, 0, 0],   # novel b
        [0, 0, 4, 4],    # novel d
        [6, 0, 0, 0],    # base only
        [0, 3, 0, 0],    # novel only, no base pixel
        [0, 0, 0, 0],    # all void
    ])
    out = split_summary(s, counts)
    total = counts.sum()
    assert out["num_base"] == 2 and out["num_novel"] == 2 and out["novel_names"] == ["b", "d"]
    assert out["novel_pixel_share"] == pytest.approx((5 + 4 + 3) / total)
    assert out["images_with_novel_share"] == pytest.approx(3 / 5)
    assert out["images_without_base"] == 2
    assert (out["novel_images_min"], out["novel_images_median"], out["novel_images_max"]) == (1, 1.5, 2)
    assert out["novel_min_class"] == "d" and out["absent_novel"] == []
    text = format_summary(out)
    assert "2 novel" in text and "1:b; 3:d" in text and "min 1 (d)" in text
    with pytest.raises(ValueError, match="pixel counts"):
        split_summary(s, counts[:, :3])
    assert "num_train_images" not in split_summary(s)


# ----------------------------------------------------------------------------- command
@pytest.fixture
def tiny_family(tmp_path, monkeypatch):
    """A registered user family 'tinyfam' (K = 8) with 12 training label PNGs."""
    monkeypatch.setenv("SIMFORMER_DATASETS", str(tmp_path / "droot"))
    monkeypatch.setenv("SIMFORMER_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "droot" / "tinyfam"
    (root / "images" / "train").mkdir(parents=True)
    (root / "annotations" / "train").mkdir(parents=True)
    names = [f"k{i}" for i in range(8)]
    (root / "classes.json").write_text(json.dumps(names))
    # class c appears in images 0..(c+ 1)-ish: image i contains classes {c : c <= i % 8}
    for i in range(12):
        lab = np.full((4, 4), 255, np.uint8)
        present = [c for c in range(8) if c <= i % 8]
        lab.flat[:len(present)] = present
        Image.fromarray(lab, mode="L").save(root / "annotations" / "train" / f"im{i:02d}.png")
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "images" / "train" / f"im{i:02d}.png")
    catalog.register_folder("tinyfam_train", str(root), "train", family="tinyfam")
    yield names
    catalog._REGISTRY.pop("tinyfam_train", None)


def test_cli_random_with_min_images_and_stats(tiny_family, tmp_path, capsys):
    out = str(tmp_path / "s.json")
    # images per class: class c is in the images i with i % 8 >= c
    per_class = np.array([sum(1 for i in range(12) if i % 8 >= c) for c in range(8)])
    assert cli("--dataset", "tinyfam", "--novel-ratio", "0.25", "--seed", "5", "--out", out, "--min-images", "6") == 0
    s = load_split(out)
    assert s.dataset == "tinyfam" and len(s.novel) == 2
    assert per_class[list(s.novel)].min() >= 6
    text = capsys.readouterr().out
    assert "wrote" in text and "training set (12 images)" in text
    # same command through the dataset name gives the same split; a different split needs --force
    assert cli("--dataset", "tinyfam_train", "--seed", "5", "--out", out, "--min-images", "6") == 0
    with pytest.raises(ValueError, match="--force"):
        cli("--dataset", "tinyfam", "--seed", "6", "--out", out)
    assert cli("--dataset", "tinyfam", "--seed", "6", "--out", out, "--force") == 0
    assert load_split(out).novel == random_split("tinyfam", tiny_family, seed=6).novel
    with pytest.raises(ValueError, match="only 1 of 8"):
        cli("--dataset", "tinyfam", "--seed", "5", "--out", out, "--force", "--min-images", "12")


def test_cli_nested_paper_show(tiny_family, tmp_path, capsys):
    d = tmp_path / "nested"
    assert cli("--dataset", "tinyfam", "--nested", "2,3,5", "--seed", "1", "--out-dir", str(d)) == 0
    loaded = [load_split(str(d / f"novel{n}.json")) for n in (2, 3, 5)]
    assert set(loaded[0].novel) < set(loaded[1].novel) < set(loaded[2].novel)
    assert cli("--show", str(d / "novel3.json")) == 0
    assert "images per novel class" in capsys.readouterr().out

    p = tmp_path / "paper" / "a.json"
    assert cli("--paper", "ade20k/split2", "--out", str(p)) == 0
    assert load_split(str(p)) == paper_split("ade20k/split2")
    assert "statistics skipped" in capsys.readouterr().out  # no ADE20K data under the tmp root
    assert cli("--paper", "all", "--out-dir", str(tmp_path / "all"), "--no-stats") == 0
    assert len(list((tmp_path / "all").rglob("*.json"))) == 13
    with pytest.raises(ValueError, match="--seed"):
        cli("--dataset", "tinyfam", "--out", str(tmp_path / "x.json"))
    with pytest.raises(KeyError, match="nosuchthing"):
        cli("--dataset", "nosuchthing", "--seed", "1", "--out", str(tmp_path / "x.json"))
