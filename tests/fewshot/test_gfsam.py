"""GF-SAM over hand-built Views: the graph clustering against union-find / reachability brute
force, the paper's equations on hand-worked numbers, exact proposals + one-hot features -> IoU 100,
the symmetry of the matching, the ablation switches and the fallback, and the pseudo-label
refinement."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from simformer.fewshot.base import FEWSHOT_METHOD_REGISTRY, View
from simformer.fewshot.gfsam import GFSAM, build_gfsam
from simformer.fewshot.gfsam_graph import (Alignment, align, components, correlation, growth_order_score,
                                           mask_growth, point_map, polarity, select_points, self_consistency)
from simformer.retrain.refine import pick_reference, refine_pseudo_label

E1, E2 = (1.0, 0.0, 0.0, 0.0), (0.0, 1.0, 0.0, 0.0)


def feats(grid):
    """[h][w] list of feature tuples -> float32 [C,h,w]."""
    return torch.tensor(grid, dtype=torch.float32).permute(2, 0, 1).contiguous()


def view(features, proposals, scores=None, mask=None, valid=None):
    h, w = features.shape[-2:]
    props = torch.stack([torch.as_tensor(p, dtype=torch.float32) for p in proposals]) if len(proposals) else \
        torch.zeros(0, h, w)
    v = View(image=torch.zeros(3, *props.shape[-2:]) if len(proposals) else torch.zeros(3, h, w), proposals=props,
             scores=torch.ones(len(props)) if scores is None else torch.tensor(scores, dtype=torch.float32),
             features={"res4": features})
    return v if mask is None else v.with_mask(torch.as_tensor(mask), None if valid is None else torch.as_tensor(valid))


def box(h, w, rows, cols):
    m = torch.zeros(h, w, dtype=torch.bool)
    m[rows[0]:rows[1], cols[0]:cols[1]] = True
    return m


# ------------------------------------------------------------------------------------------------
# clustering
def _union_find(n_nodes, edges):
    parent = list(range(n_nodes))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in edges:
        parent[find(a)] = find(b)
    return [find(a) for a in range(n_nodes)]


def _random_graph(rng, n, m, k):
    prompt_point, prompt_mask = [], []
    for j in range(m):  # every mask has >= 1 prompting point; a point prompts <= k masks
        for p in rng.choice(n, size=min(n, int(rng.integers(1, 3))), replace=False):
            if prompt_point.count(int(p)) < k:
                prompt_point.append(int(p))
                prompt_mask.append(j)
        if j not in prompt_mask:
            prompt_point.append(int(rng.integers(n)))
            prompt_mask.append(j)
    cover = rng.random((m, n)) < 0.12
    cover[prompt_mask, prompt_point] = True  # a prompted mask contains its point
    return torch.tensor(prompt_point), torch.tensor(prompt_mask), torch.from_numpy(cover)


def test_weak_clusters_equal_union_find():
    rng = np.random.default_rng(0)
    for trial in range(25):
        n, m = int(rng.integers(1, 14)), int(rng.integers(1, 12))
        pp, pm, cover = _random_graph(rng, n, m, k=3)
        edges = [(int(a), n + int(b)) for a, b in zip(pp, pm)]
        edges += [(n + j, i) for j in range(m) for i in range(n) if cover[j, i]]
        roots = _union_find(n + m, edges)
        k, pc, mc = components(n, pp, pm, cover, "weak")
        labels = list(pc.tolist()) + list(mc.tolist())
        for a in range(n + m):
            for b in range(n + m):
                assert (roots[a] == roots[b]) == (labels[a] == labels[b])
        assert k == len({roots[a] for a in range(n)})
        firsts = [labels[:n].index(c) for c in range(k)]  # numbered in order of first point
        assert firsts == sorted(firsts)


def test_strong_clusters_equal_mutual_reachability():
    rng = np.random.default_rng(1)
    for trial in range(15):
        n, m = int(rng.integers(1, 10)), int(rng.integers(1, 9))
        pp, pm, cover = _random_graph(rng, n, m, k=2)
        size = n + m
        reach = np.eye(size, dtype=bool)
        for a, b in zip(pp.tolist(), pm.tolist()):
            reach[a, n + b] = True
        for j in range(m):
            for i in range(n):
                reach[n + j, i] |= bool(cover[j, i])
        for via in range(size):  # Floyd-Warshall closure
            reach |= reach[:, via:via + 1] & reach[via:via + 1, :]
        _, pc, mc = components(n, pp, pm, cover, "strong")
        labels = pc.tolist() + mc.tolist()
        for a in range(size):
            for b in range(size):
                assert (reach[a, b] and reach[b, a]) == (labels[a] == labels[b])


# ------------------------------------------------------------------------------------------------
# Eq. 1-5 and Algorithm 1 by hand
R2 = math.sqrt(0.5)


def test_alignment_point_map_and_polarity_by_hand():
    # support cells: s0 = e1 (fg), s1 = e2 (bg), s2 = (e1 + e2)/sqrt2 (fg); query: e1, e2, -e1
    sup = torch.tensor([[1.0, 0.0, R2], [0.0, 1.0, R2]])
    qry = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    fg, bg = torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.0, 1.0, 0.0])
    # C (Eq. 1, ReLU'd cosine): q0 -> [1, 0, .7071], q1 -> [0, 1, .7071], q2 -> [0, 0, 0]
    torch.testing.assert_close(correlation(qry, sup), torch.tensor([[1, 0, R2], [0, 1, R2], [0, 0, 0]]).double())
    al = align(qry, [(sup, fg, bg)])
    torch.testing.assert_close(al.pos_mean, torch.tensor([(1 + R2) / 2, R2 / 2, 0]).double())  # .8536 .3536 0
    torch.testing.assert_close(al.pos_max, torch.tensor([1, R2, 0]).double())
    torch.testing.assert_close(al.neg_mean, torch.tensor([0.0, 1.0, 0.0]).double())
    # S+_mix = [.8536, .25, 0] -> M = [1, .2929, 0]; M(S-_mean) = [0, 1, 0] -> S_p = [1, 0, 0] (to 1e-6)
    sp = point_map(al)
    torch.testing.assert_close(sp, torch.tensor([1.0, 0.0, 0.0]).double(), atol=1e-5, rtol=0)
    # sum S_p = 0.999999 floors to 0 points; the code then takes 1
    assert select_points(sp, 128).tolist() == [0]
    # Eq. 4: s_mid = .4268; S+^2 = [.7286, .125, 0] vs s_mid * S- = [0, .4268, 0] -> [+1, -1, -1]
    assert polarity(al).tolist() == [1.0, -1.0, -1.0]


def test_point_count_cap_and_order():
    sp = torch.tensor([0.9, 0.2, 1.0, 0.9, 0.5, 1.0, 0.8, 0.3, 0.0, 0.9]).double()  # sum 6.5
    assert select_points(sp, 128).tolist() == [2, 5, 0, 3, 9, 6]  # floor(6.5) = 6, ties by index
    assert select_points(sp, 3).tolist() == [2, 5, 0]
    assert select_points(torch.tensor([0.0, 0.3]).double(), 128).tolist() == [1]
    assert select_points(torch.zeros(4).double(), 128).tolist() == []


def test_mask_growth_hand_worked():
    sign = torch.tensor([1.0, 1, 1, -1, -1]).double()
    masks = torch.tensor([
        [1, 1, 1, 0, 0],      # A cluster 0, visited 1st: +3 > 0 -> kept, grown = {0,1,2}
        [1, 1, 1, 1, 0],      # B cluster 0, 2nd: alone +2, but outside grown only {3}: -1 -> dropped
        [0, 0, 0, 1, 1],      # C cluster 0, 3rd: -2 -> dropped
        [0, 1, 0, 1, 0],      # E cluster 1, 1st: +1 - 1 = 0, not > 0 -> dropped
        [0, 1, 0, 0, 0],      # F cluster 1, 2nd: +1 -> kept
        [0.5, 0, 0, 0, 0],    # G cluster 2, 1st: +.5 -> kept, grown = [.5,0,0,0,0]
        [1, 0, 0, 0.4, 0],    # H cluster 2, 2nd: residual [.5,0,0,.4,0] -> +.1 -> kept
    ]).double()
    cluster = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    order = torch.tensor([3.0, 2.0, 1.0, 5.0, 4.0, 0.7, 0.6])
    assert mask_growth(masks, cluster, order, sign).tolist() == [True, False, False, False, True, True, True]


def _growth_loop(masks, cluster, order, sign):
    """Algorithm 1 written per cluster, one mask at a time."""
    out = [False] * len(masks)
    for c in sorted(set(cluster.tolist())):
        members = [i for i in range(len(masks)) if cluster[i] == c]
        members.sort(key=lambda i: (-float(order[i]), i))
        grown = torch.zeros(masks.shape[1], dtype=torch.float64)
        for i in members:
            residual = masks[i] * (1 - grown)
            if float((residual * sign).sum()) > 0:
                grown = grown + residual
                out[i] = True
    return out


def test_mask_growth_equals_per_cluster_loop():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        m, n = 12, 16
        masks = (torch.rand(m, n, generator=g) < 0.4).double() * torch.rand(m, n, generator=g).round(decimals=1)
        cluster = torch.randint(0, 4, (m,), generator=g)
        cluster = torch.unique(cluster, return_inverse=True)[1]
        order = torch.rand(m, generator=g).double()
        sign = torch.where(torch.rand(n, generator=g) < 0.5, 1.0, -1.0).double()
        assert mask_growth(masks, cluster, order, sign).tolist() == _growth_loop(masks, cluster, order, sign)


def test_growth_order_score_by_hand():
    al = Alignment(pos_mean=torch.tensor([1.0, 0.5, 0.0]).double(), pos_max=torch.ones(3).double(),
                   neg_mean=torch.tensor([0.0, 0.4, 1.0]).double())
    # s_mid = .5; margin = S+^2 - s_mid S- = [1, .25 - .2, -.5] = [1, .05, -.5]
    masks = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.5, 1.0]]).double()
    want = torch.tensor([(1 + 0.05) / (2 + 1e-6), (0.025 - 0.5) / (1.5 + 1e-6)]).double()
    torch.testing.assert_close(growth_order_score(al, masks), want)


def test_self_consistency_hand_worked():
    # 6 points on a row (y = 0), clusters [0,0,0,1,2,2]; cells: union of cluster c = cell c (share 1)
    xy = torch.tensor([[0, 0], [0, 1], [0, 2], [0, 4], [0, 7], [0, 8]])
    cl = torch.tensor([0, 0, 0, 1, 2, 2])
    unions = torch.eye(3).double()
    corr = torch.tensor([[0.9, 0.8, 0.1], [0.5, 0.9, 0.1], [0.3, 0.9, 0.1], [0.8, 0.3, 0.1],
                         [0.1, 0.9, 0.2], [0.1, 0.1, 0.5]]).double()
    # nearest-point distances [cluster 0, 1, 2] (0 -> 1): p0 [1,4,7] p1 [1,3,6] p2 [1,2,5] p3 [2,1,3]
    # p4 [5,3,1] p5 [6,4,1]
    # scores: p0 [.9,.2,.014] ok; p1 [.5,.3,.017] ok; p2 [.3,.45,.02] -> 1, not its own;
    # p3 [.4,.3,.033] -> 0, not its own; p4 [.02,.3,.2] -> 1, not its own; p5 [.017,.025,.5] ok
    # cluster 0: 2 consistent vs 1 -> kept; cluster 1: 0 vs 1 -> gone; cluster 2: 1 vs 1 -> kept (tie)
    assert self_consistency(corr, unions, xy, cl).tolist() == [True, True, False, False, False, True]
    # without the division by the distance (the paper's Table 6 "w/o dist") p1 would flip to cluster 1
    assert (corr[1] @ unions.T).argmax() == 1


# ------------------------------------------------------------------------------------------------
# the method on Views
def _scene(shots=1):
    """Query 16x16 px with 8x8 one-hot features (class 1 = two separated squares), exact proposals."""
    h = w = 8
    ql = torch.full((h, w), 2)
    ql[:, 4:] = 3
    ql[1:3, 1:3] = 1
    ql[5:8, 5:8] = 1
    up = lambda t: t.repeat_interleave(2, 0).repeat_interleave(2, 1)
    qpix = up(ql)
    props = [qpix == 2, qpix == 3, box(16, 16, (2, 6), (2, 6)), box(16, 16, (10, 16), (10, 16)),
             box(16, 16, (0, 16), (0, 16))]
    q = view(F.one_hot(ql, 4).permute(2, 0, 1).float(), props, scores=[1, 1, 1, 1, 0.3])
    sups = []
    for s in range(shots):
        sl = torch.full((h, w), 2)
        sl[:, 6:] = 3
        sl[2 + s:6, 2:6 - s] = 1
        sups.append(view(F.one_hot(sl, 4).permute(2, 0, 1).float(), [up(sl) == 1], mask=up(sl) == 1))
    return q, sups, qpix == 1


@pytest.mark.parametrize("shots,prompt_masks", [(1, 1), (2, 1), (1, 3)])
def test_exact_proposals_and_one_hot_features_give_iou_100(shots, prompt_masks):
    q, sups, gt = _scene(shots)
    sel = GFSAM(prompt_masks=prompt_masks).select(q, sups)
    fg = sel.foreground.bool()
    assert int((fg & gt).sum()) == int((fg | gt).sum()) == int(gt.sum())
    assert not sel.fallback and sel.foreground.dtype == torch.float32
    # one cluster per square; with 3 masks per point the coarse whole-image proposal joins them
    # into one cluster (mask growth still rejects that proposal)
    assert len(set(sel.point_cluster.tolist())) == (2 if prompt_masks == 1 else 1)
    assert int(sel.kept.sum()) == 2


def test_matching_is_symmetric():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(5, 12, generator=g), torch.randn(5, 9, generator=g)
    torch.testing.assert_close(correlation(a, b), correlation(b, a).T)  # Eq. 1 is symmetric
    ma, mb = (torch.rand(12, generator=g) < 0.5).double(), (torch.rand(9, generator=g) < 0.5).double()
    ab = align(a, [(b, mb, 1 - mb)])
    ba = align(b, [(a, ma, 1 - ma)])
    c = correlation(a, b)  # [12,9]; swapping roles reads the same matrix by columns
    for i in range(12):
        assert math.isclose(ab.pos_max[i], max(c[i, j] * mb[j] for j in range(9)), abs_tol=1e-12)
        assert math.isclose(ab.pos_mean[i], sum(c[i, j] * mb[j] for j in range(9)) / mb.sum(), abs_tol=1e-12)
    for j in range(9):
        assert math.isclose(ba.pos_max[j], max(c[i, j] * ma[i] for i in range(12)), abs_tol=1e-12)
        assert math.isclose(ba.neg_mean[j], sum(c[i, j] * (1 - ma[i]) for i in range(12)) / (1 - ma).sum(),
                            abs_tol=1e-12)
    # mirroring the query mirrors the point map and the selection
    q, sups, gt = _scene()
    qm = View(image=q.image.flip(-1), proposals=q.proposals.flip(-1), scores=q.scores,
              features={"res4": q.features["res4"].flip(-1)})
    al = align(q.features["res4"].reshape(4, -1), [(sups[0].features["res4"].reshape(4, -1),
                                                    sups[0].mask[::2, ::2].reshape(-1).double(),
                                                    (~sups[0].mask[::2, ::2]).reshape(-1).double())])
    alm = align(qm.features["res4"].reshape(4, -1), [(sups[0].features["res4"].reshape(4, -1),
                                                      sups[0].mask[::2, ::2].reshape(-1).double(),
                                                      (~sups[0].mask[::2, ::2]).reshape(-1).double())])
    torch.testing.assert_close(point_map(alm).reshape(8, 8), point_map(al).reshape(8, 8).flip(-1))
    torch.testing.assert_close(GFSAM().predict(qm, sups), GFSAM().predict(q, sups).flip(-1))


def test_prompt_ranks_containing_proposals_by_confidence():
    # one foreground cell (2,1) -> one point; proposals' probabilities there .9 .6 .4 .8, scores .5 1 1 .9
    # -> confidence .45 .6 (not containing) .72: ranking 3, 1, 0
    f = [[E2] * 4 for _ in range(4)]
    f[2][1] = E1
    probs = []
    for p in (0.9, 0.6, 0.4, 0.8):
        m = torch.full((4, 4), 0.1)
        m[2, 1] = p
        probs.append(m)
    sup = view(feats([[E1, E2], [E2, E2]]), [torch.zeros(2, 2)], mask=torch.tensor([[1, 0], [0, 0]]).bool())
    q = view(feats(f), probs, scores=[0.5, 1.0, 1.0, 0.9])
    for k, want in ((1, [3]), (2, [1, 3]), (4, [0, 1, 3])):
        sel = GFSAM(prompt_masks=k).select(q, [sup])
        assert sel.cells.tolist() == [9] and sel.pixels.tolist() == [[2, 1]]
        assert sorted(sel.masks.tolist()) == want


def _ablation_scene():
    """8x8 px = 8x8 cells. O (true object, e1) rows 0-2 cols 0-2; X (1,3): an overshooting point
    (e1) whose proposal X+R also covers R (rows 0-2, cols 4-5, features r: positive polarity but
    no points); D (6,6),(6,7): a distractor (d ~ e1) far away whose proposal covers 10 background
    cells; support: e1 square rows 0-3 cols 0-3 on e2."""
    a, b = 0.7, math.sqrt(1 - 0.49)
    r, d = (a, b, 0.0, 0.0), (0.9, 0.1, 0.0, 0.0)
    grid = [[E2] * 8 for _ in range(8)]
    for y in range(3):
        for x in range(3):
            grid[y][x] = E1
        grid[y][4] = grid[y][5] = r
    grid[1][3] = E1
    grid[6][6] = grid[6][7] = d
    o = box(8, 8, (0, 3), (0, 3))
    xr = box(8, 8, (0, 3), (4, 6))
    xr[1, 3] = True
    md = box(8, 8, (6, 8), (2, 8))
    rest = ~(o | xr | md)
    q = view(feats(grid), [o, xr, md, rest], scores=[1, 1, 1, 0.5])
    sgrid = [[E1 if (y < 4 and x < 4) else E2 for x in range(8)] for y in range(8)]
    sup = view(feats(sgrid), [torch.zeros(8, 8)], mask=box(8, 8, (0, 4), (0, 4)))
    return q, sup, o, xr, md


def test_ablation_switches_change_the_selection():
    q, sup, o, xr, md = _ablation_scene()
    out = {}
    for pg in (False, True):
        for og in (False, True):
            out[pg, og] = GFSAM(positive_gating=pg, overshoot_gating=og).predict(q, [sup]).bool()
    assert torch.equal(out[True, True], o)  # both gates: the object only
    assert torch.equal(out[True, False], o | xr)  # positive gating alone keeps the overshoot X+R
    assert torch.equal(out[False, True], o | md)  # overshooting gating alone keeps the distractor
    assert torch.equal(out[False, False], o | xr | md)


def test_fallback_when_nothing_survives():
    q, sup, o, xr, md = _ablation_scene()
    only_d = View(image=q.image, proposals=q.proposals[2:], scores=q.scores[2:],
                  features={"res4": torch.where(o | xr, 0.0, 1.0) * q.features["res4"]
                            + torch.where(o | xr, 1.0, 0.0) * torch.tensor(E2)[:, None, None]})
    sel = GFSAM().select(only_d, [sup])
    # the distractor's mask fails positive gating, passes self-consistency: the fallback keeps it
    assert sel.fallback and sel.positive.tolist() == [False] and sel.consistent.all()
    assert torch.equal(sel.foreground.bool(), md)


def test_empty_results_and_bad_input():
    q, sups, _ = _scene()
    empty_support = sups[0].with_mask(torch.zeros(16, 16, dtype=torch.bool))
    assert GFSAM().predict(q, [empty_support]).sum() == 0
    no_props = View(image=q.image, proposals=torch.zeros(0, 16, 16), scores=torch.zeros(0), features=q.features)
    assert GFSAM().predict(no_props, sups).sum() == 0
    with pytest.raises(KeyError, match="FEWSHOT.GFSAM.FEATURE 'res3'"):
        GFSAM(feature="res3").predict(q, sups)
    with pytest.raises(ValueError, match="MAX_POINTS"):
        GFSAM(max_points=0)
    with pytest.raises(ValueError, match="CONNECTION"):
        GFSAM(connection="both")
    with pytest.raises(ValueError, match="no mask"):
        GFSAM().predict(q, [q])


def test_builder_reads_the_config():
    from simformer.config import get_cfg

    cfg = get_cfg()
    assert FEWSHOT_METHOD_REGISTRY["gfsam"] is build_gfsam
    m = build_gfsam(cfg)
    assert (m.feature, m.max_points, m.prompt_masks, m.connection) == ("res4", 128, 1, "weak")
    assert m.positive_gating and m.overshoot_gating
    cfg.defrost()
    cfg.FEWSHOT.GFSAM.MAX_POINTS = 7
    m = build_gfsam(cfg, overshoot_gating=False, shots=5)  # unknown keywords are other methods'
    assert m.max_points == 7 and not m.overshoot_gating


# ------------------------------------------------------------------------------------------------
# pseudo-label refinement
class _Fixed:
    """A stand-in method: the selection is looked up by the support's class mask size."""

    def __init__(self, by_size):
        self.by_size = by_size

    def predict(self, query, supports):
        return self.by_size[int(supports[0].mask.sum())].float()


