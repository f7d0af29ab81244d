"""FPN pixel decoder: top-down pathway checked against hand computations."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from simformer.config import get_cfg
from simformer.modeling.pixel_decoder import FPNPixelDecoder, build_pixel_decoder

torch.set_num_threads(1)


def manual_gn(x, groups, weight, bias, eps=1e-5):
    """GroupNorm written out: statistics over (channels of the group, H, W), biased variance."""
    b, c, h, w = x.shape
    g = x.reshape(b, groups, -1)
    mean = g.mean(-1, keepdim=True)
    var = ((g - mean) ** 2).mean(-1, keepdim=True)
    g = (g - mean) / torch.sqrt(var + eps)
    return g.reshape(b, c, h, w) * weight[None, :, None, None] + bias[None, :, None, None]


def up2(x):
    """Nearest 2x upsampling by repetition."""
    return x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


def _features(channels, b=2, size2=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = {}
    for i, (name, c) in enumerate(channels.items()):
        s = size2 // (2 ** i)
        feats[name] = torch.randn(b, c, s, s, generator=g) * 3 + 1
    return feats


def _randomise_norms(dec, seed=1):
    g = torch.Generator().manual_seed(seed)
    for m in dec.modules():
        if isinstance(m, torch.nn.GroupNorm):
            m.weight.data = torch.rand(m.weight.shape, generator=g) + 0.5
            m.bias.data = torch.randn(m.bias.shape, generator=g)


def test_delta_kernels_top_down_equals_manual():
    c = 8
    names = ["res2", "res3", "res4", "res5"]
    shape = {n: (c, 4 * 2 ** i) for i, n in enumerate(names)}
    dec = FPNPixelDecoder(input_shape=shape, conv_dim=c, mask_dim=c, gn_groups=2)
    _randomise_norms(dec)
    eye = torch.eye(c)
    delta3 = torch.zeros(c, c, 3, 3)
    delta3[:, :, 1, 1] = eye
    with torch.no_grad():
        for m in dec.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(eye[:, :, None, None] if m.kernel_size == (1, 1) else delta3)
                if m.bias is not None:
                    m.bias.zero_()
    feats = _features({n: c for n in names})
    mask_features, res5 = dec(feats)
    assert res5 is feats["res5"]

    def gn(mod, x):
        return manual_gn(x, 2, mod.norm.weight.detach(), mod.norm.bias.detach())

    y = torch.relu(gn(dec.output_convs["res5"], feats["res5"]))
    for n in ["res4", "res3", "res2"]:
        y = gn(dec.lateral_convs[n], feats[n]) + up2(y)
        y = torch.relu(gn(dec.output_convs[n], y))
    assert mask_features.shape == (2, c, 8, 8)
    torch.testing.assert_close(mask_features, y, atol=1e-5, rtol=1e-5)


def test_random_weights_equal_reference():
    chans = {"res2": 3, "res3": 5, "res4": 6, "res5": 7}
    shape = {n: (ch, 4 * 2 ** i) for i, (n, ch) in enumerate(chans.items())}
    dec = FPNPixelDecoder(input_shape=shape, conv_dim=8, mask_dim=4, gn_groups=4)
    _randomise_norms(dec)
    feats = _features(chans, size2=16, seed=3)
    out, _ = dec(feats)

    def block(mod, x, relu):
        y = F.conv2d(x, mod.conv.weight, None, padding=mod.conv.kernel_size[0] // 2)
        y = manual_gn(y, 4, mod.norm.weight, mod.norm.bias)
        return torch.relu(y) if relu else y

    with torch.no_grad():
        y = block(dec.output_convs["res5"], feats["res5"], True)
        for n in ["res4", "res3", "res2"]:
            y = block(dec.lateral_convs[n], feats[n], False) + up2(y)
            y = block(dec.output_convs[n], y, True)
        ref = F.conv2d(y, dec.mask_features.weight, dec.mask_features.bias, padding=1)
    assert out.shape == (2, 4, 16, 16)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # The coarse levels matter: changing res5 changes the finest output.
    feats2 = dict(feats, res5=feats["res5"] + 1.0 * torch.randn_like(feats["res5"]))
    assert not torch.allclose(dec(feats2)[0], out)


def test_non_multiple_sizes_use_nearest_upsampling():
    chans = {"res2": 2, "res3": 2, "res4": 2, "res5": 2}
    shape = {n: (ch, 4 * 2 ** i) for i, (n, ch) in enumerate(chans.items())}
    dec = FPNPixelDecoder(input_shape=shape, conv_dim=4, mask_dim=3, gn_groups=1)
    feats = {n: torch.randn(1, 2, s, s) for n, s in zip(chans, [7, 4, 2, 1])}
    out, _ = dec(feats)
    assert out.shape == (1, 3, 7, 7)


def test_init_and_bias_layout():
    shape = {"res2": (16, 4), "res3": (16, 8), "res4": (16, 16), "res5": (16, 32)}
    dec = FPNPixelDecoder(input_shape=shape, conv_dim=32, mask_dim=8, gn_groups=8)
    # GN follows every conv except the last, so only the last has a bias (zero-initialised).
    for m in list(dec.lateral_convs.values()) + list(dec.output_convs.values()):
        assert m.conv.bias is None and m.norm.num_groups == 8
    assert torch.count_nonzero(dec.mask_features.bias) == 0
    # kaiming_uniform(a=1): U(-b, b) with b = sqrt(3 / fan_in).
    w = dec.output_convs["res4"].conv.weight
    bound = math.sqrt(3.0 / (32 * 9))
    assert w.abs().max() <= bound + 1e-7
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)


def test_build_from_cfg_and_backbone_like_shape():
    cfg = get_cfg()
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 16
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 12
    cfg.MODEL.SEM_SEG_HEAD.GN_GROUPS = 4
    bb = SimpleNamespace(
        out_channels={"res2": 3, "res3": 4, "res4": 5, "res5": 6},
        out_strides={"res2": 4, "res3": 8, "res4": 16, "res5": 32},
    )
    dec = build_pixel_decoder(cfg, bb)
    assert dec.in_features == ["res2", "res3", "res4", "res5"]
    assert dec.mask_features.out_channels == 12 and dec.conv_dim == 16
    feats = {n: torch.randn(1, c, s, s) for (n, c), s in zip(bb.out_channels.items(), [8, 4, 2, 1])}
    assert dec(feats)[0].shape == (1, 12, 8, 8)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="GN_GROUPS"):
        FPNPixelDecoder(input_shape={"res5": (4, 32)}, conv_dim=10, gn_groups=4)
    with pytest.raises(ValueError, match="res5"):
        FPNPixelDecoder(input_shape={"res2": (4, 4)}, conv_dim=8, gn_groups=4)
    dec = FPNPixelDecoder(input_shape={"res4": (4, 16), "res5": (4, 32)}, conv_dim=8, mask_dim=8, gn_groups=4)
    with pytest.raises(KeyError, match="res4"):
        dec({"res5": torch.randn(1, 4, 2, 2)})
