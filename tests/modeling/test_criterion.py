import math

import pytest
import torch
import torch.nn.functional as F

from simformer.config import get_cfg
from simformer.modeling.criterion import WeakShotCriterion, build_criterion
from simformer.modeling.matcher import HungarianMatcher
from simformer.modeling.point_sampling import PointSampler, dense_grid_coords
from simformer.modeling.simnet import SimNet

torch.set_num_threads(1)


class FixedMatcher:
    """Returns given matches; records the outputs it was called with."""

    def __init__(self, indices):
        self.indices = indices
        self.seen = []

    def __call__(self, outputs, targets):
        self.seen.append(outputs["pred_logits"])
        return [(torch.tensor(q, dtype=torch.long), torch.tensor(t, dtype=torch.long)) for q, t in self.indices]


def _crit(matcher, K=4, novel=(3,), simnet=None, **kw):
    kw.setdefault("distill", simnet is not None)
    kw.setdefault("deep_supervision", False)
    return WeakShotCriterion(
        num_classes=K, matcher=matcher, novel_class_ids=torch.tensor(novel, dtype=torch.long), simnet=simnet, **kw
    )


def _target(labels, has_mask, masks, sem=None, valid=None, image_labels=None, K=4):
    H, W = masks.shape[-2:]
    return {
        "labels": torch.tensor(labels, dtype=torch.long),
        "has_mask": torch.tensor(has_mask, dtype=torch.bool),
        "masks": masks.float(),
        "sem_seg": sem if sem is not None else torch.full((H, W), 255, dtype=torch.long),
        "valid": valid if valid is not None else torch.ones(H, W, dtype=torch.bool),
        "image_labels": image_labels if image_labels is not None else torch.zeros(K, dtype=torch.bool),
    }


def _logit(p):
    p = torch.as_tensor(p, dtype=torch.float32)
    return torch.log(p / (1 - p))


def _py_focal(p, t, alpha=0.25, gamma=2.0):
    if t == 1:
        return -alpha * (1 - p) ** gamma * math.log(p)
    return -(1 - alpha) * p**gamma * math.log(1 - p)


def _py_dice(ps, ts):
    return 1 - (2 * sum(p * t for p, t in zip(ps, ts)) + 1) / (sum(ps) + sum(ts) + 1)


# --------------------------------------------------------------------------- class / mask losses
def test_loss_ce_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    K, Q = 3, 4
    logits = torch.randn(2, Q, K + 1, generator=g)
    masks = torch.zeros(2, Q, 2, 2)
    t0 = _target([1, 2], [True, False], torch.zeros(2, 2, 2), K=K)
    t1 = _target([0], [True], torch.zeros(1, 2, 2), K=K)
    crit = _crit(FixedMatcher([([2, 0], [0, 1]), ([1], [0])]), K=K, novel=(2,), complementary=False, eos_coef=0.1)
    loss = crit({"pred_logits": logits, "pred_masks": masks}, [t0, t1])["loss_ce"]
    targets = [[2, K, 1, K], [K, 0, K, K]]  # matched queries -> class (novel too), rest -> no-object
    num = den = 0.0
    for b in range(2):
        for q in range(Q):
            y = targets[b][q]
            w = 0.1 if y == K else 1.0
            num += -w * float(torch.log_softmax(logits[b, q], -1)[y])
            den += w
    assert math.isclose(float(loss.detach()), num / den, rel_tol=1e-5)
    weight = torch.tensor([1.0] * K + [0.1])
    ref = F.cross_entropy(logits.reshape(-1, K + 1), torch.tensor(targets).reshape(-1), weight=weight)
    assert math.isclose(float(loss.detach()), float(ref), rel_tol=1e-5)


