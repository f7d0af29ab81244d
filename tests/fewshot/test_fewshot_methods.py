"""prototype against a hand computation on a 2x2 feature map and a brute-force upsampling; oracle
against every single proposal; the registry."""
import math

import pytest
import torch
import torch.nn.functional as F

from simformer.fewshot.base import View
from simformer.fewshot.methods import (OracleMethod, PrototypeMethod, cosine_to_probability,
                                       masked_average_prototype, proposal_ious)
from simformer.fewshot.registry import available_methods, build_method


def view(features, size, mask=None, proposals=None):
    h, w = size
    proposals = torch.zeros(1, h, w) if proposals is None else proposals
    v = View(image=torch.zeros(3, h, w), proposals=proposals, scores=torch.ones(len(proposals)),
             features={"res4": features})
    return v if mask is None else v.with_mask(mask)


def test_prototype_hand_worked_2x2():
    # 2x2 -> 4x4 bilinear (align_corners=False) weights per axis: rows [1,0], [.75,.25], [.25,.75], [0,1].
    # Support mask = the top-left 2x2 pixels -> cell weights outer([1.75,.25], [1.75,.25]) / 4 pixels.
    support_feats = torch.tensor([[[1.0, 0.0], [0.0, 0.0]],    # channel 0: cell (0,0)
                                  [[0.0, 0.0], [0.0, 1.0]]])   # channel 1: cell (1,1)
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[:2, :2] = True
    proto = masked_average_prototype(support_feats, mask)
    assert proto.tolist() == pytest.approx([1.75 * 1.75 / 4, 0.25 * 0.25 / 4])  # [0.765625, 0.015625]

    # Query cells: parallel (cos 1), orthogonal (0), opposite (-1), parallel + orthogonal (1/sqrt 2).
    p, o = proto, torch.tensor([-proto[1], proto[0]])
    q = torch.stack([torch.stack([2 * p, o]), torch.stack([-p, p + o])])  # [2,2,C]
    q = q.permute(2, 0, 1).contiguous()
    method = PrototypeMethod(feature="res4", threshold=0.5)
    cos = method.similarity(view(q, (4, 4)), [view(support_feats, (4, 4), mask)])
    r = 1 / math.sqrt(2)
    assert cos[0, 0].item() == pytest.approx(1.0)
    assert cos[0, 1].item() == pytest.approx(0.75 * 1 + 0.25 * 0)                              # row weight 1 on cell row 0
    assert cos[1, 1].item() == pytest.approx(.5625 * 1 + .1875 * 0 + .1875 * -1 + .0625 * r)  # 0.41919
    assert cos[3, 3].item() == pytest.approx(r)
    prob = method.predict(view(q, (4, 4)), [view(support_feats, (4, 4), mask)])
    assert prob[0, 0].item() == pytest.approx(1.0)
    assert prob[0, 1].item() == pytest.approx(0.5 + 0.5 * (0.75 - 0.5) / 0.5)                  # 0.75
    assert prob[1, 1].item() == pytest.approx(0.5 * (1 + 0.375 + 0.0625 * r) / 1.5)           # 0.4731
    assert prob[3, 3].item() == pytest.approx(0.5 + 0.5 * (r - 0.5) / 0.5)
    assert torch.equal(prob > 0.5, cos > 0.5)


def test_masked_average_equals_upsampled_features():
    g = torch.Generator().manual_seed(0)
    feats = torch.rand(5, 3, 4, generator=g)
    mask = torch.rand(13, 17, generator=g) < 0.3
    up = F.interpolate(feats[None], size=(13, 17), mode="bilinear", align_corners=False)[0]
    brute = up[:, mask].mean(1)  # PANet: average of the upsampled features under the mask
    assert torch.allclose(masked_average_prototype(feats, mask), brute, atol=1e-6)
    with pytest.raises(ValueError, match="empty"):
        masked_average_prototype(feats, torch.zeros(13, 17, dtype=torch.bool))


def test_shots_average_their_prototypes():
    g = torch.Generator().manual_seed(1)
    supports = [view(torch.rand(4, 2, 3, generator=g), (8, 12), torch.rand(8, 12, generator=g) < 0.5) for _ in range(3)]
    method = PrototypeMethod(feature="res4")
    expected = torch.stack([masked_average_prototype(s.features["res4"], s.mask) for s in supports]).mean(0)
    assert torch.allclose(method.prototype(supports), expected)


def test_cosine_to_probability():
    c = torch.linspace(-1, 1, 201)
    for thr in (-0.3, 0.0, 0.6):
        p = cosine_to_probability(c, thr)
        assert p[0].item() == pytest.approx(0) and p[-1].item() == pytest.approx(1)
        assert torch.all(p[1:] >= p[:-1])
        assert cosine_to_probability(torch.tensor(thr), thr).item() == pytest.approx(0.5)
        assert torch.equal(p > 0.5, c > thr)
    with pytest.raises(ValueError, match="THRESHOLD"):
        PrototypeMethod(threshold=1.0)
    with pytest.raises(ValueError, match="no feature map 'res9'"):
        PrototypeMethod(feature="res9").predict(view(torch.rand(2, 1, 1), (2, 2)), [])


def test_oracle_is_the_best_single_proposal():
    g = torch.Generator().manual_seed(2)
    for _ in range(20):  # episodes
        props = torch.rand(7, 10, 11, generator=g) ** 2
        gt = torch.rand(10, 11, generator=g) < 0.3
        valid = torch.rand(10, 11, generator=g) < 0.9
        q = View(image=torch.zeros(3, 10, 11), proposals=props, scores=torch.ones(7)).with_mask(gt, valid)
        out = OracleMethod().predict(q, [])
        ious = []
        for k in range(7):  # brute force, one proposal at a time
            b = props[k] > 0.5
            inter = int((b & gt & valid).sum())
            union = int(((b | gt) & valid).sum())
            ious.append(inter / union if union else 0.0)
        assert proposal_ious(props, gt, valid).tolist() == pytest.approx(ious)
        b = out > 0.5
        best = int(((b & gt & valid).sum())) / int(((b | gt) & valid).sum())
        assert best == pytest.approx(max(ious)) and all(best >= x for x in ious)
    with pytest.raises(ValueError, match="ground truth"):
        OracleMethod().predict(View(image=torch.zeros(3, 2, 2), proposals=torch.zeros(1, 2, 2), scores=torch.ones(1)), [])


def test_registry(fs_cfg):
    assert {"prototype", "oracle"} <= set(available_methods())
    m = build_method("prototype", fs_cfg)
    assert (m.feature, m.threshold) == (fs_cfg.FEWSHOT.PROTOTYPE.FEATURE, fs_cfg.FEWSHOT.PROTOTYPE.THRESHOLD)
    assert build_method("prototype", fs_cfg, threshold=0.2).threshold == 0.2
    assert build_method("oracle", fs_cfg).needs_query_gt and not m.needs_query_gt
    with pytest.raises(KeyError, match="available"):
        build_method("nope", fs_cfg)