def test_refine_rules_by_hand():
    # classes 0,1 base; 2,3,4 novel; image labels {0, 2, 3, 4}; no reference for class 4
    mixed = np.array([[0, 0, 2, 2, 255],
                      [0, 3, 3, 2, 255],
                      [255, 255, 4, 4, 255]], np.uint8)
    s2 = torch.tensor([[1, 1, 1, 0, 0], [0, 1, 1, 0, 0], [0, 1, 1, 0, 0]]).bool()  # class 2 selection
    s3 = torch.tensor([[0, 0, 0, 1, 1], [0, 1, 0, 0, 0], [0, 0, 0, 0, 1]]).bool()  # class 3 selection
    q = view(torch.zeros(1, 3, 5), [torch.zeros(3, 5)])
    ref2 = np.zeros((3, 5), np.uint8)
    ref2[0, :2] = 2  # 2 pixels of class 2
    ref3 = np.full((3, 5), 255, np.uint8)
    ref3[1, :3] = 3  # 3 pixels of class 3
    refs = {2: (q, ref2), 3: (q, ref3)}
    out = refine_pseudo_label(mixed, np.array([1, 0, 1, 1, 1], bool), [2, 3, 4], q, refs, _Fixed({2: s2, 3: s3}))
    # base 0 never changes; class 4 (no reference) keeps its region; old 2/3 regions and 255 are free:
    # (0,2),(0,3)... : (0,2) s2 -> 2; (0,3) s3 only -> 3; (0,4) s3 -> 3; (1,1) s2+s3, old 3 -> 3;
    # (1,2) s2 -> 2; (1,3) old 2, unselected -> 255; (2,1) s2 -> 2; (2,2) class 4 kept; (2,4) s3 -> 3
    want = np.array([[0, 0, 2, 3, 3],
                     [0, 3, 2, 255, 255],
                     [255, 2, 4, 4, 3]], np.uint8)
    np.testing.assert_array_equal(out, want)
    # too small a reference region, or an empty selection: the class keeps its region
    kept = refine_pseudo_label(mixed, np.array([1, 0, 1, 0, 1], bool), [2, 3, 4], q, refs,
                               _Fixed({2: torch.zeros(3, 5).bool()}))
    np.testing.assert_array_equal(kept, mixed)
    small = refine_pseudo_label(mixed, np.array([1, 0, 1, 0, 1], bool), [2, 3, 4], q, refs,
                                _Fixed({2: s2}), min_pixels=3)
    np.testing.assert_array_equal(small, mixed)