def test_focal_and_dice_match_independent_formulas():
    g = torch.Generator().manual_seed(1)
    Q, h, w = 3, 2, 3
    pred = torch.randn(2, Q, h, w, generator=g) * 2
    m0 = (torch.rand(3, 4, 6, generator=g) > 0.5).float()
    m0[2] = 0  # mask-less novel target
    m1 = (torch.rand(2, 4, 6, generator=g) > 0.5).float()
    t0 = _target([0, 1, 3], [True, True, False], m0)
    t1 = _target([2, 0], [True, True], m1)  # target 1 stays unmatched but counts in num_masks
    crit = _crit(FixedMatcher([([1, 0, 2], [0, 1, 2]), ([2], [0])]), complementary=False)
    out = crit({"pred_logits": torch.zeros(2, Q, 5), "pred_masks": pred}, [t0, t1])
    up = F.interpolate(pred, size=(4, 6), mode="bilinear", align_corners=False)
    pairs = [(up[0, 1], m0[0]), (up[0, 0], m0[1]), (up[1, 2], m1[0])]
    focal = dice = 0.0
    for x, t in pairs:
        ps = torch.sigmoid(x).flatten().tolist()
        ts = t.flatten().tolist()
        focal += sum(_py_focal(p, tt) for p, tt in zip(ps, ts)) / len(ps)
        dice += _py_dice(ps, ts)
    num_masks = 4  # all mask targets of the batch, matched or not
    assert math.isclose(float(out["loss_mask"]), focal / num_masks, rel_tol=1e-4)
    assert math.isclose(float(out["loss_dice"]), dice / num_masks, rel_tol=1e-5)


def test_mask_loss_gradient_is_zero_for_novel_matched_queries():
    g = torch.Generator().manual_seed(2)
    B, Q, K = 2, 6, 5
    logits = torch.randn(B, Q, K + 1, generator=g).requires_grad_()
    pred = torch.randn(B, Q, 4, 4, generator=g).requires_grad_()
    targets = []
    for _ in range(B):
        masks = (torch.rand(4, 8, 8, generator=g) > 0.5).float()
        masks[2:] = 0
        targets.append(_target([0, 1, 3, 4], [True, True, False, False], masks, K=K))
    matcher = HungarianMatcher()
    crit = _crit(matcher, K=K, novel=(3, 4), complementary=False)
    indices = matcher({"pred_logits": logits, "pred_masks": pred}, targets)
    losses = crit({"pred_logits": logits, "pred_masks": pred}, targets)
    (losses["loss_mask"] + losses["loss_dice"]).backward()
    for b, (qi, ti) in enumerate(indices):
        for q, t in zip(qi.tolist(), ti.tolist()):
            if targets[b]["has_mask"][t]:
                assert pred.grad[b, q].abs().sum() > 0
            else:
                assert torch.count_nonzero(pred.grad[b, q]) == 0
        unmatched = sorted(set(range(Q)) - set(qi.tolist()))
        assert torch.count_nonzero(pred.grad[b, unmatched]) == 0


# --------------------------------------------------------------------------- complementary loss
def _comp_case():
    H, W = 2, 3
    q1 = [[0.6, 0.05, 0.7], [0.3, 0.02, 0.9]]
    q2 = [[0.2, 0.5, 0.1], [0.01, 0.08, 0.2]]
    pred = torch.zeros(3, 3, H, W)
    pred[0, 0] = 3.0  # base-matched query
    pred[0, 1], pred[0, 2] = _logit(q1), _logit(q2)
    pred[1, 0] = 1.0
    pred[2, 0] = _logit(0.05)  # below gamma everywhere
    base = torch.tensor([[1.0, 0, 0], [0, 0, 0]])
    valid0 = torch.tensor([[True, True, False], [True, True, False]])
    t0 = _target([0, 3, 3], [True, False, False], torch.stack([base, torch.zeros(H, W), torch.zeros(H, W)]),
                 valid=valid0)
    t1 = _target([1], [True], torch.ones(1, H, W))  # no novel target: excluded from the average
    t2 = _target([3], [False], torch.zeros(1, H, W))  # novel only: target = 1 everywhere
    matcher = FixedMatcher([([0, 1, 2], [0, 1, 2]), ([0], [0]), ([0], [0])])
    return pred, [t0, t1, t2], matcher


