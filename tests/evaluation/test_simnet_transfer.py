"""SimNet transferability (paper Table 3): F1 by hand, the pair regions, the batch scoring against an
explicit loop over pixel pairs, and the whole analysis on a tiny model."""
import math

import pytest
import torch
from modeling.test_simformer_model import sample, tiny_model

import simformer.evaluation.simnet_transfer as st
from simformer.modeling.simnet import SimNet


def test_f1_scores_hand_worked():
    # truth dissimilar: 5 predicted dissimilar, 1 similar; truth similar: 2 missed, 2 found
    s = st.f1_scores([[5, 1], [2, 2]])
    assert s["f1_similar"] == pytest.approx(100 * 4 / 7)        # 2tp / (2tp + fp + fn) = 4 / (4 + 1 + 2)
    assert s["f1_dissimilar"] == pytest.approx(100 * 10 / 13)   # tp 5, fp 2, fn 1
    assert s["accuracy"] == pytest.approx(70.0) and s["similar_share"] == pytest.approx(40.0)
    assert s["pairs"] == 10
    assert math.isnan(st.f1_scores([[3, 0], [0, 0]])["f1_similar"])


def test_confusion_counts_truth_by_prediction():
    prob = torch.tensor([[0.9, 0.2], [0.6, 0.4]])
    same = torch.tensor([[True, True], [False, False]])
    assert st.confusion(prob, same).tolist() == [[1, 1], [1, 1]]
    assert st.confusion(torch.tensor([0.7, 0.1]), torch.tensor([True, False])).tolist() == [[1, 0], [0, 1]]


def test_regions_leave_out_void_and_padding():
    acc = st.SimNetTransfer(novel_class_ids=[5], num_points=2)
    labels = torch.tensor([[0, 5, 255, 3, 5]])
    valid = torch.tensor([[True, True, True, True, False]])
    r = acc.regions(labels, valid)
    assert r["base"].tolist() == [[True, False, False, True, False]]
    assert r["novel"].tolist() == [[False, True, False, False, False]]


def test_add_matches_an_explicit_loop_over_pixel_pairs(monkeypatch):
    torch.manual_seed(0)
    simnet = SimNet(in_dim=8, hidden_dim=16, num_blocks=1).eval()
    with torch.no_grad():  # non-trivial BN statistics, so that both decisions occur
        for bn in (m for m in simnet.modules() if isinstance(m, torch.nn.BatchNorm1d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    feats = torch.randn(4, 8, 12)
    labels = torch.tensor([0, 1, 2, 3, 4, 255]).repeat(4, 2)[:, torch.randperm(12)]
    valid = torch.ones(4, 12, dtype=torch.bool)
    valid[1, :3] = False
    pairs = torch.tensor([[0, 1], [2, 3]])
    drawn = []
    original = st.sample_points

    def recording(weights, num, generator=None):
        idx = original(weights, num, generator)
        drawn.append(idx)
        return idx

    monkeypatch.setattr(st, "sample_points", recording)
    acc = st.SimNetTransfer(novel_class_ids=[3, 4], num_points=5, generator=torch.Generator().manual_seed(1))
    acc.add(simnet, feats, labels, valid, pairs)
    for group, idx in zip(st.GROUPS, drawn):
        expected = [[0, 0], [0, 0]]
        n = pairs.shape[0]
        for p, (i, r) in enumerate(pairs.tolist()):
            for a in idx[p].tolist():
                for b in idx[n + p].tolist():
                    la, lb = int(labels[i, a]), int(labels[r, b])
                    assert valid[i, a] and valid[r, b] and la != 255 and lb != 255
                    assert (la in (3, 4)) == (lb in (3, 4)) == (group == "novel")
                    with torch.no_grad():
                        prob = simnet(torch.cat([feats[i, :, a], feats[r, :, b]])[None]).softmax(-1)[0, 1]
                    expected[int(la == lb)][int(prob > 0.5)] += 1
        assert acc.counts[group].tolist() == expected
        assert sum(map(sum, expected)) == n * 25
    assert acc.image_pairs == 2


def test_analyze_simnet_on_a_tiny_model():
    model, cfg = tiny_model()
    full = torch.zeros(64, 64, dtype=torch.long)
    full[:, 32:] = 4  # novel class 4 (split: novel 4, 5)
    full[40:, :32] = 1
    base = torch.where(full == 4, torch.full_like(full, 255), full)
    batch = []
    for role in ("anchor", "reference", "anchor", "reference"):
        s = sample(base, {0, 1, 4}, role)
        s["sem_seg_full"] = full
        batch.append(s)
    acc = st.analyze_simnet(model, [batch, batch], num_image_pairs=3, num_points=6, novel_class_ids=[4, 5])
    assert acc.image_pairs == 3
    s = acc.summary()
    assert s["base"]["pairs"] == 3 * 36 and s["novel"]["pairs"] == 3 * 36
    assert s["novel"]["similar_share"] == 100.0  # one novel class: every novel pair is "similar"
    assert model.training  # the mode is given back
    with pytest.raises(ValueError, match="fewer than"):
        st.analyze_simnet(model, [batch], num_image_pairs=5, num_points=6, novel_class_ids=[4, 5])
    with pytest.raises(ValueError, match="no \\(image, reference\\) pairs"):
        st.analyze_simnet(model, [[sample(full, {0})]], num_image_pairs=1, num_points=6, novel_class_ids=[4, 5])


def test_cli_end_to_end_on_a_tiny_model(toy_env, tmp_path, capsys):
    import csv
    import json
    import os

    from evaluation.test_proposals import tiny_checkpoint
    from tiny_config import TINY

    from simformer.cli import main

    root = os.path.join(os.path.dirname(__file__), "..", "..")
    config = os.path.join(root, "configs", "toyscenes", "simformer.yaml")
    weights = tiny_checkpoint(tmp_path, config, TINY)
    out = str(tmp_path / "simnet")
    args = ["analyze", "simnet", "--config", config, "--weights", weights, "--output", out, "--pairs", "3",
            "--points", "4"] + TINY
    assert main(args) == 0
    assert "novel pairs: F1 similar" in capsys.readouterr().out
    m = json.load(open(os.path.join(out, "metrics.json")))
    assert m["image_pairs"] == 3 and m["num_points"] == 4 and m["dataset"] == "toyscenes_train"
    rows = {r["group"]: r for r in csv.DictReader(open(os.path.join(out, "simnet_transfer.csv")))}
    for g in st.GROUPS:  # at most 3 image pairs x 4 x 4 points; the CSV repeats metrics.json
        assert 0 < int(rows[g]["pairs"]) == m[g]["pairs"] <= 3 * 16
        assert float(rows[g]["f1_dissimilar"]) == pytest.approx(m[g]["f1_dissimilar"], abs=1e-4)
    assert main(args[:-len(TINY)] + TINY + ["--seed", "0"]) == 0  # same seed, same figures
    assert json.load(open(os.path.join(out, "metrics.json")))["novel"] == m["novel"]
    pr = os.path.join(root, "configs", "toyscenes", "ablation_pr.yaml")
    assert main(["analyze", "simnet", "--config", pr, "--weights", weights, "--output", str(tmp_path / "pr")]
                + TINY) == 2
    err = capsys.readouterr().err.strip()
    assert "ablation_pr.yaml" in err and "WEAKSHOT.SIMNET.ENABLED True" in err