def test_refine_with_gfsam_recovers_the_object():
    # query: novel class 2 object rows 2-5 cols 2-5 (features e3) on base class 0 (e1) / unknown (e2)
    e3 = (0.0, 0.0, 1.0, 0.0)
    grid = [[E1 if y < 2 else E2 for x in range(8)] for y in range(8)]
    for y in range(2, 6):
        for x in range(2, 6):
            grid[y][x] = e3
    obj = box(8, 8, (2, 6), (2, 6))
    q = view(feats(grid), [obj, box(8, 8, (0, 2), (0, 8)), ~obj & ~box(8, 8, (0, 2), (0, 8))])
    mixed = np.full((8, 8), 255, np.uint8)
    mixed[:2] = 0  # base GT
    mixed[2:4, 2:4] = 2  # under-segmented novel prediction
    mixed[7, 7] = 2  # and a spurious pixel
    # reference: its own pseudo label of class 2 (rows 4-7, cols 0-3) on base 1 (e1) and unknown
    rgrid = [[E1] * 8 for _ in range(8)]
    ref_label = np.ones((8, 8), np.uint8)
    ref_label[4:, 4:] = 255
    for y in range(4, 8):
        for x in range(4):
            rgrid[y][x] = e3
            ref_label[y, x] = 2
    ref = view(feats(rgrid), [torch.zeros(8, 8)])
    out = refine_pseudo_label(mixed, np.array([1, 0, 1], bool), [2], q, {2: (ref, ref_label)}, GFSAM())
    want = np.full((8, 8), 255, np.uint8)
    want[:2] = 0
    want[2:6, 2:6] = 2
    np.testing.assert_array_equal(out, want)