def test_complementary_loss_matches_hand_computation():
    pred, targets, matcher = _comp_case()
    pred.requires_grad_()
    crit = _crit(matcher, ignore_prob=0.1)
    out = crit({"pred_logits": torch.zeros(3, 3, 5), "pred_masks": pred}, targets)
    # image 0: P = max(q1, q2, 0.1) at the 4 valid pixels, target = 1 - base
    p0 = [0.6, 0.5, 0.3, 0.1]
    t0 = [0, 1, 1, 1]
    focal0 = sum(_py_focal(p, t) for p, t in zip(p0, t0)) / 4
    dice0 = _py_dice(p0, t0)
    # image 2: P = gamma everywhere (6 pixels), target all ones
    focal2 = _py_focal(0.1, 1)
    dice2 = _py_dice([0.1] * 6, [1] * 6)
    assert math.isclose(float(out["loss_comp_mask"].detach()), (focal0 + focal2) / 2, rel_tol=1e-4)
    assert math.isclose(float(out["loss_comp_dice"].detach()), (dice0 + dice2) / 2, rel_tol=1e-4)
    (out["loss_comp_mask"] + out["loss_comp_dice"]).backward()
    assert torch.count_nonzero(pred.grad[0, 0]) == 0  # base-matched query: no comp gradient
    assert torch.count_nonzero(pred.grad[1]) == 0  # image without novel target
    assert torch.count_nonzero(pred.grad[0, :, :, 2]) == 0  # padding column excluded
    # q1 is the max at (0,0) and (1,0); q2 at (0,1); (1,1) is the gamma floor -> no gradient
    assert pred.grad[0, 1, 0, 0] != 0 and pred.grad[0, 1, 1, 0] != 0 and pred.grad[0, 2, 0, 1] != 0
    assert pred.grad[0, 1, 0, 1] == 0 and pred.grad[0, 1, 1, 1] == 0 and pred.grad[0, 2, 1, 1] == 0


def test_complementary_loss_zero_but_connected_without_novel():
    pred = torch.randn(1, 2, 2, 2, requires_grad=True)
    t = _target([0], [True], torch.ones(1, 2, 2))
    crit = _crit(FixedMatcher([([1], [0])]))
    out = crit({"pred_logits": torch.zeros(1, 2, 5), "pred_masks": pred}, [t])
    assert float(out["loss_comp_mask"].detach()) == 0.0 and float(out["loss_comp_dice"].detach()) == 0.0
    assert out["loss_comp_mask"].requires_grad
    (out["loss_comp_mask"] + out["loss_comp_dice"]).backward()
    assert pred.grad is not None


# --------------------------------------------------------------------------- SimNet loss
def _sim_outputs(B, C=4, h=6, w=6, Q=2, K=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "pred_logits": torch.randn(B, Q, K + 1, generator=g).requires_grad_(),
        "pred_masks": torch.randn(B, Q, h, w, generator=g).requires_grad_(),
        "mask_features": torch.randn(B, C, h, w, generator=g).requires_grad_(),
    }


def test_sim_loss_is_class_balanced_and_detached():
    torch.manual_seed(3)
    H = W = 6
    sem_i = torch.zeros(H, W, dtype=torch.long)  # all class 0
    sem_j = torch.zeros(H, W, dtype=torch.long)
    sem_j[:, 3:] = 255  # right half non-base: pairs with it are negatives
    net = SimNet(in_dim=4, hidden_dim=8, num_blocks=1)
    with torch.no_grad():  # constant logits: per-pair CE is known, balancing decides the value
        net.head.weight.zero_()
        net.head.bias.copy_(torch.tensor([0.3, -0.4]))
    crit = _crit(FixedMatcher([([], [])] * 2), simnet=net, distill=False, complementary=False, num_points=20)
    out = _sim_outputs(2)
    targets = [_target([], [], torch.zeros(0, H, W), sem=s) for s in (sem_i, sem_j)]
    loss = crit(out, targets, torch.tensor([[0, 1]]))["loss_sim"]
    lsm = torch.log_softmax(torch.tensor([0.3, -0.4]), 0)
    expected = (-float(lsm[1]) - float(lsm[0])) / 2  # mean(pos)/2 + mean(neg)/2
    assert math.isclose(float(loss.detach()), expected, rel_tol=1e-5)
    loss.backward()
    assert out["mask_features"].grad is None  # pixel embeddings detached
    assert net.head.bias.grad.abs().sum() > 0


