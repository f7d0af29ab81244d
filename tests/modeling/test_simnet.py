import math

import torch
import torch.nn.functional as F

from simformer.modeling.point_sampling import (
    calculate_uncertainty,
    dense_grid_coords,
    get_uncertain_point_coords_with_randomness,
    point_sample,
    sample_points,
)
from simformer.modeling.pair_losses import (
    balanced_pair_loss,
    pair_targets,
    sample_pair_points,
    simnet_pair_loss,
)
from simformer.modeling.simnet import SimNet


def make_cross_pairs(feat_a: torch.Tensor, feat_b: torch.Tensor) -> torch.Tensor:
    """Reference for SimNet.pair_logits, written out (test-only): all cross pairs: ``out[p, a, b] = cat(feat_a[p, a], feat_b[p, b])``.

    ``feat_a [P,J,C]``, ``feat_b [P,K,C]`` -> ``[P,J,K,2C]``.
    """
    P, J, C = feat_a.shape
    K = feat_b.shape[1]
    return torch.cat(
        [feat_a[:, :, None, :].expand(P, J, K, C), feat_b[:, None, :, :].expand(P, J, K, feat_b.shape[2])],
        dim=-1,
    )


def _randomise_bn(net, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))


def test_simnet_matches_manual_forward():
    torch.manual_seed(0)
    net = SimNet(in_dim=3, hidden_dim=5, num_blocks=2)
    _randomise_bn(net)
    net.eval()
    x = torch.randn(7, 6)

    def bn(m, v):
        return (v - m.running_mean) / torch.sqrt(m.running_var + m.eps) * m.weight + m.bias

    y = torch.relu(bn(net.stem[1], x @ net.stem[0].weight.T))
    for blk in net.blocks:
        z = torch.relu(bn(blk.bn1, y @ blk.fc1.weight.T))
        z = bn(blk.bn2, z @ blk.fc2.weight.T)
        y = torch.relu(y + z)
    expected = y @ net.head.weight.T + net.head.bias
    assert torch.allclose(net(x), expected, atol=1e-5)
    assert net(x).shape == (7, 2)


def test_cross_pairs_and_pair_logits_match_loops():
    torch.manual_seed(1)
    a, b = torch.randn(2, 3, 4), torch.randn(2, 5, 4)
    pairs = make_cross_pairs(a, b)
    assert pairs.shape == (2, 3, 5, 8)
    net = SimNet(in_dim=4, hidden_dim=6, num_blocks=1)
    _randomise_bn(net, 3)
    net.eval()
    net.train()  # batch statistics: the factorised first layer must equal the explicit pair tensor
    assert torch.allclose(net.pair_logits(a, b), net(pairs.reshape(-1, 8)).reshape(2, 3, 5, 2), atol=1e-5)
    net.eval()
    logits = net.pair_logits(a, b)
    for p in range(2):
        for i in range(3):
            for j in range(5):
                assert torch.equal(pairs[p, i, j], torch.cat([a[p, i], b[p, j]]))
                assert torch.allclose(logits[p, i, j], net(torch.cat([a[p, i], b[p, j]])[None])[0], atol=1e-5)


def test_pair_targets_match_double_loop():
    g = torch.Generator().manual_seed(2)
    la = torch.tensor([0, 1, 2, 255])[torch.randint(0, 4, (3, 6), generator=g)]
    lb = torch.tensor([0, 1, 2, 255])[torch.randint(0, 4, (3, 5), generator=g)]
    va, vb = torch.rand(3, 6, generator=g) > 0.2, torch.rand(3, 5, generator=g) > 0.2
    same, counts = pair_targets(la, lb, va, vb)
    for p in range(3):
        for i in range(6):
            for j in range(5):
                a, b = int(la[p, i]), int(lb[p, j])
                c = bool(va[p, i]) and bool(vb[p, j]) and (a != 255 or b != 255)
                assert bool(counts[p, i, j]) == c
                assert bool(same[p, i, j]) == (c and a == b)
    # base vs ignore counts as dissimilar; ignore vs ignore does not count
    s, c = pair_targets(torch.tensor([[3, 255]]), torch.tensor([[255]]))
    assert c[0, :, 0].tolist() == [True, False] and s[0, 0, 0].item() is False


def test_balanced_pair_loss_formula():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 3, 4, 2, generator=g)
    same = torch.rand(2, 3, 4, generator=g) > 0.7
    counts = torch.rand(2, 3, 4, generator=g) > 0.2
    pos, neg = [], []
    for idx in itertools_product((2, 3, 4)):
        if not counts[idx]:
            continue
        lp = torch.log_softmax(logits[idx], -1)
        (pos if same[idx] else neg).append(-float(lp[1] if same[idx] else lp[0]))
    expected = (sum(pos) / len(pos) + sum(neg) / len(neg)) / 2
    assert math.isclose(float(balanced_pair_loss(logits, same, counts)), expected, rel_tol=1e-5)
    # positives and negatives each carry total weight 1/2 of the gradient mass
    lg = logits.clone().requires_grad_()
    balanced_pair_loss(lg, same, counts).backward()
    gsum = lg.grad.abs().sum(-1)
    # d CE / d logits has L1 norm 2 * (1 - p_target); compare weights through that
    p_t = torch.where(same, logits.softmax(-1)[..., 1], logits.softmax(-1)[..., 0])
    w = gsum / (2 * (1 - p_t))
    assert math.isclose(float(w[same & counts].sum()), 0.5, rel_tol=1e-4)
    assert math.isclose(float(w[~same & counts].sum()), 0.5, rel_tol=1e-4)
    assert float(w[~counts].abs().sum()) == 0.0
    # only negatives: plain mean over them; nothing counted: a connected zero
    only_neg = balanced_pair_loss(logits, torch.zeros_like(same), counts)
    ce0 = -torch.log_softmax(logits, -1)[..., 0]
    assert math.isclose(float(only_neg), float(ce0[counts].mean()), rel_tol=1e-5)
    z = balanced_pair_loss(lg, same, torch.zeros_like(counts))
    assert float(z.detach()) == 0.0 and z.requires_grad


