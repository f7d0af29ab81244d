"""Sine encoding, DETR decoder layer and MaskFormer predictor against hand computations."""
import math

import pytest
import torch

from simformer.config import get_cfg
from simformer.modeling.position_encoding import PositionEmbeddingSine
from simformer.modeling.transformer_decoder import (
    DecoderLayer,
    TransformerPredictor,
    build_transformer_predictor,
)

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- sine encoding
def loop_sine(mask, num_feats, temperature, normalize, scale):
    b, h, w = mask.shape
    out = torch.zeros(b, 2 * num_feats, h, w, dtype=torch.float64)
    for bi in range(b):
        for y in range(h):
            for x in range(w):
                cy = sum(1 for yy in range(y + 1) if not mask[bi, yy, x])
                cx = sum(1 for xx in range(x + 1) if not mask[bi, y, xx])
                if normalize:
                    ny = sum(1 for yy in range(h) if not mask[bi, yy, x])
                    nx = sum(1 for xx in range(w) if not mask[bi, y, xx])
                    cy = cy / (ny + 1e-6) * scale
                    cx = cx / (nx + 1e-6) * scale
                for i in range(num_feats):
                    d = temperature ** (2 * (i // 2) / num_feats)
                    f = math.sin if i % 2 == 0 else math.cos
                    out[bi, i, y, x] = f(cy / d)
                    out[bi, num_feats + i, y, x] = f(cx / d)
    return out.float()


@pytest.mark.parametrize("num_feats,normalize", [(6, True), (5, True), (4, False)])
def test_sine_encoding_matches_formula_loop(num_feats, normalize):
    mask = torch.zeros(2, 4, 5, dtype=torch.bool)
    mask[1, 3:, :] = True  # bottom padding
    mask[1, :, 3:] = True  # right padding
    pe = PositionEmbeddingSine(num_pos_feats=num_feats, temperature=20.0, normalize=normalize,
                               scale=2 * math.pi if normalize else None)
    got = pe(torch.zeros(2, 3, 4, 5), mask)
    ref = loop_sine(mask, num_feats, 20.0, normalize, 2 * math.pi)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    # mask=None is the all-valid mask
    torch.testing.assert_close(pe(torch.zeros(2, 3, 4, 5)), pe(torch.zeros(2, 3, 4, 5), torch.zeros_like(mask)))


def test_sine_encoding_padded_valid_cells_equal_unpadded():
    pe = PositionEmbeddingSine(num_pos_feats=8)
    mask = torch.ones(1, 6, 7, dtype=torch.bool)
    mask[:, :4, :5] = False
    padded = pe(torch.zeros(1, 1, 6, 7), mask)[..., :4, :5]
    torch.testing.assert_close(padded, pe(torch.zeros(1, 1, 4, 5)))


# ----------------------------------------------------------------------------- reference decoder
def manual_mha(mha, q, k, v, key_padding_mask=None):
    """Batch-first multi-head attention from the module's raw weights."""
    d = q.shape[-1]
    nh = mha.num_heads
    wq, wk, wv = mha.in_proj_weight.split(d)
    bq, bk, bv = mha.in_proj_bias.split(d)

    def heads(t):  # [B,L,D] -> [B,nh,L,D/nh]
        return t.reshape(t.shape[0], t.shape[1], nh, d // nh).transpose(1, 2)

    qh, kh, vh = heads(q @ wq.T + bq), heads(k @ wk.T + bk), heads(v @ wv.T + bv)
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(d // nh)
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    att = scores.softmax(-1) @ vh
    att = att.transpose(1, 2).reshape(q.shape[0], q.shape[1], d)
    return att @ mha.out_proj.weight.T + mha.out_proj.bias


def ln(mod, x):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + mod.eps) * mod.weight + mod.bias


def manual_layer(layer, tgt, memory, query_pos, pos, kpm=None):
    q = tgt + query_pos
    tgt = ln(layer.norm1, tgt + manual_mha(layer.self_attn, q, q, tgt))
    tgt = ln(layer.norm2, tgt + manual_mha(layer.cross_attn, tgt + query_pos, memory + pos, memory, kpm))
    h = torch.relu(tgt @ layer.linear1.weight.T + layer.linear1.bias)
    return ln(layer.norm3, tgt + h @ layer.linear2.weight.T + layer.linear2.bias)


def _randomise(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def test_decoder_layer_equals_hand_composition():
    torch.manual_seed(0)
    layer = DecoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.1).eval()
    _randomise(layer)
    tgt, qpos = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    mem, pos = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    kpm = torch.tensor([[False] * 5, [False, False, False, True, True]])
    with torch.no_grad():
        got = layer(tgt, mem, query_pos=qpos, pos=pos, memory_key_padding_mask=kpm)
        ref = manual_layer(layer, tgt, mem, qpos, pos, kpm)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def _predictor(**kw):
    args = dict(in_channels=6, num_classes=4, hidden_dim=8, num_queries=5, nheads=2, dropout=0.1,
                dim_feedforward=12, dec_layers=3, mask_dim=7, deep_supervision=True)
    args.update(kw)
    torch.manual_seed(0)
    p = TransformerPredictor(**args).eval()
    # Non-trivial LayerNorm affines, so a missing or extra norm shows up.
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in p.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.5)
    return p


def manual_predictor(p, x, mf):
    """The whole predictor by hand: projection, positions, decoder loop, heads, per-query dot product."""
    b = x.shape[0]
    src = torch.einsum("oc,bchw->bohw", p.input_proj.weight[:, :, 0, 0], x) + p.input_proj.bias[None, :, None, None]
    pos = loop_sine(torch.zeros(b, *x.shape[-2:], dtype=torch.bool), p.pe_layer.num_pos_feats, 10000.0, True, 2 * math.pi)
    memory = src.flatten(2).transpose(1, 2)
    pos = pos.flatten(2).transpose(1, 2)
    qpos = p.query_embed.weight[None].repeat(b, 1, 1)
    tgt = torch.zeros_like(qpos)
    outs = []
    for layer in p.decoder.layers:
        tgt = manual_layer(layer, tgt, memory, qpos, pos)
        outs.append(ln(p.decoder.norm, tgt))
    results = []
    for hs in outs:
        logits = hs @ p.class_embed.weight.T + p.class_embed.bias
        e = hs
        for i, lin in enumerate(p.mask_embed.layers):
            e = e @ lin.weight.T + lin.bias
            if i < 2:
                e = torch.relu(e)
        masks = torch.zeros(b, e.shape[1], *mf.shape[-2:])
        for bi in range(b):
            for q in range(e.shape[1]):
                masks[bi, q] = (e[bi, q][:, None, None] * mf[bi]).sum(0)
        results.append((logits, masks))
    return results


def test_predictor_equals_manual_and_aux_layout():
    p = _predictor()
    x, mf = torch.randn(2, 6, 3, 4), torch.randn(2, 7, 6, 8)
    with torch.no_grad():
        out = p(x, mf)
        ref = manual_predictor(p, x, mf)
    assert out["pred_logits"].shape == (2, 5, 5) and out["pred_masks"].shape == (2, 5, 6, 8)
    assert len(out["aux_outputs"]) == 2
    for got, (rl, rm) in zip(out["aux_outputs"] + [out], ref):
        torch.testing.assert_close(got["pred_logits"], rl, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got["pred_masks"], rm, atol=1e-4, rtol=1e-4)
    # Layers differ, so the last layer really is the one reported as pred_*.
    assert not torch.allclose(out["aux_outputs"][-1]["pred_logits"], out["pred_logits"])


def test_no_deep_supervision_gives_last_layer_only():
    p = _predictor()
    q = _predictor(deep_supervision=False)
    q.load_state_dict(p.state_dict())
    x, mf = torch.randn(1, 6, 2, 3), torch.randn(1, 7, 4, 4)
    with torch.no_grad():
        a, b = p(x, mf), q(x, mf)
    assert "aux_outputs" not in b
    torch.testing.assert_close(a["pred_logits"], b["pred_logits"])
    torch.testing.assert_close(a["pred_masks"], b["pred_masks"])


def test_padding_mask_makes_padded_cells_irrelevant():
    p = _predictor()
    x = torch.randn(2, 6, 3, 4)
    mf = torch.randn(2, 7, 6, 8)
    padded = torch.randn(2, 6, 5, 6) * 10  # garbage
    padded[:, :, :3, :4] = x
    mask = torch.ones(2, 5, 6, dtype=torch.bool)
    mask[:, :3, :4] = False
    with torch.no_grad():
        ref = p(x, mf)
        got = p(padded, mf, mask)
        # a full-resolution mask (x8) is resized to the feature map by nearest sampling
        got_big = p(padded, mf, mask.repeat_interleave(8, 1).repeat_interleave(8, 2))
        unmasked = p(padded, mf)
    for o in (got, got_big):
        torch.testing.assert_close(o["pred_logits"], ref["pred_logits"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(o["pred_masks"], ref["pred_masks"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(o["aux_outputs"][0]["pred_logits"], ref["aux_outputs"][0]["pred_logits"],
                                   atol=1e-5, rtol=1e-5)
    assert not torch.allclose(unmasked["pred_logits"], ref["pred_logits"], atol=1e-3)


def test_dropout_only_in_training_and_gradients_reach_queries():
    p = _predictor(dropout=0.5)
    x, mf = torch.randn(1, 6, 2, 2), torch.randn(1, 7, 3, 3)
    with torch.no_grad():
        torch.testing.assert_close(p(x, mf)["pred_logits"], p(x, mf)["pred_logits"])
    p.train()
    torch.manual_seed(1)
    a = p(x, mf)
    b = p(x, mf)
    assert not torch.allclose(a["pred_logits"], b["pred_logits"])
    (a["pred_logits"].sum() + a["pred_masks"].sum()).backward()
    assert p.query_embed.weight.grad is not None and p.query_embed.weight.grad.abs().sum() > 0
    assert p.input_proj.weight.grad.abs().sum() > 0


def test_build_from_cfg_and_errors():
    cfg = get_cfg()
    mf = cfg.MODEL.MASK_FORMER
    mf.HIDDEN_DIM, mf.NHEADS, mf.DIM_FEEDFORWARD, mf.DROPOUT = 16, 4, 24, 0.2
    mf.DEC_LAYERS, mf.NUM_OBJECT_QUERIES, mf.DEEP_SUPERVISION = 2, 7, True
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 9
    p = build_transformer_predictor(cfg, in_channels=5, num_classes=3)
    assert p.query_embed.weight.shape == (7, 16)
    assert len(p.decoder.layers) == 2
    layer = p.decoder.layers[0]
    assert layer.self_attn.num_heads == 4 and layer.linear1.out_features == 24 and layer.dropout.p == 0.2
    assert p.class_embed.out_features == 4 and p.mask_embed.layers[-1].out_features == 9
    assert p.input_proj.in_channels == 5
    out = p.eval()(torch.randn(1, 5, 2, 2), torch.randn(1, 9, 4, 4))
    assert out["pred_logits"].shape == (1, 7, 4) and len(out["aux_outputs"]) == 1
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        build_transformer_predictor(cfg, in_channels=5, num_classes=-1)
    with pytest.raises(ValueError, match="mask_dim"):
        p(torch.randn(1, 5, 2, 2), torch.randn(1, 8, 4, 4))
    mf.NHEADS = 3
    with pytest.raises(ValueError, match="NHEADS"):
        build_transformer_predictor(cfg, in_channels=5, num_classes=3)
