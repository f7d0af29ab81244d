"""The meta-architecture: targets from a batch, pairs, and test-time augmentation wiring."""
import os

import torch
from tiny_config import TINY

from simformer.config import load_cfg
from simformer.data.class_split import make_split
from simformer.modeling.meta_arch import build_model
from simformer.modeling.simformer import SimFormer

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "toyscenes", "simformer.yaml")
NAMES = [f"c{i}" for i in range(6)]


def tiny_model(*extra):
    cfg = load_cfg(CONFIG, TINY + ["MODEL.BACKBONE.WEIGHTS", ""] + list(extra))
    return build_model(cfg, 6, make_split("toy", NAMES, [4, 5])), cfg


def sample(sem, labels, role=None):
    h, w = sem.shape
    s = {"image": torch.rand(3, h, w) * 255, "sem_seg": sem, "sem_seg_full": sem, "valid": torch.ones(h, w, dtype=torch.bool),
         "image_labels": torch.tensor([i in labels for i in range(6)]), "height": h, "width": w}
    if role:
        s["pair_role"] = role
    return s


def test_targets_base_masks_then_maskless_novel():
    model, _ = tiny_model()
    sem = torch.full((8, 8), 255, dtype=torch.long)
    sem[:4] = 1
    sem[4:, :4] = 3
    # image-level labels: base 1, 3, novel 4; class 0 (base) listed but absent from the crop, 5 absent
    t = model.prepare_targets([sample(sem, {0, 1, 3, 4})], (16, 16))[0]
    assert t["labels"].tolist() == [1, 3, 4]
    assert t["has_mask"].tolist() == [True, True, False]
    assert t["masks"].shape == (3, 16, 16)
    assert torch.equal(t["masks"][0, :8, :8], (sem == 1).float()) and t["masks"][:, 8:].sum() == 0
    assert t["masks"][2].sum() == 0
    assert t["valid"][:8, :8].all() and not t["valid"][8:].any()  # padding is invalid


def test_oracle_mode_gives_novel_masks():
    model, _ = tiny_model("WEAKSHOT.NOVEL_MASKS", "True", "WEAKSHOT.PAIR_MODE", "none",
                          "WEAKSHOT.SIMNET.ENABLED", "False", "WEAKSHOT.DISTILL.ENABLED", "False")
    sem = torch.zeros(8, 8, dtype=torch.long)
    sem[:, 4:] = 4
    t = model.prepare_targets([sample(sem, {0, 4})], (8, 8))[0]
    assert t["labels"].tolist() == [0, 4] and t["has_mask"].all()


def test_pairs_from_roles():
    sem = torch.zeros(8, 8, dtype=torch.long)
    batch = [sample(sem, {0}, r) for r in ("anchor", "reference", "anchor", "reference")]
    assert SimFormer.pair_indices(batch).tolist() == [[0, 1], [2, 3]]
    assert SimFormer.pair_indices([sample(sem, {0})]) is None


def test_single_scale_tta_equals_plain_inference():
    torch.manual_seed(0)
    model, cfg = tiny_model()
    model.eval()
    x = sample(torch.zeros(64, 48, dtype=torch.long), {0})
    x["height"], x["width"] = 64, 48
    plain = model([x])[0]["sem_seg"]
    model.tta = {"min_sizes": [48], "max_size": 1000, "flip": False}
    tta = model([x])[0]["sem_seg"]
    torch.testing.assert_close(tta, plain, rtol=1e-4, atol=1e-5)
    assert plain.shape == (6, 64, 48)
    # flip averages the mirrored prediction flipped back
    x_flip = dict(x, image=x["image"].flip(-1))
    model.tta = None
    mirrored = model([x_flip])[0]["sem_seg"].flip(-1)
    model.tta = {"min_sizes": [48], "max_size": 1000, "flip": True}
    torch.testing.assert_close(model([x])[0]["sem_seg"], (plain + mirrored) / 2, rtol=1e-4, atol=1e-5)


def test_predict_probs_upsamples_mask_logits_before_the_sigmoid():
    """MaskFormer's order: bilinear upsampling of the stride-4 mask logits, then sigmoid and the
    class-weighted sum -- checked against an explicit per-query sum, and against the other order
    (which differs on a sharp mask edge)."""
    import torch.nn.functional as F

    torch.manual_seed(1)
    model, _ = tiny_model()
    model.eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = model.forward_features(images)
    logits, masks = out["pred_logits"][0], out["pred_masks"][0]  # [Q,K+1], [Q,16,16]
    up = F.interpolate(masks[None], size=(64, 64), mode="bilinear", align_corners=False)[0]
    cls = logits.softmax(-1)[:, :-1]
    expected = torch.zeros(6, 64, 64)
    for q in range(cls.shape[0]):
        expected += cls[q][:, None, None] * up[q].sigmoid()[None]
    torch.testing.assert_close(model.predict_probs(images)[0], expected, rtol=1e-4, atol=1e-5)
    # the two orders differ where a logit map has a sharp edge
    sharp = torch.full((1, 1, 4, 4), -8.0)
    sharp[..., 2:] = 8.0
    a = F.interpolate(sharp, size=(16, 16), mode="bilinear", align_corners=False).sigmoid()
    b = F.interpolate(sharp.sigmoid(), size=(16, 16), mode="bilinear", align_corners=False)
    assert (a - b).abs().max() > 0.1


def test_transformer_in_feature_selects_the_cross_attention_map():
    """res5 (MaskFormer's default), a finer backbone map, or the mask features themselves."""
    import pytest

    images = torch.randn(1, 3, 64, 64)
    feats = None
    for name in ("res5", "res3", "pixel_embedding"):
        torch.manual_seed(2)
        model, _ = tiny_model("MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE", name)
        model.eval()
        with torch.no_grad():
            feats = model.backbone(images)
            mask_features, src = model.pixel_decoder(feats)
        expected = mask_features if name == "pixel_embedding" else feats[name]
        assert src is expected
        assert model.predictor.input_proj.in_channels == expected.shape[1]
    with pytest.raises(ValueError, match="TRANSFORMER_IN_FEATURE"):
        tiny_model("MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE", "res6")