def itertools_product(shape):
    import itertools

    return itertools.product(*[range(s) for s in shape])


def test_simnet_pair_loss_at_given_points_matches_double_loop():
    torch.manual_seed(5)
    net = SimNet(in_dim=3, hidden_dim=4, num_blocks=1)
    _randomise_bn(net, 5)
    net.eval()
    fa, fb = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    la = torch.tensor([[0, 1, 255, 0], [2, 2, 255, 255]])
    lb = torch.tensor([[0, 255, 1, 3], [255, 2, 1, 255]])
    loss = simnet_pair_loss(net, fa, fb, la, lb)
    pos, neg = [], []
    for p in range(2):
        for i in range(4):
            for j in range(4):
                a, b = int(la[p, i]), int(lb[p, j])
                if a == 255 and b == 255:
                    continue
                lp = torch.log_softmax(net(torch.cat([fa[p, i], fb[p, j]])[None])[0], -1)
                (pos if a == b else neg).append(-float((lp[1] if a == b else lp[0]).detach()))
    assert math.isclose(float(loss.detach()), (sum(pos) / len(pos) + sum(neg) / len(neg)) / 2, rel_tol=1e-5)


def test_sample_points_support_zero_rows_and_frequencies():
    torch.manual_seed(6)
    w = torch.tensor([[0.0, 1.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    idx = sample_points(w, 4000)
    assert idx.shape == (2, 4000) and idx.dtype == torch.long
    assert set(idx[0].tolist()) == {1, 2}
    assert abs(float((idx[0] == 2).float().mean()) - 0.75) < 0.03
    assert idx[1].min() >= 0 and idx[1].max() <= 3  # zero row: uniform, still in range
    assert len(set(idx[1].tolist())) == 4


def _pair_scene():
    # two 6x6 images; last column is padding
    H = W = 6
    la = torch.full((H, W), 255)
    la[:3, :5] = 1
    la[3:, :2] = 2
    lb = torch.full((H, W), 255)
    lb[:, :2] = 1
    lb[:, 2:4] = 3
    va = torch.ones(H, W, dtype=torch.bool)
    va[:, 5] = False
    vb = va.clone()
    lc = torch.full((H, W), 255)
    lc[:, :5] = 4  # shares nothing with a or b
    return torch.stack([la, lb, lc]).flatten(1), torch.stack([va, vb, va]).flatten(1)


def test_sample_pair_points_focus_class_and_uniform_rest():
    torch.manual_seed(7)
    labels, valid = _pair_scene()
    pairs = torch.tensor([[0, 1], [1, 0], [0, 2], [2, 2]])
    J = 20
    idx_i, idx_j, focus = sample_pair_points(labels, valid, pairs, J, 0.8, 5)
    assert idx_i.shape == (4, J) and idx_j.shape == (4, J)
    assert focus.tolist() == [1, 1, -1, 4]
    nf = 16
    for p in range(4):
        for side, idx in ((0, idx_i), (1, idx_j)):
            img = int(pairs[p, side])
            lab = labels[img][idx[p]]
            assert valid[img][idx[p]].all()  # never padding
            if focus[p] >= 0:
                assert (lab[:nf] == focus[p]).all()
    # the uniform part covers non-focus pixels too (statistically: 4 points x 200 draws)
    many = sample_pair_points(labels, valid, torch.tensor([[0, 1]] * 200), J, 0.8, 5)[0]
    rest = labels[0][many[:, nf:]]
    frac_ignore = float((rest == 255).float().mean())
    expected = float(((labels[0] == 255) & valid[0]).sum()) / float(valid[0].sum())
    assert abs(frac_ignore - expected) < 0.06
    assert (labels[0][many[:, :nf]] == 1).all()
    # no shared class: the first points are uniform over valid pixels as well
    none = sample_pair_points(labels, valid, torch.tensor([[0, 2]] * 200), J, 0.8, 5)[0]
    head = labels[0][none[:, :nf]]
    assert abs(float((head == 255).float().mean()) - expected) < 0.06
    assert valid[0][none].all()


def test_point_sample_dense_grid_equals_bilinear_upsampling():
    torch.manual_seed(8)
    x = torch.randn(2, 3, 4, 5)
    coords = dense_grid_coords(8, 10, 2)
    got = point_sample(x, coords).reshape(2, 3, 8, 10)
    ref = F.interpolate(x, size=(8, 10), mode="bilinear", align_corners=False)
    assert torch.allclose(got, ref, atol=1e-5)
    same = point_sample(x, dense_grid_coords(4, 5, 2)).reshape(2, 3, 4, 5)
    assert torch.allclose(same, x, atol=1e-6)


def test_importance_sampling_prefers_uncertain_points():
    torch.manual_seed(9)
    logits = torch.full((3, 1, 4, 4), 10.0)
    logits[..., :2] = 0.0  # left half maximally uncertain
    coords = get_uncertain_point_coords_with_randomness(logits, calculate_uncertainty, 40, 3.0, 0.75)
    assert coords.shape == (3, 40, 2)
    assert (coords >= 0).all() and (coords <= 1).all()
    # the 30 importance points lie where the interpolated logit is < 10 (x < 0.625)
    assert (coords[:, :30, 0] < 0.625).all()
    assert (coords[:, 30:, 0] >= 0.625).any()  # the random rest is not restricted
