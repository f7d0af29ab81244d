"""MM-Former matching (simformer/fewshot/mm_former.py, train_matcher.py) against hand computations."""
import json
import math
import os
from dataclasses import dataclass
from typing import Tuple

import numpy as np
import pytest
import torch

from simformer.config import load_cfg
from simformer.fewshot.base import FEWSHOT_METHOD_REGISTRY, View
from simformer.fewshot.mm_former import (MaskMatchingModule, MMMatch, build_mm_former, build_mm_match, co_loss,
                                         dice_loss, load_matcher, masked_average_pool, matcher_loss,
                                         proposal_similarities, save_matcher, self_align, soft_iou)
from simformer.fewshot.train_matcher import ViewCache, episode_scores, episode_tensors, fit, train_matcher


@dataclass(frozen=True)
class Ep:  # the protocol's Episode fields (episodes.py is built elsewhere)
    class_id: int
    query: int
    supports: Tuple[int, ...]


def _view(features, proposals=None, mask=None, size=None):
    h, w = size or proposals.shape[-2:]
    if proposals is None:
        proposals = torch.zeros(1, h, w)
    v = View(image=torch.zeros(3, h, w), proposals=proposals.float(), scores=torch.ones(proposals.shape[0]),
             features=features)
    return v if mask is None else v.with_mask(mask)


# ---------------------------------------------------------------------------------------------
def test_masked_average_pool_hand():
    f = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[10.0, 20.0], [30.0, 40.0]]])  # [2,2,2]
    m = torch.tensor([[1.0, 0.0], [0.5, 0.0]])
    want = torch.tensor([(1 + 0.5 * 3) / 1.5, (10 + 0.5 * 30) / 1.5])
    assert torch.allclose(masked_average_pool(f, m), want, atol=1e-5)
    stack = torch.stack([m, torch.ones(2, 2), torch.zeros(2, 2)])
    got = masked_average_pool(f, stack)  # vectorised over N
    assert torch.allclose(got[0], want, atol=1e-5)
    assert torch.allclose(got[1], torch.tensor([2.5, 25.0]), atol=1e-5)  # plain mean
    assert torch.equal(got[2], torch.zeros(2))  # empty mask -> zero prototype
    # A [4,4] left-half mask on a [2,2] map: antialiased bilinear gives columns 6/7, 1/7 (triangle
    # filter of radius 2 centred at 0.5: weights 0.75, 0.75, 0.25 on columns 0, 1, 2).
    big = torch.zeros(4, 4)
    big[:, :2] = 1
    a, b = 6 / 7, 1 / 7
    want = torch.tensor([(a * (1 + 3) + b * (2 + 4)) / 2, (a * (10 + 30) + b * (20 + 40)) / 2])
    assert torch.allclose(masked_average_pool(f, big), want, atol=1e-5)


def test_self_align_hand():
    f = torch.tensor([[[1.0, 3.0]], [[3.0, -1.0]]])  # C=2, h=1, w=2: channel mean [2, 1]
    att = torch.tensor([math.e ** 2, math.e]) / (math.e ** 2 + math.e)
    a = torch.tensor([1 * att[0] + 3 * att[1], 3 * att[0] - 1 * att[1]])
    want = f * torch.sigmoid(a)[:, None, None]
    assert torch.allclose(self_align(f), want, atol=1e-6)


def _three_proposal_case():
    # Query 1x3 image, one 2-channel level at full resolution; proposal n covers column n.
    qf = torch.tensor([[[1.0, 0.0, 1.0]], [[0.0, 1.0, 1.0]]])
    props = torch.eye(3).reshape(3, 1, 3)
    query = _view({"res4": qf}, props)
    sf = torch.tensor([[[2.0, 0.0]], [[1.0, 5.0]]])  # support 1x2, mask = column 0 -> prototype (2, 1)
    support = _view({"res4": sf}, mask=torch.tensor([[True, False]]), size=(1, 2))
    r5 = 1 / math.sqrt(5)
    sims = torch.tensor([2 * r5, r5, 3 * r5 / math.sqrt(2)])  # cos((1,0),(2,1)), cos((0,1),.), cos((1,1),.)
    return query, support, props, sims