def test_pick_reference_prefers_deconfounded():
    # classes: 0 base, 1..3 novel; image 0 has {1, 2}
    presence = np.array([[1, 1, 1, 0], [0, 1, 1, 0], [1, 1, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0]], bool)
    novel = np.array([0, 1, 1, 1], bool)
    usable = presence[:, 1].copy()  # images whose pseudo label has class 1
    rng = np.random.default_rng(0)
    # class 1: images 2, 3 share exactly {1} with image 0 (image 1 shares {1, 2}): never image 1
    assert {pick_reference(0, 1, presence, novel, usable, rng) for _ in range(30)} == {2, 3}
    only_confounded = np.array([0, 1, 0, 0, 0], bool)
    assert pick_reference(0, 1, presence, novel, only_confounded, rng) == 1
    assert pick_reference(0, 1, presence, novel, np.array([1, 0, 0, 0, 0], bool), rng) is None


class _OracleSource:
    """A ProposalSource for the wiring test: knows each image's GT (by its pixels) and returns one
    proposal per GT class region, with one-hot GT features at stride 4."""

    def __init__(self, records, k):
        from simformer.utils.io import read_image, read_label

        self.k = k
        self.gt = {read_image(r["file_name"]).tobytes(): read_label(r["sem_seg_file_name"]) for r in records}

    def __call__(self, image):
        lab = torch.from_numpy(self.gt[image.permute(1, 2, 0).to(torch.uint8).numpy().tobytes()].astype(np.int64))
        ids = torch.unique(lab[lab < self.k])
        props = (lab[None] == ids[:, None, None]).float()
        onehot = F.one_hot(lab.clamp(max=self.k), self.k + 1).permute(2, 0, 1).float()[None]
        return View(image=image, proposals=props, scores=torch.ones(len(ids)),
                    features={"res4": F.avg_pool2d(onehot, 4)[0]})