def test_sim_loss_zero_but_connected_without_pairs():
    net = SimNet(in_dim=4, hidden_dim=8, num_blocks=1)
    crit = _crit(FixedMatcher([([], [])] * 2), simnet=net, complementary=False)
    targets = [_target([], [], torch.zeros(0, 6, 6)) for _ in range(2)]
    for pairs in (None, torch.zeros(0, 2, dtype=torch.long), torch.tensor([[0, 1]])):
        # the last case: both images are all non-base, so no pair counts
        net.zero_grad(set_to_none=True)
        out = _sim_outputs(2)
        losses = crit(out, targets, pairs)
        for k in ("loss_sim", "loss_dist"):
            assert float(losses[k].detach()) == 0.0 and losses[k].requires_grad
        (losses["loss_sim"] + losses["loss_dist"]).backward()
        assert all(p.grad is not None for p in net.parameters())
        assert out["pred_logits"].grad is not None


# --------------------------------------------------------------------------- distillation
def _brute_distill(crit, out, pairs, idx_i, idx_j, within=False):
    net = crit.simnet
    net.eval()
    feats = out["mask_features"].detach().flatten(2)
    cls = out["pred_logits"].detach().softmax(-1)
    masks = out["pred_masks"].detach().flatten(2).sigmoid()
    novel = crit.novel_class_ids.tolist()
    total, n = 0.0, 0
    for p, (i, j) in enumerate(pairs.tolist()):
        for a in range(idx_i.shape[1]):
            for b in range(idx_j.shape[1]):
                pa, pb = int(idx_i[p, a]), int(idx_j[p, b])
                with torch.no_grad():
                    r = float(net(torch.cat([feats[i, :, pa], feats[j, :, pb]])[None]).softmax(-1)[0, 1])
                s_a = torch.tensor([float((cls[i, :, c] * masks[i, :, pa]).sum()) for c in novel])
                jb, ib = (j, pb) if not within else (i, int(idx_i[p, b]))
                s_b = torch.tensor([float((cls[jb, :, c] * masks[jb, :, ib]).sum()) for c in novel])
                cos = float(s_a @ s_b / (s_a.norm() * s_b.norm()))
                s = min(max(cos, crit.distill_clamp), 1 - crit.distill_clamp)
                total += -(r * math.log(s) + (1 - r) * math.log(1 - s))
                n += 1
    net.train()
    return total / n


def test_distill_uses_cross_image_pairs():
    torch.manual_seed(4)
    net = SimNet(in_dim=4, hidden_dim=8, num_blocks=2)
    net.train()
    for _ in range(3):  # non-trivial running statistics
        net(torch.randn(50, 8) * 2 + 1)
    crit = _crit(FixedMatcher([([], [])] * 3), K=4, novel=(1, 3), simnet=net, num_points=4)
    out = _sim_outputs(3, Q=3, h=3, w=4, seed=5)
    pairs = torch.tensor([[0, 1], [2, 0]])
    g = torch.Generator().manual_seed(6)
    idx_i, idx_j = torch.randint(0, 12, (2, 4), generator=g), torch.randint(0, 12, (2, 4), generator=g)
    loss = crit.distill_loss_at_points(out, pairs, idx_i, idx_j)
    cross = _brute_distill(crit, out, pairs, idx_i, idx_j)
    within = _brute_distill(crit, out, pairs, idx_i, idx_j, within=True)
    assert math.isclose(float(loss.detach()), cross, rel_tol=1e-4)
    assert abs(cross - within) > 1e-2  # the check can tell the two pairings apart
    assert net.training


