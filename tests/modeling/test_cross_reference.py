"""CRCNet's cross-reference module and co-occurrence head (modeling/cross_reference.py, docs/crcnet.md):
values against loops and hand-made cases, pair symmetry, the SimFormer wiring, and a learning test."""
import math
import os

import pytest
import torch
import torch.nn.functional as F
from test_simformer_model import CONFIG, sample, tiny_model

from simformer.config import load_cfg
from simformer.config.checks import ConfigCheckError
from simformer.modeling.cross_reference import (
    CrossReference,
    cooccurrence_loss,
    cooccurrence_targets,
    partner_index,
)

torch.set_num_threads(1)
ON = ["WEAKSHOT.CROSS_REFERENCE.ENABLED", "True", "WEAKSHOT.CROSS_REFERENCE.HEAD_CHANNELS", "16",
      "MODEL.MASK_FORMER.DROPOUT", "0.0"]


def _module(C=5, seed=0, **kw):
    torch.manual_seed(seed)
    return CrossReference(channels=C, head_channels=8, gn_groups=4, **kw)


# ------------------------------------------------------------------------------------ the module
def test_partner_index():
    assert partner_index(torch.tensor([[0, 1], [2, 3]]), 5).tolist() == [1, 0, 3, 2, 4]
    assert partner_index(torch.tensor([[3, 1]]), 4).tolist() == [0, 3, 2, 1]
    assert partner_index(torch.tensor([[2, 2]]), 3).tolist() == [0, 1, 2]  # a self pair
    assert partner_index(None, 3).tolist() == [0, 1, 2]
    assert partner_index(torch.zeros(0, 2, dtype=torch.long), 2).tolist() == [0, 1]
    with pytest.raises(ValueError, match="more than one pair"):
        partner_index(torch.tensor([[0, 1], [1, 2]]), 3)
    with pytest.raises(ValueError, match="outside the batch"):
        partner_index(torch.tensor([[0, 3]]), 3)


def test_module_equals_loops():
    """GAP, FC, sigmoid, product with the partner's vector, re-weighting: written out per pair,
    per channel and per pixel; image 4 is in no pair and is weighted by its own vector squared."""
    B, C, h, w = 5, 3, 2, 3
    xref = _module(C)
    x = torch.randn(B, C, h, w, dtype=torch.float64)
    xref = xref.double()
    pairs = torch.tensor([[0, 1], [3, 2]])
    out = xref(x, pairs)
    W, b = xref.fc.weight.detach(), xref.fc.bias.detach()

    def importance(i):
        gap = [sum(float(x[i, c, u, v]) for u in range(h) for v in range(w)) / (h * w) for c in range(C)]
        z = [float(b[o]) + sum(float(W[o, c]) * gap[c] for c in range(C)) for o in range(C)]
        return [1 / (1 + math.exp(-t)) for t in z]

    expected = torch.zeros_like(x)
    for a, r in [(0, 1), (3, 2), (4, 4)]:
        sa, sr = importance(a), importance(r)
        for c in range(C):
            for u in range(h):
                for v in range(w):
                    expected[a, c, u, v] = x[a, c, u, v] * sa[c] * sr[c]
                    expected[r, c, u, v] = x[r, c, u, v] * sa[c] * sr[c]
    torch.testing.assert_close(out.detach(), expected, rtol=1e-10, atol=1e-12)
    fused = xref.fused_importance(x, pairs).detach()
    assert torch.equal(fused[0], fused[1]) and torch.equal(fused[2], fused[3])
    assert ((fused > 0) & (fused < 1)).all()


def test_swapping_the_two_images_swaps_the_outputs():
    xref = _module(4)
    a, b, c = torch.randn(3, 1, 4, 3, 3)
    pairs = torch.tensor([[0, 1]])
    out = xref(torch.cat([a, b, c]), pairs)
    swapped = xref(torch.cat([b, a, c]), pairs)
    torch.testing.assert_close(swapped, out[[1, 0, 2]])
    head = xref.head(out)
    torch.testing.assert_close(xref.head(swapped), head[[1, 0, 2]])
    # (image, reference) order inside the pair does not matter either
    torch.testing.assert_close(xref(torch.cat([a, b, c]), torch.tensor([[1, 0]])), out)


