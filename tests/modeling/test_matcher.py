import itertools
import math

import torch

from simformer.modeling.matcher import HungarianMatcher


def _focal_pair(logits, target, alpha=0.25, gamma=2.0):
    """Independent per-pixel focal loss, averaged over pixels (python floats)."""
    total = 0.0
    for x, t in zip(logits.tolist(), target.tolist()):
        p = 1 / (1 + math.exp(-x))
        if t == 1:
            total += -alpha * (1 - p) ** gamma * math.log(p)
        else:
            total += -(1 - alpha) * p**gamma * math.log(1 - p)
    return total / len(logits)


def _dice_pair(logits, target):
    p = torch.sigmoid(logits)
    return 1 - (2 * float((p * target).sum()) + 1) / (float(p.sum()) + float(target.sum()) + 1)


def _brute_cost(outputs, target, b, w_cls, w_mask, w_dice):
    prob = outputs["pred_logits"][b].softmax(-1)
    pred = outputs["pred_masks"][b]
    h, w = pred.shape[-2:]
    H, W = target["masks"].shape[-2:]
    sy, sx = H // h, W // w
    Q, T = pred.shape[0], target["labels"].numel()
    cost = torch.zeros(Q, T, dtype=torch.float64)
    for q in range(Q):
        for t in range(T):
            c = -w_cls * float(prob[q, target["labels"][t]])
            if target["has_mask"][t]:
                tgt = target["masks"][t][::sy, ::sx].flatten()  # nearest downsampling
                c += w_mask * _focal_pair(pred[q].flatten(), tgt) + w_dice * _dice_pair(pred[q].flatten(), tgt)
            cost[q, t] = c
    return cost


def _random_case(seed, B=2, Q=5, T=3, K=4, h=3, w=4, scale=2):
    g = torch.Generator().manual_seed(seed)
    outputs = {
        "pred_logits": torch.randn(B, Q, K + 1, generator=g) * 2,
        "pred_masks": torch.randn(B, Q, h, w, generator=g) * 2,
    }
    targets = []
    for _ in range(B):
        labels = torch.randint(0, K, (T,), generator=g)
        has_mask = torch.tensor([True] * (T - 1) + [False])
        masks = (torch.rand(T, h * scale, w * scale, generator=g) > 0.5).float()
        masks[~has_mask] = 0
        targets.append({"labels": labels, "has_mask": has_mask, "masks": masks})
    return outputs, targets


def test_matcher_equals_brute_force_assignment():
    for seed in range(4):
        outputs, targets = _random_case(seed)
        matcher = HungarianMatcher(cost_class=1.0, cost_mask=20.0, cost_dice=1.0)
        result = matcher(outputs, targets)
        costs = matcher.cost_matrices(outputs, targets)
        for b, (qi, ti) in enumerate(result):
            brute = _brute_cost(outputs, targets[b], b, 1.0, 20.0, 1.0)
            assert torch.allclose(costs[b].double(), brute, atol=1e-5)
            Q, T = brute.shape
            best, best_perm = float("inf"), None
            for perm in itertools.permutations(range(Q), T):
                c = sum(float(brute[perm[t], t]) for t in range(T))
                if c < best:
                    best, best_perm = c, perm
            got = {int(t): int(q) for q, t in zip(qi, ti)}
            assert len(got) == T
            assert [got[t] for t in range(T)] == list(best_perm)
            assert qi.dtype == torch.long and ti.dtype == torch.long


def test_maskless_columns_have_class_cost_only():
    outputs, targets = _random_case(7)
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=20.0, cost_dice=1.0)
    costs = matcher.cost_matrices(outputs, targets)
    prob = outputs["pred_logits"].softmax(-1)
    for b in range(2):
        novel = int(torch.nonzero(~targets[b]["has_mask"])[0])
        expected = -2.0 * prob[b][:, targets[b]["labels"][novel]]
        assert torch.allclose(costs[b][:, novel], expected, atol=1e-6)
    # changing the mask predictions changes mask columns but not the mask-less column
    outputs2 = dict(outputs, pred_masks=torch.randn_like(outputs["pred_masks"]) * 3)
    costs2 = matcher.cost_matrices(outputs2, targets)
    for b in range(2):
        hm = targets[b]["has_mask"]
        assert torch.equal(costs[b][:, ~hm], costs2[b][:, ~hm])
        assert not torch.allclose(costs[b][:, hm], costs2[b][:, hm])


def test_no_targets_and_more_targets_than_queries():
    outputs, targets = _random_case(3, Q=2, T=3)
    empty = {"labels": torch.zeros(0, dtype=torch.long), "has_mask": torch.zeros(0, dtype=torch.bool),
             "masks": torch.zeros(0, 6, 8)}
    res = HungarianMatcher()(outputs, [targets[0], empty])
    assert res[1][0].numel() == 0 and res[1][1].numel() == 0
    assert res[0][0].numel() == 2  # min(Q, T)
    assert len(set(res[0][1].tolist())) == 2


def test_default_has_mask_is_all_true():
    outputs, targets = _random_case(5)
    for t in targets:
        t["has_mask"] = torch.ones_like(t["has_mask"])
    m = HungarianMatcher()
    with_flag = m.cost_matrices(outputs, targets)
    for t in targets:
        del t["has_mask"]
    without = m.cost_matrices(outputs, targets)
    for a, b in zip(with_flag, without):
        assert torch.equal(a, b)
