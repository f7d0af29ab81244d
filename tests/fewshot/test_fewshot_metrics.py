"""FewShotEvaluator: a hand-worked case and a pixel-by-pixel brute force, both conventions."""
import numpy as np
import pytest
import torch

from simformer.fewshot.metrics import FewShotEvaluator, episode_counts


def t(rows):
    return torch.tensor(rows, dtype=torch.bool)


def test_hand_worked_two_episodes():
    # episode A, class 3: fg I = 1, U = 3; bg I = 3, U = 5
    gt_a, pred_a = t([[1, 1, 0], [0, 0, 0]]), t([[1, 0, 0], [1, 0, 0]])
    # episode B, class 3, pixel (1,2) void: fg I = 4, U = 5; bg I = 0, U = 1
    gt_b, pred_b = t([[1, 1, 1], [1, 0, 0]]), t([[1, 1, 1], [1, 1, 1]])
    valid_b = t([[1, 1, 1], [1, 1, 0]])
    assert episode_counts(pred_a, gt_a).tolist() == [1, 3, 3, 5]
    assert episode_counts(pred_b, gt_b, valid_b).tolist() == [4, 5, 0, 1]

    ev = FewShotEvaluator([3, 5], class_names=[f"c{i}" for i in range(6)])
    ev.process(3, pred_a, gt_a)
    ev.process(3, pred_b, gt_b, valid_b)
    r = ev.evaluate()
    assert r["miou"] == pytest.approx(100 * 5 / 8)                  # (1 + 4) / (3 + 5); class 5 had no episode
    assert r["fbiou"] == pytest.approx(100 * (5 / 8 + 3 / 6) / 2)   # fg 5/8, bg (3 + 0) / (5 + 1)
    assert r["n_episodes"] == 2 and r["classes_without_episodes"] == [5]
    assert r["per_class"][0] == {"class_id": 3, "class_name": "c3", "intersection": 5, "union": 8,
                                 "episodes": 2, "iou": pytest.approx(62.5)}
    assert r["per_class"][1]["iou"] is None

    ev = FewShotEvaluator([3, 5], per_episode=True)
    ev.process(3, pred_a, gt_a)
    ev.process(3, pred_b, gt_b, valid_b)
    r = ev.evaluate()
    assert r["miou"] == pytest.approx(100 * (1 / 3 + 4 / 5) / 2)
    assert r["fbiou"] == pytest.approx(100 * ((1 / 3 + 3 / 5) / 2 + (4 / 5 + 0 / 1) / 2) / 2)
    assert r["convention"] == "per-episode"


def brute_force(episodes, fold, per_episode):
    """Pixel-by-pixel loops over each episode."""
    inter, union, ious, fb = {c: 0 for c in fold}, {c: 0 for c in fold}, {c: [] for c in fold}, []
    bg_i = bg_u = 0
    for c, pred, gt, valid in episodes:
        fi = fu = bi = bu = 0
        for y in range(gt.shape[0]):
            for x in range(gt.shape[1]):
                if not valid[y, x]:
                    continue
                p, g = bool(pred[y, x]), bool(gt[y, x])
                fi += p and g
                fu += p or g
                bi += (not p) and (not g)
                bu += (not p) or (not g)
        inter[c] += fi
        union[c] += fu
        bg_i += bi
        bg_u += bu
        e_bg = bi / bu if bu else 1.0
        ious[c].append(fi / fu)
        fb.append((fi / fu + e_bg) / 2)
    seen = [c for c in fold if ious[c]]
    if per_episode:
        return 100 * np.mean([np.mean(ious[c]) for c in seen]), 100 * np.mean(fb)
    fg = sum(inter.values()) / sum(union.values())
    return 100 * np.mean([inter[c] / union[c] for c in seen]), 100 * (fg + bg_i / bg_u) / 2


@pytest.mark.parametrize("per_episode", [False, True])
def test_equals_brute_force(per_episode):
    g = torch.Generator().manual_seed(0)
    fold = [2, 7, 9]
    episodes = []
    for i in range(30):
        gt = torch.rand(8, 9, generator=g) < 0.4
        gt[0, 0] = True  # a query always holds the class
        pred = torch.rand(8, 9, generator=g) < 0.5
        valid = torch.rand(8, 9, generator=g) < 0.9
        valid[0, 0] = True
        episodes.append((fold[i % 3], pred, gt, valid))
    ev = FewShotEvaluator(fold, per_episode=per_episode)
    for c, pred, gt, valid in episodes:
        ev.process(c, pred, gt, valid)
    miou, fbiou = brute_force(episodes, fold, per_episode)
    r = ev.evaluate()
    assert r["miou"] == pytest.approx(miou) and r["fbiou"] == pytest.approx(fbiou)
    # batched counts give the same result as one episode at a time
    batch = FewShotEvaluator(fold, per_episode=per_episode)
    preds, gts, valids = (torch.stack([e[k] for e in episodes]) for k in (1, 2, 3))
    batch.process_counts([e[0] for e in episodes], episode_counts(preds, gts, valids))
    assert batch.evaluate()["miou"] == pytest.approx(miou)


def test_unknown_class_is_an_error():
    ev = FewShotEvaluator([1])
    with pytest.raises(ValueError, match="not in the fold"):
        ev.process(4, t([[1]]), t([[1]]))