def test_refine_pass_over_a_dataset(toy_env, tmp_path):
    import os

    from simformer.data.catalog import get_dataset_dicts
    from simformer.data.presence import presence_matrix
    from simformer.evaluation.sem_seg import SemSegEvaluator
    from simformer.retrain.pseudo_label import mixed_label
    from simformer.retrain.refine import refine_pseudo_labels
    from simformer.utils.io import read_label, save_label_png

    records = get_dataset_dicts("toyscenes_train")
    presence = presence_matrix("toyscenes_train")
    k = presence.shape[1]
    novel = np.zeros(k, bool)
    novel[np.argsort(-presence.sum(0), kind="stable")[:4]] = True  # the 4 most frequent classes
    mixed_dir, out_dir = tmp_path / "mixed", tmp_path / "out"
    os.makedirs(mixed_dir)
    os.makedirs(out_dir)
    mixed = {}
    for i, r in enumerate(records):  # predictions = GT shifted by 3 px: imperfect novel regions
        gt = read_label(r["sem_seg_file_name"])
        mixed[r["image_id"]] = mixed_label(np.roll(gt, 3, axis=1), gt, presence[i], novel)
        save_label_png(str(mixed_dir / f"{r['image_id']}.png"), mixed[r["image_id"]])
    names = [f"c{i}" for i in range(k)]

    def run():
        metric = SemSegEvaluator(class_names=names, novel_mask=novel)
        counts = refine_pseudo_labels(records, presence, novel, str(mixed_dir), str(out_dir),
                                      _OracleSource(records, k), GFSAM(), metric, seed=1, min_pixels=4)
        return metric.evaluate(), counts

    before = SemSegEvaluator(class_names=names, novel_mask=novel)
    for r in records:
        before.process(mixed[r["image_id"]], read_label(r["sem_seg_file_name"]))
    quality, counts = run()
    assert counts["written"] == len(records) and counts["refined_images"] > 0
    # oracle proposals and features: every novel region is recovered exactly (75.1 before)
    assert before.evaluate()["novel_miou"] < 80 and quality["novel_miou"] == pytest.approx(100.0)
    for r in records:  # base GT pixels are never touched
        out = read_label(str(out_dir / f"{r['image_id']}.png"))
        m = mixed[r["image_id"]]
        base = (m != 255) & ~novel[np.minimum(m, k - 1)]
        np.testing.assert_array_equal(out[base], m[base])
    again, counts2 = run()  # existing labels are kept and only scored
    assert counts2["skipped"] == len(records) and again["novel_miou"] == quality["novel_miou"]