def test_swap_through_the_whole_model():
    model, _ = tiny_model(*ON)
    model.train()
    torch.manual_seed(3)
    a, b = torch.randn(2, 1, 3, 64, 64)
    pairs = torch.tensor([[0, 1]])
    out = model.forward_features(torch.cat([a, b]), pairs)
    swapped = model.forward_features(torch.cat([b, a]), pairs)
    for key in ("pred_logits", "pred_masks", "mask_features", "cooc_logits"):
        torch.testing.assert_close(swapped[key], out[key][[1, 0]], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------ targets and loss
N = 255  # novel or void: unlabelled in the weak-shot targets


def test_cooccurrence_targets_by_hand():
    # image 0 (pair with 1): base 0, 1, 2 and novel/void pixels
    s0 = torch.tensor([[0, 0, 1, N],
                       [2, 2, 1, N],
                       [0, N, 1, 1]])
    # image 1: base 0 and 3 only
    s1 = torch.tensor([[3, 3, 3, 3],
                       [0, 0, N, 3],
                       [N, N, N, N]])
    # image 2 is in no pair (its own partner): every labelled pixel co-occurs
    s2 = torch.tensor([[4, 4, N, 5],
                       [4, N, N, 5],
                       [N, N, 5, 5]])
    sem = torch.stack([s0, s1, s2])
    valid = torch.ones_like(sem, dtype=torch.bool)
    valid[1, 0, 0] = False  # e.g. padding: not counted even though labelled
    target, counted = cooccurrence_targets(sem, partner_index(torch.tensor([[0, 1]]), 3), 6, valid=valid)
    exp_t = torch.tensor([
        [[1, 1, 0, 0],   # class 0 is in image 1; 1, 2 are not
         [0, 0, 0, 0],
         [1, 0, 0, 0]],
        [[0, 0, 0, 0],   # class 3 is not in image 0; class 0 is
         [1, 1, 0, 0],
         [0, 0, 0, 0]],
        [[1, 1, 0, 1],
         [1, 0, 0, 1],
         [0, 0, 1, 1]],
    ], dtype=torch.float32)
    exp_c = torch.tensor([
        [[1, 1, 1, 0],
         [1, 1, 1, 0],
         [1, 0, 1, 1]],
        [[0, 1, 1, 1],
         [1, 1, 0, 1],
         [0, 0, 0, 0]],
        [[1, 1, 0, 1],
         [1, 0, 0, 1],
         [0, 0, 1, 1]],
    ], dtype=torch.bool)
    assert torch.equal(target, exp_t)
    assert torch.equal(counted, exp_c)
    with pytest.raises(ValueError, match="labels must be 0..5"):
        cooccurrence_targets(torch.full((1, 2, 2), 7), torch.tensor([0]), 6)


def test_cooccurrence_targets_equal_loops():
    g = torch.Generator().manual_seed(4)
    K, B, H, W = 5, 6, 5, 7
    sem = torch.randint(0, K + 2, (B, H, W), generator=g)
    sem[sem >= K] = 255
    valid = torch.rand(B, H, W, generator=g) > 0.2
    pairs = torch.tensor([[0, 1], [2, 3], [5, 4]])
    target, counted = cooccurrence_targets(sem, partner_index(pairs, B), K, valid=valid)
    other = {0: 1, 1: 0, 2: 3, 3: 2, 4: 5, 5: 4}
    for i in range(B):
        labels_j = {int(v) for v, ok in zip(sem[other[i]].flatten(), valid[other[i]].flatten()) if ok and v != 255}
        for u in range(H):
            for v in range(W):
                lab = int(sem[i, u, v])
                c = bool(valid[i, u, v]) and lab != 255
                assert bool(counted[i, u, v]) == c
                assert float(target[i, u, v]) == float(c and lab in labels_j)


def test_bce_ignores_novel_and_void_pixels():
    """Hand case: 2 x 2 maps; only labelled pixels count, whatever the logits elsewhere."""
    sem = torch.tensor([[[0, N], [1, N]], [[0, 2], [N, N]]])
    partner = torch.tensor([1, 0])
    logits = torch.tensor([[[[2.0, 50.0], [-1.0, -50.0]]], [[[0.5, 3.0], [9.0, -9.0]]]])
    # counted: (0,0,0) t=1, (0,1,0) t=0, (1,0,0) t=1, (1,0,1) t=0
    bce = [-math.log(1 / (1 + math.exp(-2.0))), -math.log(1 - 1 / (1 + math.exp(1.0))),
           -math.log(1 / (1 + math.exp(-0.5))), -math.log(1 - 1 / (1 + math.exp(-3.0)))]
    loss = cooccurrence_loss(logits, sem, None, partner, 3)
    assert loss.item() == pytest.approx(sum(bce) / 4, rel=1e-6)
    changed = logits.clone()
    changed[0, 0, :, 1] = torch.tensor([-7.0, 7.0])  # the novel / void pixels only
    changed[1, 0, 1] = torch.tensor([4.0, 4.0])
    assert cooccurrence_loss(changed, sem, None, partner, 3).item() == pytest.approx(loss.item(), rel=1e-7)
    # nothing labelled: a zero connected to the logits
    empty = torch.full_like(sem, N)
    lg = logits.clone().requires_grad_(True)
    zero = cooccurrence_loss(lg, empty, None, partner, 3)
    zero.backward()
    assert zero.item() == 0.0 and lg.grad is not None


def test_loss_upsamples_coarse_logits_bilinearly():
    g = torch.Generator().manual_seed(5)
    sem = torch.randint(0, 3, (2, 8, 8), generator=g)
    sem[:, :2] = N
    logits = torch.randn(2, 1, 4, 4, generator=g)
    partner = torch.tensor([1, 0])
    up = F.interpolate(logits, size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
    target, counted = cooccurrence_targets(sem, partner, 3)
    p = up.sigmoid()
    manual = -(target * p.log() + (1 - target) * (1 - p).log())
    expected = manual[counted].mean()
    assert cooccurrence_loss(logits, sem, None, partner, 3).item() == pytest.approx(expected.item(), rel=1e-5)


# ------------------------------------------------------------------------------------ SimFormer wiring
def test_disabled_model_is_unchanged():
    torch.manual_seed(0)
    off, _ = tiny_model("MODEL.MASK_FORMER.DROPOUT", "0.0")
    torch.manual_seed(0)
    on, _ = tiny_model(*ON)
    keys_off, keys_on = set(off.state_dict()), set(on.state_dict())
    assert off.cross_reference is None and not any("cross_reference" in k for k in keys_off)
    assert keys_on - keys_off == {k for k in keys_on if k.startswith("cross_reference.")}
    assert keys_off <= keys_on
    for k, v in off.state_dict().items():  # built after the rest: the same initialisation
        assert torch.equal(v, on.state_dict()[k]), k
    assert "loss_cooc" not in off.criterion.weight_dict and on.criterion.weight_dict["loss_cooc"] == 0.1
    # off: the plain backbone -> pixel decoder -> predictor pipeline, pairs ignored
    off.train()
    x = torch.randn(2, 3, 64, 64)
    out = off.forward_features(x, torch.tensor([[0, 1]]))
    mf, tin = off.pixel_decoder(off.backbone(x))
    ref = off.predictor(tin, mf)
    for key in ("pred_logits", "pred_masks"):
        torch.testing.assert_close(out[key], ref[key])
    assert "cooc_logits" not in out


@pytest.mark.parametrize("in_feature, transformer_in", [("mask_features", "res5"), ("mask_features", "pixel_embedding"),
                                                        ("res3", "res5"), ("res5", "res5")])
def test_placement_in_the_pixel_decoder(in_feature, transformer_in):
    torch.manual_seed(2)
    model, _ = tiny_model(*ON, "WEAKSHOT.CROSS_REFERENCE.IN_FEATURE", in_feature,
                          "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE", transformer_in)
    model.train()
    x = torch.randn(4, 3, 64, 64)
    pairs = torch.tensor([[0, 1], [2, 3]])
    out = model.forward_features(x, pairs)
    xref = model.cross_reference
    feats = dict(model.backbone(x))
    if in_feature == "mask_features":
        mf, tin = model.pixel_decoder(feats)
        g = xref(mf, pairs)
        mf, tin = g, (g if transformer_in == "pixel_embedding" else tin)
    else:
        feats[in_feature] = g = xref(feats[in_feature], pairs)
        mf, tin = model.pixel_decoder(feats)
    ref = model.predictor(tin, mf)
    for key in ("pred_logits", "pred_masks"):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["cooc_logits"], xref.head(g), rtol=1e-5, atol=1e-6)
    assert out["cooc_logits"].shape == (4, 1) + g.shape[-2:]


def test_inference_pairs_each_image_with_itself():
    """Test images come alone: w = s**2; a batch predicts as its images one by one; no head output."""
    torch.manual_seed(5)
    model, _ = tiny_model(*ON)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model.forward_features(x)
        mf, tin = model.pixel_decoder(model.backbone(x))
        s = model.cross_reference.channel_importance(mf)
        ref = model.predictor(tin, mf * (s * s)[:, :, None, None])
        alone = torch.cat([model.predict_probs(x[i:i + 1]) for i in range(2)])
    assert "cooc_logits" not in out
    torch.testing.assert_close(out["pred_masks"], ref["pred_masks"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.predict_probs(x), alone, rtol=1e-5, atol=1e-6)


def test_training_step_adds_the_weighted_cooccurrence_loss():
    torch.manual_seed(6)
    model, _ = tiny_model(*ON, "WEAKSHOT.CROSS_REFERENCE.LOSS_WEIGHT", "0.25")
    model.train()
    s0 = torch.zeros(64, 64, dtype=torch.long)
    s0[:, 32:] = 1
    s1 = torch.full((64, 64), 2, dtype=torch.long)
    s1[:32] = 0
    batch = [sample(s0, {0, 1}, "anchor"), sample(s1, {0, 2}, "reference")]
    losses = model(batch)
    images = model.normalize(batch)
    pairs = model.pair_indices(batch)
    out = model.forward_features(images, pairs)
    sem = torch.stack([s0, s1])
    expected = cooccurrence_loss(out["cooc_logits"], sem, None, partner_index(pairs, 2), 6)
    assert losses["loss_cooc"].item() == pytest.approx(0.25 * expected.item(), rel=1e-5)


def test_config_rules_and_bad_keys():
    with pytest.raises(ConfigCheckError) as e:
        load_cfg(CONFIG, ["WEAKSHOT.CROSS_REFERENCE.ENABLED", "True", "WEAKSHOT.PAIR_MODE", "none",
                          "WEAKSHOT.SIMNET.ENABLED", "False", "WEAKSHOT.DISTILL.ENABLED", "False"])
    assert "WEAKSHOT.CROSS_REFERENCE.ENABLED" in str(e.value) and "WEAKSHOT.PAIR_MODE" in str(e.value)
    load_cfg(CONFIG, ["WEAKSHOT.CROSS_REFERENCE.ENABLED", "True", "WEAKSHOT.PAIR_MODE", "self"])
    with pytest.raises(ValueError, match="WEAKSHOT.CROSS_REFERENCE.IN_FEATURE"):
        tiny_model(*ON, "WEAKSHOT.CROSS_REFERENCE.IN_FEATURE", "res6")
    with pytest.raises(ValueError, match="HEAD_CHANNELS.*GN_GROUPS"):
        tiny_model(*ON, "WEAKSHOT.CROSS_REFERENCE.HEAD_CHANNELS", "12")


def test_shipped_configs_enable_the_module():
    root = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
    for rel in ("toyscenes/simformer_crossref.yaml", "coco_stuff_10k/simformer_crossref_R50.yaml",
                "ade20k/simformer_crossref_R50.yaml"):
        cfg = load_cfg(os.path.join(root, rel))
        assert cfg.WEAKSHOT.CROSS_REFERENCE.ENABLED and cfg.WEAKSHOT.PAIR_MODE == "cross", rel
        assert cfg.WEAKSHOT.CROSS_REFERENCE.LOSS_WEIGHT == 0.1, rel


# ------------------------------------------------------------------------------------ learning
def test_learns_partner_dependent_cooccurrence():
    """Image X (classes 0 | 1) appears twice, once paired with Y (0, 2) and once with Z (1, 2): its
    co-occurrence targets are opposite in the two pairs, so only the cross-reference re-weighting can
    fit both. A tiny SimFormer (all losses; random backbone, frozen for speed) overfits this batch
    (measured: BCE 0.72 -> 0.11 in 60 steps; 25-35 s on one thread of a busy 2-core machine)."""
    torch.manual_seed(0)
    model, _ = tiny_model(*ON, "WEAKSHOT.CROSS_REFERENCE.LOSS_WEIGHT", "1.0",
                          "WEAKSHOT.CROSS_REFERENCE.HEAD_CHANNELS", "32", "MODEL.BACKBONE.FREEZE_AT", "5")
    g = torch.Generator().manual_seed(0)
    colors = torch.tensor([[220.0, 40, 40], [40, 200, 60], [50, 60, 230]])
    S = 32

    def image(a, b, role):
        sem = torch.full((S, S), a, dtype=torch.long)
        sem[:, S // 2:] = b
        im = (colors[sem].permute(2, 0, 1) + 20 * torch.randn(3, S, S, generator=g)).clamp(0, 255)
        return {"image": im, "sem_seg": sem, "sem_seg_full": sem, "valid": torch.ones(S, S, dtype=torch.bool),
                "image_labels": torch.tensor([i in (a, b) for i in range(6)]), "height": S, "width": S,
                "pair_role": role}

    X = image(0, 1, "anchor")
    batch = [X, image(2, 0, "reference"), dict(X), image(1, 2, "reference")]
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    first = None
    for _ in range(60):
        losses = model(batch)
        first = losses["loss_cooc"].item() if first is None else first
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    with torch.no_grad():
        images, pairs = model.normalize(batch), model.pair_indices(batch)
        out = model.forward_features(images, pairs)
        logits = F.interpolate(out["cooc_logits"], size=(S, S), mode="bilinear", align_corners=False)[:, 0]
        target, _ = cooccurrence_targets(torch.stack([b["sem_seg"] for b in batch]), partner_index(pairs, 4), 6)
        loss = cooccurrence_loss(out["cooc_logits"], torch.stack([b["sem_seg"] for b in batch]), None,
                                 partner_index(pairs, 4), 6).item()
    acc = ((logits > 0).float() == target).float().mean((1, 2))
    assert first > 0.6 and loss < 0.25, (first, loss)
    assert (acc >= 0.95).all(), acc.tolist()
    # X's left half (class 0) is "shared" next to Y and "not shared" next to Z
    assert logits[0, :, : S // 2].mean() > 0 > logits[2, :, : S // 2].mean()