def test_mm_match_hand():
    query, support, props, sims = _three_proposal_case()
    got = proposal_similarities(query, [support], ["res4"], align=False)
    assert torch.allclose(got, sims, atol=1e-6)
    hard = MMMatch(features=["res4"], self_align=False, temperature=0.0).predict(query, [support])
    assert torch.equal(hard, props[2])  # 3/sqrt(10) = 0.949 > 2/sqrt(5) = 0.894
    soft = MMMatch(features=["res4"], self_align=False, temperature=0.1).predict(query, [support])
    w = torch.exp(sims / 0.1) / torch.exp(sims / 0.1).sum()
    assert torch.allclose(soft, w.reshape(1, 3), atol=1e-6)  # proposal n is one pixel: output = w
    # Two shots: prototypes averaged before the cosine; a second level averages the level cosines.
    support2 = _view({"res4": torch.tensor([[[0.0, 4.0]], [[2.0, 0.0]]])}, mask=torch.tensor([[True, False]]),
                     size=(1, 2))  # prototype (0, 2); mean with (2, 1) -> (1, 1.5)
    mean = torch.tensor([1.0, 1.5]) / math.sqrt(3.25)
    want = torch.stack([torch.tensor([1.0, 0.0]) @ mean, torch.tensor([0.0, 1.0]) @ mean,
                        torch.tensor([1.0, 1.0]) / math.sqrt(2) @ mean])
    assert torch.allclose(proposal_similarities(query, [support, support2], ["res4"], False), want, atol=1e-6)
    qf, sf = query.features["res4"], support.features["res4"]
    query2 = _view({"res4": qf, "res3": qf}, props)
    sup2 = _view({"res4": sf, "res3": sf.flip(0)}, mask=torch.tensor([[True, False]]), size=(1, 2))
    r5 = 1 / math.sqrt(5)
    res3 = torch.tensor([r5, 2 * r5, 3 * r5 / math.sqrt(2)])  # against the prototype (1, 2)
    assert torch.allclose(proposal_similarities(query2, [sup2], ["res3", "res4"], False), (sims + res3) / 2,
                          atol=1e-6)


def test_registered_builders_read_config():
    assert FEWSHOT_METHOD_REGISTRY["mm-match"] is build_mm_match
    assert FEWSHOT_METHOD_REGISTRY["mm-former"] is build_mm_former
    cfg = load_cfg(None, ["FEWSHOT.MM_FORMER.FEATURES", "['res4']", "FEWSHOT.MM_FORMER.SELF_ALIGN", "False"])
    m = build_mm_match(cfg)
    assert (m.features, m.self_align, m.temperature) == (("res4",), False, 0.0)
    with pytest.raises(ValueError, match="FEWSHOT.MM_FORMER.WEIGHTS"):
        build_mm_former(cfg)
    query, support, _, _ = _three_proposal_case()
    with pytest.raises(KeyError, match="res5"):
        MMMatch(features=["res5"]).predict(query, [support])


def test_module_forward_hand():
    mod = MaskMatchingModule(2, hidden_mult=2)
    with torch.no_grad():
        mod.fc1.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]))
        mod.fc1.bias.zero_()
        mod.fc2.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]]))
        mod.fc2.bias.copy_(torch.tensor([0.1, 0.0]))
    sims = torch.tensor([0.5, -0.25])  # hidden relu = (0.5, 0, 0, 0.25) -> coefficients (0.6, 0.5)
    props = torch.tensor([[[1.0, 0.0], [0.5, 0.0]], [[0.0, 1.0], [1.0, 0.2]]])
    want = torch.tensor([[0.6, 0.5], [0.8, 0.1]])
    assert torch.allclose(mod.coefficients(sims), torch.tensor([0.6, 0.5]), atol=1e-6)
    assert torch.allclose(mod(sims, props), want, atol=1e-6)
    assert torch.allclose(mod(sims[None].repeat(3, 1), props[None].repeat(3, 1, 1, 1)), want.expand(3, 2, 2))
    with pytest.raises(ValueError, match="N=2"):
        mod.coefficients(torch.zeros(3))
    # SIM_NORM zscore: S standardised over N first; (0.5, -0.25) -> mean 0.125, std 0.375 -> (1, -1)
    # -> hidden relu (1, 0, 0, 1) -> coefficients (1.1, 2)
    z = MaskMatchingModule(2, hidden_mult=2, sim_norm="zscore")
    z.load_state_dict(mod.state_dict())
    assert torch.allclose(z.coefficients(sims), torch.tensor([1.1, 2.0]), atol=1e-4)
    with pytest.raises(ValueError, match="SIM_NORM"):
        MaskMatchingModule(2, sim_norm="softmax")