def test_distill_samples_only_non_base_valid_pixels():
    torch.manual_seed(7)
    H = W = 4
    net = SimNet(in_dim=4, hidden_dim=8, num_blocks=1)
    crit = _crit(FixedMatcher([([], [])] * 2), K=4, novel=(1, 3), simnet=net, num_points=5, complementary=False)
    sems, valids = [], []
    for px in ((1, 2), (3, 0)):
        sem = torch.zeros(H, W, dtype=torch.long)
        sem[px] = 255  # the single non-base pixel
        sem[:, 3] = 255  # padding column: non-base but not valid
        valid = torch.ones(H, W, dtype=torch.bool)
        valid[:, 3] = False
        sems.append(sem)
        valids.append(valid)
    il = torch.tensor([True, True, False, False])
    targets = [_target([], [], torch.zeros(0, H, W), sem=s, valid=v, image_labels=il) for s, v in zip(sems, valids)]
    out = _sim_outputs(2, Q=3, h=H, w=W, seed=8)
    pairs = torch.tensor([[0, 1]])
    loss = crit(out, targets, pairs)["loss_dist"]
    idx_i, idx_j = torch.full((1, 5), 1 * W + 2), torch.full((1, 5), 3 * W + 0)
    assert math.isclose(float(loss.detach()), _brute_distill(crit, out, pairs, idx_i, idx_j), rel_tol=1e-4)
    # the pair shares only base class 0 -> no distillation (connected zero)
    il_base = torch.tensor([True, False, False, False])
    for t in targets:
        t["image_labels"] = il_base
    zero = crit(out, targets, pairs)["loss_dist"]
    assert float(zero.detach()) == 0.0 and zero.requires_grad


def test_distill_gives_no_gradient_to_simnet_and_keeps_bn_stats():
    torch.manual_seed(9)
    net = SimNet(in_dim=4, hidden_dim=8, num_blocks=1)
    crit = _crit(FixedMatcher([([], [])] * 2), K=4, novel=(1, 3), simnet=net, num_points=6, complementary=False)
    out = _sim_outputs(2, Q=3, h=4, w=4, seed=10)
    il = torch.tensor([False, True, False, True])
    sem = torch.full((4, 4), 255, dtype=torch.long)
    targets = [_target([], [], torch.zeros(0, 4, 4), sem=sem, image_labels=il) for _ in range(2)]
    stats = {k: v.clone() for k, v in net.state_dict().items()}
    loss = crit.loss_distill(out, targets, torch.tensor([[0, 1], [1, 0]]))
    assert float(loss.detach()) > 0
    loss.backward()
    assert all(p.grad is None for p in net.parameters())
    assert all(torch.equal(stats[k], v) for k, v in net.state_dict().items())
    assert net.training
    assert out["pred_logits"].grad.abs().sum() > 0 and out["pred_masks"].grad.abs().sum() > 0
    assert out["mask_features"].grad is None


