"""Proposal analysis: oracle and greedy union against brute-force loops, a hand-worked case, the
achieved IoU against the evaluator, and `simformer analyze proposals` end to end on a tiny model."""
import csv
import json
import os

import numpy as np
import pytest
import torch

from simformer.evaluation.proposals import ProposalAccumulator, greedy_union, image_proposal_counts
from simformer.evaluation.sem_seg import SemSegEvaluator


def random_case(rng, n=7, k=4, h=10, w=11):
    """GT of painted rectangles (some ignore), proposals = random rectangles as probabilities."""
    gt = np.full((h, w), rng.integers(k), dtype=np.int64)
    for _ in range(5):
        y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
        gt[y:y + rng.integers(2, 6), x:x + rng.integers(2, 6)] = rng.choice(list(range(k)) + [255])
    probs = np.zeros((n, h, w), dtype=np.float32)
    for q in range(n):
        y, x = rng.integers(0, h - 1), rng.integers(0, w - 1)
        probs[q] = rng.uniform(0.0, 0.45, (h, w))
        probs[q, y:y + rng.integers(1, 7), x:x + rng.integers(1, 7)] = rng.uniform(0.55, 1.0)
    pred = rng.integers(0, k, (h, w))
    return probs, pred, gt


def brute_force(images, k):
    """Loops over images, classes and proposals with plain boolean arrays."""
    s = {key: np.zeros(k, dtype=np.int64) for key in ("oi", "ou", "ui", "uu", "ai", "au")}
    for probs, pred, gt in images:
        valid = gt != 255
        for c in range(k):
            g = (gt == c) & valid
            s["ai"][c] += np.sum((pred == c) & g)
            s["au"][c] += np.sum(((pred == c) & valid) | g)
            if not g.any():
                continue
            ious = []
            for q in range(len(probs)):
                m = (probs[q] > 0.5) & valid
                ious.append((np.sum(m & g), np.sum(m | g)))
            best = max(range(len(ious)), key=lambda q: (ious[q][0] / ious[q][1], -q))
            s["oi"][c] += ious[best][0]
            s["ou"][c] += ious[best][1]
            cur = (probs[best] > 0.5) & valid
            while True:
                cand = []
                for q in range(len(probs)):
                    u = cur | ((probs[q] > 0.5) & valid)
                    cand.append((np.sum(u & g) / np.sum(u | g), -q, u))
                iou_cur = np.sum(cur & g) / np.sum(cur | g)
                top = max(cand, key=lambda t: (t[0], t[1]))
                if top[0] <= iou_cur:
                    break
                cur = top[2]
            s["ui"][c] += np.sum(cur & g)
            s["uu"][c] += np.sum(cur | g)
    return s


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_oracle_union_achieved_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    k = 4
    images = [random_case(rng, k=k) for _ in range(5)]
    acc = ProposalAccumulator([f"c{i}" for i in range(k)], np.array([False, True, False, True]))
    for probs, pred, gt in images:
        acc.process(torch.from_numpy(probs), pred, gt)
    ref = brute_force(images, k)
    np.testing.assert_array_equal(acc.sums["oracle_i"], ref["oi"])
    np.testing.assert_array_equal(acc.sums["oracle_u"], ref["ou"])
    np.testing.assert_array_equal(acc.sums["union_i"], ref["ui"])
    np.testing.assert_array_equal(acc.sums["union_u"], ref["uu"])
    np.testing.assert_array_equal(acc.sums["achieved_i"], ref["ai"])
    np.testing.assert_array_equal(acc.sums["achieved_u"], ref["au"])
    assert acc.num_images == 5 and acc.num_proposals == 7


def test_union_never_below_oracle_per_image():
    rng = np.random.default_rng(5)
    for _ in range(10):
        probs, pred, gt = random_case(rng)
        c = image_proposal_counts(probs, pred, gt, 4)
        present = c["images"] > 0
        assert np.all(c["union_i"][present] * c["oracle_u"][present] >= c["oracle_i"][present] * c["union_u"][present])


def test_greedy_takes_several_steps_and_records_choice():
    # GT = 3 disjoint stripes of one class; each proposal covers one stripe: the union takes all three.
    g = torch.zeros(1, 12, dtype=torch.bool)
    g[0, :9] = True
    m = torch.zeros(4, 12)
    m[0, 0:3] = m[1, 3:6] = m[2, 6:9] = 1
    m[3, 8:12] = 1  # mostly background: never helps
    out = greedy_union(m, g, torch.tensor([1]))
    assert out["chosen"][0].tolist() == [True, True, True, False]
    assert (int(out["inter"][0]), int(out["union"][0])) == (9, 9)