def test_loss_hand():
    props = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[0.5, 0.5]], [[0.0, 0.0]]])  # [4,1,2]
    gt = torch.tensor([[True, False]])
    coefs = torch.tensor([0.5, 0.1, 0.3, 0.2])
    # pred = (0.5 + 0.15, 0.1 + 0.15) = (0.65, 0.25); dice = 1 - (2*0.65 + 1) / (0.65^2 + 0.25^2 + 1 + 1)
    dice = 1 - (2 * 0.65 + 1) / (0.65 ** 2 + 0.25 ** 2 + 2)
    # min-max coefficients (1, 0, 0.5, 0.25); pos = 2, neg = 3
    co = -(math.log(0.5) + math.log(0.75)) / 2
    out = matcher_loss(coefs[None], props[None], gt[None], None, torch.tensor([2]), torch.tensor([3]))
    assert out["dice"].item() == pytest.approx(dice, abs=1e-6)
    assert out["co"].item() == pytest.approx(co, abs=1e-6)
    assert out["loss"].item() == pytest.approx(10 * dice + 6 * co, abs=1e-5)
    # void pixels drop out of the dice: only pixel 0 counts
    valid = torch.tensor([[True, False]])
    assert dice_loss(torch.tensor([[0.65, 0.25]]), gt, valid).item() == pytest.approx(
        1 - (2 * 0.65 + 1) / (0.65 ** 2 + 1 + 1), abs=1e-6)
    # soft IoU picks pos / neg: (1, 0, 0.5/(1+1-0.5), 0)
    assert torch.allclose(soft_iou(props, gt), torch.tensor([1.0, 0.0, 1 / 3, 0.0]), atol=1e-6)
    assert co_loss(torch.tensor([3.0, 1.0]), torch.tensor(0), torch.tensor(1)).item() == pytest.approx(0, abs=1e-6)