# --------------------------------------------------------------------------- deep supervision, config
def test_deep_supervision_keys_and_independent_matching():
    H = W = 4
    g = torch.Generator().manual_seed(11)
    masks = (torch.rand(2, H, W, generator=g) > 0.5).float()
    masks[1] = 0
    t = _target([0, 3], [True, False], masks)
    out = {"pred_logits": torch.randn(1, 3, 5, generator=g), "pred_masks": torch.randn(1, 3, H, W, generator=g)}
    out["aux_outputs"] = [
        {"pred_logits": torch.randn(1, 3, 5, generator=g), "pred_masks": torch.randn(1, 3, H, W, generator=g)}
        for _ in range(2)
    ]
    matcher = FixedMatcher([([0, 2], [0, 1])])
    crit = _crit(matcher, deep_supervision=True, num_aux_layers=2)
    losses = crit(out, [t])
    per_layer = ["loss_ce", "loss_mask", "loss_dice", "loss_comp_mask", "loss_comp_dice"]
    expected = set(per_layer) | {f"{k}_{i}" for k in per_layer for i in range(2)}
    assert set(losses) == expected
    assert all(k in crit.weight_dict for k in losses)
    assert crit.weight_dict["loss_comp_mask_1"] == pytest.approx(0.2 * 20.0)
    assert crit.weight_dict["loss_dice_7"] == 1.0  # more aux layers than configured still resolve
    assert [id(x) for x in matcher.seen] == [id(out["pred_logits"])] + [id(a["pred_logits"]) for a in out["aux_outputs"]]
    # the aux loss equals the final-layer loss computed on the aux outputs
    ref = crit({"pred_logits": out["aux_outputs"][1]["pred_logits"], "pred_masks": out["aux_outputs"][1]["pred_masks"]}, [t])
    assert torch.allclose(losses["loss_mask_1"], ref["loss_mask"]) and torch.allclose(losses["loss_ce_1"], ref["loss_ce"])
    crit2 = _crit(matcher, deep_supervision=True, comp_deep_supervision=False, num_aux_layers=2)
    keys2 = set(crit2(out, [t]))
    assert "loss_comp_mask_0" not in keys2 and "loss_mask_0" in keys2 and "loss_comp_mask" in keys2


def test_build_criterion_from_config():
    cfg = get_cfg()
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 16
    cfg.WEAKSHOT.SIMNET.HIDDEN_DIM = 8
    crit = build_criterion(cfg, 5, [3, 4])
    w = crit.weight_dict
    assert w["loss_ce"] == 1.0 and w["loss_mask"] == 20.0 and w["loss_dice"] == 1.0
    assert w["loss_comp_mask"] == pytest.approx(4.0) and w["loss_comp_dice"] == pytest.approx(0.2)
    assert w["loss_sim"] == 1.0 and w["loss_dist"] == 0.1
    assert "loss_ce_4" in w and dict.__contains__(w, "loss_ce_4") and not dict.__contains__(w, "loss_ce_5")
    assert crit.simnet.stem[0].in_features == 32 and crit.simnet.stem[0].out_features == 8
    assert crit.novel_class_ids.tolist() == [3, 4] and crit.empty_weight[-1] == pytest.approx(0.1)
    cfg.WEAKSHOT.PAIR_MODE = "none"
    with pytest.raises(ValueError, match="PAIR_MODE"):
        build_criterion(cfg, 5, [3, 4])
    cfg.WEAKSHOT.SIMNET.ENABLED = False
    cfg.WEAKSHOT.DISTILL.ENABLED = False
    crit = build_criterion(cfg, 5, [])
    assert crit.simnet is None and "loss_sim" not in crit.weight_dict
    cfg.WEAKSHOT.DISTILL.ENABLED = True
    cfg.WEAKSHOT.PAIR_MODE = "cross"
    with pytest.raises(ValueError, match="SIMNET.ENABLED"):
        build_criterion(cfg, 5, [3])


# --------------------------------------------------------------------------- point loss
def _point_case():
    g = torch.Generator().manual_seed(12)
    H, W, h, w = 16, 24, 4, 6
    pred = torch.randn(2, 4, h, w, generator=g) * 2
    targets = []
    for b in range(2):
        # blocky masks (4x4 cells): random points then estimate the pixel mean without large
        # discretisation error
        masks = (torch.rand(3, h, w, generator=g) > 0.6).float().repeat_interleave(4, 1).repeat_interleave(4, 2)
        masks[2] = 0
        valid = torch.ones(H, W, dtype=torch.bool)
        valid[:, 20:] = False
        targets.append(_target([0, 1, 3], [True, True, False], masks, valid=valid))
    matcher = FixedMatcher([([0, 2, 3], [0, 1, 2]), ([1, 0, 2], [0, 1, 2])])
    return pred, targets, matcher, (H, W)