def hand_case():
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [255, 255, 1, 1]])
    pred = np.array([[0, 0, 0, 1], [0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 1, 1]])
    p = np.zeros((3, 4, 4), dtype=np.float32)
    p[0, 0:2, 0:3] = 0.9   # P0: rows 0-1, cols 0-2
    p[1, 2:4, :] = 0.8     # P1: rows 2-3 (2 of its pixels are ignore)
    p[2, :, 3] = 0.7       # P2: column 3
    p[2, 0, 0] = 0.5       # exactly 0.5 is not in the proposal
    return p, pred, gt


def test_hand_worked_case():
    p, pred, gt = hand_case()
    acc = ProposalAccumulator(["a", "b", "absent"], np.array([False, True, False]))
    acc.process(p, pred, gt)
    s = acc.sums
    # class 0 (6 GT px): P0 I=4 U=8 (0.5) beats P1 2/10, P2 0/10; adding P1 gives 6/12 = 0.5 (no
    # increase), P2 gives 4/12: the union stays P0. Achieved: pred==0 on valid px = 5, I=4, U=7.
    # class 1 (8 GT px): P2 I=4 U=8 (0.5) beats P1 4/10, P0 2/12; union P2+P1 = 6/10 beats P2+P0 = 6/12,
    # then +P0 = 8/14 < 0.6 stops. Achieved: pred==1 on valid px = 9, I=7, U=10.
    assert s["oracle_i"].tolist() == [4, 4, 0] and s["oracle_u"].tolist() == [8, 8, 0]
    assert s["union_i"].tolist() == [4, 6, 0] and s["union_u"].tolist() == [8, 10, 0]
    assert s["achieved_i"].tolist() == [4, 7, 0] and s["achieved_u"].tolist() == [7, 10, 0]
    assert s["gt_pixels"].tolist() == [6, 8, 0] and s["images"].tolist() == [1, 1, 0]
    m = acc.summary()
    assert m["achieved"]["base"] == pytest.approx(400 / 7) and m["achieved"]["novel"] == pytest.approx(70.0)
    assert m["oracle"]["base"] == pytest.approx(50.0) and m["oracle"]["novel"] == pytest.approx(50.0)
    assert m["union"]["novel"] == pytest.approx(60.0)
    assert m["oracle_gap_novel"] == pytest.approx(-20.0)
    assert m["achieved"]["all"] == pytest.approx((400 / 7 + 70) / 2)  # class 2 has no GT pixels: excluded
    rows = acc.rows()
    assert rows[2]["oracle_iou"] is None and rows[1]["novel"] and rows[1]["union_iou"] == pytest.approx(60.0)


def test_gt_masks_as_proposals_give_100():
    rng = np.random.default_rng(3)
    acc = ProposalAccumulator(["a", "b", "c", "d"])
    for _ in range(4):
        _, pred, gt = random_case(rng)
        probs = np.stack([(gt == c).astype(np.float32) for c in range(4)] + [np.ones_like(gt, dtype=np.float32)])
        acc.process(probs, pred, gt)
    m = acc.summary()
    assert m["oracle"]["all"] == pytest.approx(100.0) and m["union"]["all"] == pytest.approx(100.0)
    assert m["oracle"]["novel"] is None and m["oracle_gap_novel"] is None  # no split: no novel group


def test_achieved_equals_the_evaluator():
    rng = np.random.default_rng(4)
    names = ["a", "b", "c", "d"]
    novel = np.array([True, False, False, True])
    acc = ProposalAccumulator(names, novel)
    ev = SemSegEvaluator(class_names=names, novel_mask=novel)
    for _ in range(6):
        probs, pred, gt = random_case(rng)
        acc.process(probs, pred, gt)
        ev.process(pred, gt)
    res = ev.evaluate()
    m = acc.summary()
    assert m["achieved"]["novel"] == pytest.approx(res["novel_miou"])
    assert m["achieved"]["base"] == pytest.approx(res["base_miou"])
    assert m["achieved"]["all"] == pytest.approx(res["miou"])


def test_bad_input_names_the_image():
    p, pred, gt = hand_case()
    with pytest.raises(ValueError, match="img7"):
        image_proposal_counts(p[:, :3], pred, gt, 3, name="img7")
    with pytest.raises(ValueError, match="img7: GT holds ids outside 0..0"):
        image_proposal_counts(p, pred, gt, 1, name="img7")


