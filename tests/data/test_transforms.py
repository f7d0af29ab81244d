import colorsys

import numpy as np
import pytest

from simformer.data import transforms as T


def test_compute_resized_shape_hand_cases():
    # 640 * 512 / 480 = 682.67 -> 683
    assert T.compute_resized_shape(480, 640, 512, 2048) == (512, 683)
    assert T.compute_resized_shape(640, 480, 512, 2048) == (683, 512)
    # 100x1000 -> 512x5120 -> capped by 2048/5120 = 0.4 -> 204.8 x 2048 -> (205, 2048)
    assert T.compute_resized_shape(100, 1000, 512, 2048) == (205, 2048)
    assert T.compute_resized_shape(100, 1000, 512, 0) == (512, 5120)
    assert T.compute_resized_shape(30, 30, 64, 2048) == (64, 64)


def test_sample_short_side_choice_and_range():
    rng = np.random.default_rng(0)
    draws = [T.sample_short_side(rng, [320, 480, 640], "choice") for _ in range(300)]
    assert set(draws) == {320, 480, 640}
    draws = np.array([T.sample_short_side(rng, [10, 14], "range") for _ in range(400)])
    assert set(draws.tolist()) == {10, 11, 12, 13, 14}  # both ends inclusive
    with pytest.raises(ValueError, match="MIN_SIZE_TRAIN"):
        T.sample_short_side(rng, [10, 14, 20], "range")
    with pytest.raises(ValueError, match="MIN_SIZE_TRAIN_SAMPLING"):
        T.sample_short_side(rng, [10], "uniform")


def test_resize_label_is_nearest_and_image_bilinear():
    lbl = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    big = T.resize_label(lbl, (4, 4))
    np.testing.assert_array_equal(big, np.kron(lbl, np.ones((2, 2), dtype=np.uint8)))
    small = T.resize_label(np.arange(64, dtype=np.uint8).reshape(8, 8), (3, 5))
    assert set(np.unique(small)) <= set(range(64))
    # A constant image stays constant under bilinear resizing; a horizontal ramp stays monotone.
    const = np.full((5, 7, 3), 77, np.uint8)
    assert (T.resize_image(const, (11, 3)) == 77).all()
    ramp = np.repeat(np.repeat(np.linspace(0, 250, 8).astype(np.uint8)[None, :, None], 3, 2), 4, 0)
    out = T.resize_image(ramp, (4, 16)).astype(int)
    assert (np.diff(out[0, :, 0]) >= 0).all() and out[0, 0, 0] < 20 and out[0, -1, 0] > 230


def test_crop_box_bounds_and_uniform_placement():
    rng = np.random.default_rng(1)
    boxes = [T.sample_crop_box(10, 6, (4, 8), rng) for _ in range(500)]
    assert all(b[2] == 4 and b[3] == 6 for b in boxes)  # width clamped to the image
    y0 = np.array([b[0] for b in boxes])
    assert set(y0.tolist()) == set(range(7)) and all(b[1] == 0 for b in boxes)
    arr = np.arange(60).reshape(10, 6)
    np.testing.assert_array_equal(T.crop(arr, (2, 1, 3, 4)), arr[2:5, 1:5])


def test_hflip_mirrors():
    a = np.arange(24).reshape(2, 4, 3)
    f = T.hflip(a)
    assert f[0, 0, 1] == a[0, 3, 1] and f[1, 3, 2] == a[1, 0, 2]
    np.testing.assert_array_equal(T.hflip(f), a)


def test_hsv_matches_colorsys_and_round_trips():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, size=(200, 3)).astype(np.float32)
    rgb[:5] = [[0, 0, 0], [255, 255, 255], [10, 10, 10], [255, 0, 0], [0, 255, 255]]
    hsv = T.rgb_to_hsv(rgb)
    ref = np.array([colorsys.rgb_to_hsv(*(c / 255.0)) for c in rgb])
    np.testing.assert_allclose(hsv[:, 0], ref[:, 0] * 360.0, atol=1e-3)
    np.testing.assert_allclose(hsv[:, 1], ref[:, 1], atol=1e-5)
    np.testing.assert_allclose(hsv[:, 2], ref[:, 2] * 255.0, atol=1e-3)
    np.testing.assert_allclose(T.hsv_to_rgb(hsv), rgb, atol=1e-3)
    # hsv -> rgb against colorsys for arbitrary HSV triples.
    h = rng.uniform(0, 360, 100); s = rng.uniform(0, 1, 100); v = rng.uniform(0, 255, 100)
    out = T.hsv_to_rgb(np.stack([h, s, v], 1).astype(np.float32))
    ref = np.array([colorsys.hsv_to_rgb(a / 360.0, b, c / 255.0) for a, b, c in zip(h, s, v)]) * 255.0
    np.testing.assert_allclose(out, ref, atol=2e-2)