class DenseGrid(PointSampler):
    """Points at every pixel centre of an H x W target: the point losses must equal the full ones."""

    def __init__(self, height: int, width: int):
        super().__init__(enabled=True)
        object.__setattr__(self, "size", (height, width))

    def coords(self, coarse_logits):
        return dense_grid_coords(*self.size, coarse_logits.shape[0])


def test_point_loss_on_dense_grid_equals_full_resolution():
    pred, targets, matcher, (H, W) = _point_case()
    outputs = {"pred_logits": torch.zeros(2, 4, 5), "pred_masks": pred}
    full = _crit(matcher)(outputs, targets)
    crit = _crit(matcher, point_sampler=DenseGrid(H, W))
    pts = crit(outputs, targets)
    for k in ("loss_mask", "loss_dice", "loss_comp_mask", "loss_comp_dice"):
        assert math.isclose(float(pts[k]), float(full[k]), rel_tol=1e-5), k


def test_point_loss_random_points_approximate_full_resolution():
    torch.manual_seed(13)
    pred, targets, matcher, _ = _point_case()
    outputs = {"pred_logits": torch.zeros(2, 4, 5), "pred_masks": pred}
    full = _crit(matcher)(outputs, targets)
    crit = _crit(matcher, point_sampler=PointSampler(enabled=True, num_points=20000, oversample_ratio=1.0,
                                                     importance_sample_ratio=0.0))
    pts = crit(outputs, targets)
    for k in ("loss_mask", "loss_dice", "loss_comp_mask", "loss_comp_dice"):
        assert math.isclose(float(pts[k]), float(full[k]), rel_tol=0.05), k
    # importance sampling (default ratios) runs and differs from uniform sampling
    crit_imp = _crit(matcher, point_sampler=PointSampler(enabled=True, num_points=500))
    imp = crit_imp(outputs, targets)
    assert all(torch.isfinite(v) for v in imp.values())


def test_matched_with_masks_equals_a_loop_over_images_and_matches():
    from simformer.modeling.mask_terms import matched_with_masks

    g = torch.Generator().manual_seed(3)
    per_query = torch.randn(3, 5, 4, 4, generator=g)
    flags = [[True, False, True], [False], [True, True, False, True]]
    targets = [_target(list(range(len(f))), f, torch.rand(len(f), 6, 6, generator=g)) for f in flags]
    indices = [(torch.tensor([4, 0, 2]), torch.tensor([2, 0, 1])), (torch.tensor([1]), torch.tensor([0])),
               (torch.tensor([3, 1, 0, 2]), torch.tensor([1, 3, 2, 0]))]
    src, tgt = matched_with_masks(per_query, targets, indices)
    want_src, want_tgt = [], []
    for b, (q, t) in enumerate(indices):
        for qi, ti in zip(q.tolist(), t.tolist()):
            if flags[b][ti]:
                want_src.append(per_query[b, qi])
                want_tgt.append(targets[b]["masks"][ti])
    torch.testing.assert_close(src, torch.stack(want_src))
    torch.testing.assert_close(tgt, torch.stack(want_tgt))
    # the same selection on another per-target tensor
    for tg in targets:
        tg["score"] = tg["labels"].float() * 10
    _, scores = matched_with_masks(per_query, targets, indices, key="score")
    assert scores.tolist() == [20.0, 0.0, 10.0, 30.0, 0.0]


def test_with_complement_is_one_minus_the_union_of_each_images_masked_targets():
    from simformer.modeling.mask_terms import with_complement

    g = torch.Generator().manual_seed(5)
    flags = [[True, False, True], [False], [True, True]]  # image 1: no target with a mask
    targets = [_target(list(range(len(f))), f, (torch.rand(len(f), 5, 7, generator=g) > 0.6)) for f in flags]
    got = with_complement(targets)
    for tg, out in zip(targets, got):
        want = torch.ones(5, 7)
        for m, keep in zip(tg["masks"], tg["has_mask"]):
            if keep:
                want = torch.minimum(want, 1 - m)
        torch.testing.assert_close(out["complement"], want)
        assert "complement" not in tg