# ------------------------------------------------------------------------------------------------
def tiny_checkpoint(tmp_path, config, opts):
    from simformer.config import load_cfg
    from simformer.data.catalog import get_dataset
    from simformer.data.class_split import resolve_split
    from simformer.engine.checkpoint import Checkpointer
    from simformer.modeling.meta_arch import build_model

    cfg = load_cfg(config, list(opts) + ["MODEL.BACKBONE.WEIGHTS", ""])
    name = cfg.DATASETS.TEST[0]
    torch.manual_seed(0)
    model = build_model(cfg, get_dataset(name).num_classes, resolve_split(cfg, name))
    return Checkpointer(str(tmp_path / "run")).save("model_final", model=model, iteration=0)


def test_object_queries_per_image_counts_argmax_not_no_object():
    acc = ProposalAccumulator(["a", "b"])
    gt = np.zeros((2, 2), dtype=np.int64)
    masks = np.ones((3, 2, 2), dtype=np.float32)
    # 3 queries over classes (a, b, no object): argmax a, no object, b -> 2 object queries
    acc.process(masks, gt, gt, class_probs=torch.tensor([[0.5, 0.1, 0.4], [0.3, 0.3, 0.4], [0.2, 0.45, 0.35]]))
    # every query "no object" -> 0; mean over the two images = 1.0
    acc.process(masks, gt, gt, class_probs=torch.tensor([[0.1, 0.1, 0.8]] * 3))
    assert acc.summary()["object_queries_per_image"] == pytest.approx(1.0)
    assert ProposalAccumulator(["a"]).summary()["object_queries_per_image"] is None  # never given
    with pytest.raises(ValueError, match=r"class_probs must be \[N, K\+1\]"):
        acc.process(masks, gt, gt, class_probs=torch.zeros(3, 2))


def test_cli_end_to_end_on_a_tiny_model(toy_env, tmp_path, capsys):
    from simformer.cli import main
    from tiny_config import TINY

    root = os.path.join(os.path.dirname(__file__), "..", "..")
    config = os.path.join(root, "configs", "toyscenes", "simformer.yaml")
    opts = TINY + ["INPUT.MIN_SIZE_TEST", "48"]  # proposals (48 px input) resized to the 64 px GT
    weights = tiny_checkpoint(tmp_path, config, opts)
    out = str(tmp_path / "analysis")
    assert main(["analyze", "proposals", "--config", config, "--weights", weights, "--output", out] + opts) == 0
    assert "oracle gap (novel)" in capsys.readouterr().out
    assert sorted(f for f in os.listdir(out) if not f.startswith("log")) == ["metrics.json", "proposals.csv",
                                                                            "proposals.png"]
    m = json.load(open(os.path.join(out, "metrics.json")))
    assert m["num_images"] == 4 and m["num_proposals"] == 16 and m["dataset"] == "toyscenes_val"
    assert 0 <= m["object_queries_per_image"] <= 16
    rows = list(csv.DictReader(open(os.path.join(out, "proposals.csv"))))
    assert len(rows) == 24 and sum(r["novel"] == "True" for r in rows) == 6
    # the achieved figures are the evaluator's (same weights, same data)
    evald = str(tmp_path / "eval")
    assert main(["eval", "--config", config, "--weights", weights, "--output", evald] + opts) == 0
    ev = json.load(open(os.path.join(evald, "metrics.json")))
    assert m["achieved"]["novel"] == pytest.approx(ev["novel_miou"])
    assert m["achieved"]["all"] == pytest.approx(ev["miou"])
    for r in rows:  # the sums behind each figure are in the CSV
        if r["oracle_iou"]:
            assert float(r["oracle_iou"]) == pytest.approx(100 * int(r["oracle_i"]) / int(r["oracle_u"]), abs=1e-5)
    assert m["oracle_gap_novel"] == pytest.approx(m["oracle"]["novel"] - m["achieved"]["novel"])


def test_cli_refuses_cam(toy_env, tmp_path, capsys):
    from simformer.cli import main

    root = os.path.join(os.path.dirname(__file__), "..", "..")
    config = os.path.join(root, "configs", "toyscenes", "cam.yaml")
    assert main(["analyze", "proposals", "--config", config, "--weights", str(tmp_path / "w.pth"),
                 "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "CAM has no mask proposals" in err