def test_photometric_ops_values():
    img = np.array([[[10, 100, 250]]], dtype=np.uint8)
    np.testing.assert_allclose(T.adjust_brightness(img, 20.0), [[[30, 120, 255]]])  # clipped
    np.testing.assert_allclose(T.adjust_brightness(img, -20.0), [[[0, 80, 230]]])
    np.testing.assert_allclose(T.adjust_contrast(img, 1.5), [[[15, 150, 255]]])
    red = np.array([[[200, 0, 0]]], np.float32)
    np.testing.assert_allclose(T.adjust_hue(red, 120.0), [[[0, 200, 0]]], atol=1e-3)
    np.testing.assert_allclose(T.adjust_hue(red, -120.0), [[[0, 0, 200]]], atol=1e-3)
    np.testing.assert_allclose(T.adjust_hue(red, 360.0), red, atol=1e-3)
    # Saturation 0 -> grey at the max channel (V); gain 0.5 on (200, 100, 0): S 1 -> 0.5.
    np.testing.assert_allclose(T.adjust_saturation(img, 0.0), [[[250, 250, 250]]], atol=1e-3)
    np.testing.assert_allclose(T.adjust_saturation(np.array([[[200, 100, 0]]]), 0.5), [[[200, 150, 100]]], atol=1e-3)


def test_color_params_bounds_and_frequencies():
    rng = np.random.default_rng(3)
    ps = [T.sample_color_params(rng) for _ in range(4000)]
    for name, lo, hi in [("brightness", -32, 32), ("contrast", 0.5, 1.5), ("saturation", 0.5, 1.5), ("hue", -36, 36)]:
        vals = np.array([getattr(p, name) for p in ps if getattr(p, name) is not None])
        assert 0.46 < len(vals) / len(ps) < 0.54, name  # each op fires with p = 0.5
        assert vals.min() >= lo and vals.max() <= hi, name
        assert vals.min() < lo + 0.05 * (hi - lo) and vals.max() > hi - 0.05 * (hi - lo), name  # spans the range
    first = np.mean([p.contrast_first for p in ps])
    assert 0.46 < first < 0.54


def test_apply_color_params_order_and_output_range():
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (6, 5, 3)).astype(np.uint8)
    p = T.ColorParams(brightness=10.0, contrast=1.4, saturation=0.7, hue=25.0, contrast_first=True)
    want = T.adjust_contrast(T.adjust_brightness(img, 10.0), 1.4)
    want = T.adjust_hue(T.adjust_saturation(want, 0.7), 25.0)
    np.testing.assert_allclose(T.apply_color_params(img, p), want, atol=1e-4)
    p2 = T.ColorParams(brightness=10.0, contrast=1.4, saturation=0.7, hue=25.0, contrast_first=False)
    want2 = T.adjust_contrast(T.adjust_hue(T.adjust_saturation(T.adjust_brightness(img, 10.0), 0.7), 25.0), 1.4)
    np.testing.assert_allclose(T.apply_color_params(img, p2), want2, atol=1e-4)
    assert np.abs(want - want2).max() > 1.0  # the order matters, so the test distinguishes them
    none = T.ColorParams(None, None, None, None, True)
    np.testing.assert_array_equal(T.apply_color_params(img, none), img.astype(np.float32))
    for s in range(20):
        out = T.color_aug_ssd(img, np.random.default_rng(s))
        assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 255
    # Brightness-only shift of a mid-grey image stays within +-32.
    diffs = []
    for s in range(200):
        q = T.sample_color_params(np.random.default_rng(s))
        if q.brightness is not None:
            diffs.append(T.adjust_brightness(np.full((1, 1, 3), 128, np.uint8), q.brightness)[0, 0, 0] - 128)
    assert np.abs(diffs).max() <= 32 and np.abs(diffs).max() > 25


def test_pad_to_divisible_values():
    img = np.full((5, 7, 3), 9, np.uint8)
    lbl = np.full((5, 7), 3, np.uint8)
    mean = (1.5, 2.5, 3.5)
    out, ol, valid = T.pad_to_divisible(img, lbl, 4, mean, 255)
    assert out.shape == (8, 8, 3) and ol.shape == (8, 8) and ol.dtype == np.int64
    assert valid.sum() == 35 and valid[:5, :7].all()
    np.testing.assert_array_equal(out[~valid], np.tile(np.float32(mean), (64 - 35, 1)))
    assert (out[valid] == 9).all() and (ol[~valid] == 255).all() and (ol[valid] == 3).all()
    out0, _, valid0 = T.pad_to_divisible(img, None, 0, mean)
    assert out0.shape == (5, 7, 3) and valid0.all()
    out1, _, _ = T.pad_to_divisible(np.zeros((8, 4, 3)), None, 4, mean)
    assert out1.shape == (8, 4, 3)