def test_pseudo_label_refine_gfsam_wiring(toy_env, tmp_path, monkeypatch):
    import json
    import os
    import sys
    import types

    from tiny_config import TINY

    from simformer.config import load_cfg
    from simformer.data.catalog import get_dataset, get_dataset_dicts
    from simformer.data.class_split import resolve_split
    from simformer.modeling.meta_arch import build_model
    from simformer.retrain.pseudo_label import generate_pseudo_labels

    config = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "toyscenes", "simformer.yaml")
    cfg = load_cfg(config, TINY + ["MODEL.BACKBONE.WEIGHTS", ""])
    split = resolve_split(cfg, "toyscenes_train")
    k = get_dataset("toyscenes_train").num_classes
    model = build_model(cfg, k, split)
    records = get_dataset_dicts("toyscenes_train")
    fake = types.ModuleType("simformer.fewshot.proposals")  # the model's proposals are not needed here
    fake.ModelProposalSource = lambda m: _OracleSource(records, k)
    monkeypatch.setitem(sys.modules, "simformer.fewshot.proposals", fake)
    out = str(tmp_path / "pseudo")
    report = generate_pseudo_labels(model, cfg, split, out, refine="gfsam")
    assert report["refine"] == "gfsam" and report["refine_counts"]["written"] == len(records)
    assert set(report["quality_unrefined"]) == set(report["quality"])
    for r in records:
        assert os.path.isfile(os.path.join(out, "mixed", f"{r['image_id']}.png"))
        assert os.path.isfile(os.path.join(out, f"{r['image_id']}.png"))
    assert json.load(open(os.path.join(out, "pseudo_labels.json")))["quality"] == report["quality"]
    with pytest.raises(ValueError, match="'none' or 'gfsam'"):
        generate_pseudo_labels(model, cfg, split, out, refine="sam")