# ---------------------------------------------------------------------------------------------
def _synthetic_dataset(seed: int, num_images: int = 6, n: int = 6, size: int = 16, classes: int = 3):
    """Images made of 4 quadrants; class c has its own feature direction; proposals: the 4
    quadrants, their union halves; one proposal is always exactly a class region."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(classes + 1, 8, generator=g)
    views, labels = [], []
    half = size // 2
    quads = [(slice(0, half), slice(0, half)), (slice(0, half), slice(half, size)),
             (slice(half, size), slice(0, half)), (slice(half, size), slice(half, size))]
    for i in range(num_images):
        label = torch.full((size, size), classes, dtype=torch.uint8)  # the last id = background
        feat = torch.zeros(8, size, size)
        perm = torch.randperm(4, generator=g)
        for q, c in zip(perm.tolist(), [i % classes, (i + 1) % classes, classes, classes]):
            ys, xs = quads[q]
            label[ys, xs] = c
            feat[:, ys, xs] = (dirs[c] + 0.3 * torch.randn(8, generator=g))[:, None, None]
        props = torch.zeros(n, size, size)
        for k in range(4):
            ys, xs = quads[k]
            props[k, ys, xs] = 1
        props[4, :half] = 1
        props[5, :, :half] = 1
        props = props * 0.9 + 0.05
        label[0, 0] = 255  # one void pixel
        views.append(_view({"res3": feat[:, ::2, ::2].clone(), "res4": feat[:, ::4, ::4].clone()}, props))
        labels.append(label.numpy())
    return views, labels


def test_single_proposal_methods_below_oracle():
    views, labels = _synthetic_dataset(1, num_images=6)
    for q in range(6):
        for c in range(3):
            gt = torch.as_tensor(labels[q] == c)
            if not gt.any():
                continue
            supports = [views[s].with_mask(torch.as_tensor(labels[s] == c)) for s in range(6)
                        if s != q and (labels[s] == c).any()][:2]
            props = views[q].proposals

            def iou(mask):
                inter = (mask & gt).sum().item()
                union = (mask | gt).sum().item()
                return inter / union

            oracle = max(iou(props[n] > 0.5) for n in range(props.shape[0]))  # brute force
            for method in (MMMatch(features=["res3", "res4"], self_align=True),
                           MMMatch(features=["res4"], self_align=False)):
                assert iou(method.predict(views[q], supports) > 0.5) <= oracle + 1e-12
            best_score = props[views[q].scores.argmax()]
            assert iou(best_score > 0.5) <= oracle + 1e-12


def test_module_overfits_four_episodes():
    views, labels = _synthetic_dataset(2, num_images=6)
    cache = ViewCache(lambda i: views[i], lambda i: labels[i], ["res3", "res4"], True)
    episodes = [Ep(0, 0, (3,)), Ep(1, 1, (4,)), Ep(2, 2, (5,)), Ep(1, 3, (0,))]
    data = episode_tensors(cache, episodes)
    torch.manual_seed(0)
    mod = MaskMatchingModule(6)
    hist = fit(mod, cache, data, iters=100, batch=4, lr=1e-2, weight_decay=0.0, seed=0, log_period=20)
    assert hist[-1]["loss"] < hist[0]["loss"]
    coefs = mod.coefficients(data["sims"]).detach()
    ious = []
    for e, ep in enumerate(episodes):  # independent IoU of the thresholded weighted mask
        gt = torch.as_tensor(labels[ep.query] == ep.class_id)
        valid = torch.as_tensor(labels[ep.query] != 255)
        pred = (torch.einsum("n,nhw->hw", coefs[e], views[ep.query].proposals) > 0.5) & valid
        ious.append(((pred & gt).sum() / (pred | (gt & valid)).sum()).item())
    assert min(ious) >= 0.9, ious
    assert episode_scores(mod, cache, data)["mm_former"] == pytest.approx(100 * np.mean(ious), abs=1e-3)


def test_train_matcher_end_to_end_and_weights_round_trip(tmp_path):
    views, labels = _synthetic_dataset(3, num_images=6)
    cfg = load_cfg(None, ["FEWSHOT.MM_FORMER.FEATURES", "['res3', 'res4']", "FEWSHOT.MM_FORMER.ITERS", "20",
                          "FEWSHOT.MM_FORMER.LR", "0.01", "FEWSHOT.MM_FORMER.BATCH", "2"])
    calls = []

    def get_view(i):
        calls.append(i)
        return views[i]

    episodes = [Ep(0, 0, (3,)), Ep(1, 1, (4,)), Ep(1, 3, (0,)), Ep(0, 3, (0,))]
    out = str(tmp_path / "m")
    metrics = train_matcher(cfg, get_view=get_view, get_label=lambda i: labels[i], episodes=episodes,
                            output_dir=out, seed=0)
    assert sorted(calls) == [0, 1, 3, 4]  # each image through the source once
    for f in ("matcher.pth", "metrics.json", "config.yaml", "run_info.json", "episodes.json"):
        assert os.path.isfile(os.path.join(out, f)), f
    assert not [f for f in os.listdir(out) if f.startswith(".tmp-")]
    saved = json.load(open(os.path.join(out, "metrics.json")))
    assert saved["num_proposals"] == 6 and saved["history"][-1]["iter"] == 20 and saved["shots"] == 1
    assert saved["final"]["loss"] == pytest.approx(metrics["final"]["loss"])
    assert json.load(open(os.path.join(out, "episodes.json")))[2] == {"class_id": 1, "query": 3, "supports": [0]}
    assert load_cfg(os.path.join(out, "config.yaml")).FEWSHOT.MM_FORMER.ITERS == 20
    # same seed -> same weights
    metrics2 = train_matcher(cfg, get_view=get_view, get_label=lambda i: labels[i], episodes=episodes,
                             output_dir=str(tmp_path / "m2"), seed=0)
    a, _ = load_matcher(os.path.join(out, "matcher.pth"))
    b, meta = load_matcher(str(tmp_path / "m2" / "matcher.pth"))
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert metrics2["final"] == metrics["final"]
    assert meta["features"] == ["res3", "res4"] and meta["self_align"] is True and meta["sim_norm"] == "zscore"
    # the method loads the weights and predicts M_hat = sum coef_n M_n, clamped
    method = build_mm_former(load_cfg(None, ["FEWSHOT.MM_FORMER.WEIGHTS", os.path.join(out, "matcher.pth")]))
    support = views[4].with_mask(torch.as_tensor(labels[4] == 1), torch.as_tensor(labels[4] != 255))
    sims = proposal_similarities(views[1], [support], ["res3", "res4"], True)
    want = torch.einsum("n,nhw->hw", a.coefficients(sims), views[1].proposals).clamp(0, 1)
    assert torch.allclose(method.predict(views[1], [support]), want.detach(), atol=1e-6)
    # a source with another N is refused; so are foreign files
    other = _view(views[1].features, views[1].proposals[:5])
    with pytest.raises(ValueError, match="N=6"):
        method.predict(other, [support])
    torch.save({"weight": torch.zeros(2)}, str(tmp_path / "foreign.pth"))
    with pytest.raises(ValueError, match="not a matcher.pth"):
        load_matcher(str(tmp_path / "foreign.pth"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_matcher(str(tmp_path / "missing.pth"))
    save_matcher(str(tmp_path / "bad.pth"), MaskMatchingModule(6), {"features": ["res3"], "self_align": False})
    ckpt = torch.load(str(tmp_path / "bad.pth"), weights_only=True)
    ckpt["num_proposals"] = 7
    torch.save(ckpt, str(tmp_path / "bad.pth"))
    with pytest.raises(ValueError, match="does not fit N=7"):
        load_matcher(str(tmp_path / "bad.pth"))


def test_train_matcher_verb_rejects_bad_options(tmp_path, capsys):
    from simformer.cli import main

    base = ["train-matcher", "--config", "c.yaml", "--weights", "w.pth", "--fold", "f.json", "--output", str(tmp_path)]
    assert main(base + ["--shots", "0"]) == 2
    assert "--shots must be >= 1" in capsys.readouterr().err
    assert main(base + ["--episodes", "-1"]) == 2
    assert main(base + ["--min-pixels", "-5"]) == 2
    assert main(base) == 1  # missing weights file: a data error naming it
    assert "w.pth" in capsys.readouterr().err
