"""semantic_inference, sem_seg_postprocess and tta_inference against explicit formulas."""
import math

import numpy as np
import pytest
import torch

from simformer.modeling.inference import (
    semantic_inference,
    sem_seg_postprocess,
    shortest_edge_size,
    tta_inference,
)


def test_semantic_inference_equals_loop():
    g = torch.Generator().manual_seed(0)
    cls = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)  # K = 3 (+ no object)
    masks = torch.randn(2, 3, 2, 3, generator=g, dtype=torch.float64) * 3
    got = semantic_inference(cls, masks)
    ref = np.zeros((2, 3, 2, 3))
    for b in range(2):
        for k in range(3):
            for y in range(2):
                for x in range(3):
                    for q in range(3):
                        e = [math.exp(v) for v in cls[b, q].tolist()]
                        p = e[k] / sum(e)
                        ref[b, k, y, x] += p / (1 + math.exp(-masks[b, q, y, x].item()))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)
    torch.testing.assert_close(semantic_inference(cls[1], masks[1]), got[1])
    with pytest.raises(ValueError, match="same"):
        semantic_inference(cls, masks[:, :2])


def bilinear_ref(a, out_h, out_w):
    """Separable bilinear resize, half-pixel centres (align_corners=False), edges clamped."""
    def axis(n_in, n_out):
        m = np.zeros((n_out, n_in))
        for o in range(n_out):
            s = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
            i0 = min(int(math.floor(s)), n_in - 1)
            i1 = min(i0 + 1, n_in - 1)
            lam = s - i0
            m[o, i0] += 1 - lam
            m[o, i1] += lam
        return m
    return np.einsum("oh,khw,pw->kop", axis(a.shape[1], out_h), a, axis(a.shape[2], out_w))


def test_sem_seg_postprocess_crops_then_resizes():
    k, hp, wp, h, w = 2, 8, 10, 5, 6
    res = torch.full((k, hp, wp), 1000.0)  # garbage in the padding
    res[0, :h, :w] = 0.25  # constant class map
    res[1, :h, :w] = torch.tensor([0.0, 1.0] * 3)  # vertical stripes
    out = sem_seg_postprocess(res, (h, w), 13, 9)
    assert out.shape == (2, 13, 9)
    torch.testing.assert_close(out[0], torch.full((13, 9), 0.25))
    np.testing.assert_allclose(out.numpy(), bilinear_ref(res[:, :h, :w].numpy(), 13, 9), atol=1e-6)
    assert out.max() <= 1.0  # no padding leaked in
    with pytest.raises(ValueError):
        sem_seg_postprocess(res, (9, 6), 4, 4)


def test_shortest_edge_size():
    assert shortest_edge_size(8, 12, 16, 0) == (16, 24)
    assert shortest_edge_size(8, 12, 16, 18) == (12, 18)
    assert shortest_edge_size(12, 8, 4, 100) == (6, 4)
    assert shortest_edge_size(10, 15, 5, 0) == (5, 8)  # 7.5 rounds half up


def test_tta_scales_are_averaged():
    seen = []

    def predict(batch):  # K = 1 map holding the input height
        seen.append(tuple(batch.shape))
        return torch.full((batch.shape[0], 1, *batch.shape[-2:]), float(batch.shape[-2]))

    img = torch.rand(3, 8, 12) * 255
    out = tta_inference(predict, img, min_sizes=[8, 16, 4], max_size=18, flip=False, out_h=5, out_w=7)
    assert seen == [(1, 3, 8, 12), (1, 3, 12, 18), (1, 3, 4, 6)]
    torch.testing.assert_close(out, torch.full((1, 5, 7), (8 + 12 + 4) / 3))


def test_tta_flip_is_undone():
    img = torch.zeros(3, 6, 8)
    img[0, :, :3] = 255.0  # left part bright
    img[1] = torch.arange(8.0) * 10  # horizontal ramp

    def predict(batch):  # identity-like: probabilities = first two channels / 255
        return batch[:, :2] / 255.0

    seen_flip = []

    def predict_spy(batch):
        seen_flip.append(torch.equal(batch[1], batch[0].flip(-1)))
        return predict(batch)

    out = tta_inference(predict_spy, img, min_sizes=[6], max_size=0, flip=True, out_h=6, out_w=8)
    assert seen_flip == [True]
    torch.testing.assert_close(out, img[:2] / 255.0)
    # At a second scale the maps are resized back to the output size before averaging.
    out2 = tta_inference(predict, img, min_sizes=[6, 12], max_size=0, flip=True, out_h=6, out_w=8)
    assert out2[0, :, 0].min() > 0.9 and out2[0, :, -1].max() < 0.1


def test_tta_rejects_wrong_prediction_size():
    with pytest.raises(ValueError, match="predict_fn"):
        tta_inference(lambda b: torch.zeros(b.shape[0], 2, 3, 3), torch.zeros(3, 8, 8),
                      min_sizes=[8], max_size=0, flip=False, out_h=8, out_w=8)
    with pytest.raises(ValueError, match="MIN_SIZES"):
        tta_inference(lambda b: b, torch.zeros(3, 8, 8), min_sizes=[], max_size=0, flip=False, out_h=8, out_w=8)
