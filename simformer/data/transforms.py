"""Augmentation primitives for semantic segmentation (pure numpy / PIL).

Every random choice is drawn from an explicit ``np.random.Generator`` passed by the caller, so a
sample is a pure function of (record, generator state) — the basis of the data loader's
worker-count-independent determinism. Conventions:

* images are ``HxWx3`` RGB arrays, ``uint8`` before photometric distortion and ``float32``
  (0..255) after it; labels are ``HxW`` ``uint8`` / integer class-id maps (255 = ignore);
* the geometric pipeline follows detectron2/MaskFormer: short-side resize with a long-side cap
  (image bilinear, label nearest), random crop, SSD colour distortion, horizontal flip, and
  bottom/right padding to a multiple of ``size_divisibility``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
from PIL import Image

__all__ = [
    "compute_resized_shape", "sample_short_side", "resize_image", "resize_label",
    "resize_short_side", "sample_crop_box", "crop", "hflip", "rgb_to_hsv", "hsv_to_rgb",
    "adjust_brightness", "adjust_contrast", "adjust_saturation", "adjust_hue", "ColorParams",
    "sample_color_params", "apply_color_params", "color_aug_ssd", "pad_to_divisible",
]


# ------------------------------------------------------------------------------------------------
# Resizing
# ------------------------------------------------------------------------------------------------
def compute_resized_shape(h: int, w: int, short: int, max_size: int) -> Tuple[int, int]:
    """(new_h, new_w) with the short side = ``short`` and the long side <= ``max_size`` (0 = no cap).

    Same arithmetic as detectron2's ``ResizeShortestEdge`` (round half up at the end).
    """
    if h <= 0 or w <= 0:
        raise ValueError(f"Cannot resize an empty image of size {h}x{w}")
    if short <= 0:
        raise ValueError(f"Short side must be positive, got {short}")
    scale = short / min(h, w)
    newh, neww = (short, scale * w) if h < w else (scale * h, short)
    if max_size and max(newh, neww) > max_size:
        cap = max_size / max(newh, neww)
        newh, neww = newh * cap, neww * cap
    return max(1, int(newh + 0.5)), max(1, int(neww + 0.5))


def sample_short_side(rng: np.random.Generator, sizes: Sequence[int], sampling: str) -> int:
    """One short side: an element of ``sizes`` ("choice") or a uniform int in [min, max] ("range")."""
    sizes = [int(s) for s in sizes]
    if not sizes:
        raise ValueError("INPUT.MIN_SIZE_TRAIN is empty; give at least one short-side size")
    if sampling == "choice":
        return sizes[int(rng.integers(len(sizes)))]
    if sampling == "range":
        if len(sizes) != 2 or sizes[0] > sizes[1]:
            raise ValueError(
                f"INPUT.MIN_SIZE_TRAIN_SAMPLING 'range' needs MIN_SIZE_TRAIN = [min, max] with min <= max, got {sizes}"
            )
        return int(rng.integers(sizes[0], sizes[1] + 1))
    raise ValueError(f"INPUT.MIN_SIZE_TRAIN_SAMPLING must be 'choice' or 'range', got {sampling!r}")


def resize_image(image: np.ndarray, size_hw: Tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a ``uint8`` ``HxWx3`` image to ``size_hw`` (PIL, as detectron2)."""
    h, w = size_hw
    if image.shape[:2] == (h, w):
        return image
    if image.dtype != np.uint8:
        raise TypeError(f"resize_image expects uint8, got {image.dtype}")
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def resize_label(label: np.ndarray, size_hw: Tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an ``HxW`` ``uint8`` label map (class ids never blend)."""
    h, w = size_hw
    if label.shape[:2] == (h, w):
        return label
    if label.dtype != np.uint8:
        raise TypeError(f"resize_label expects uint8, got {label.dtype}")
    return np.asarray(Image.fromarray(label).resize((w, h), Image.NEAREST))


def resize_short_side(image: np.ndarray, label: Optional[np.ndarray], short: int,
                      max_size: int) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Resize image (bilinear) and optionally its label (nearest) to the short side ``short``."""
    size = compute_resized_shape(image.shape[0], image.shape[1], short, max_size)
    return resize_image(image, size), (None if label is None else resize_label(label, size))


# ------------------------------------------------------------------------------------------------
# Crop / flip
# ------------------------------------------------------------------------------------------------
def sample_crop_box(h: int, w: int, crop_hw: Sequence[int], rng: np.random.Generator) -> Tuple[int, int, int, int]:
    """(y0, x0, ch, cw) of a uniformly placed crop; the crop is ``min(crop, image)`` per dimension."""
    ch, cw = min(int(crop_hw[0]), h), min(int(crop_hw[1]), w)
    y0 = int(rng.integers(h - ch + 1))
    x0 = int(rng.integers(w - cw + 1))
    return y0, x0, ch, cw


def crop(arr: np.ndarray, box: Tuple[int, int, int, int]) -> np.ndarray:
    """``arr[y0:y0+ch, x0:x0+cw]`` for ``HxW`` or ``HxWxC`` arrays."""
    y0, x0, ch, cw = box
    return arr[y0:y0 + ch, x0:x0 + cw]


def hflip(arr: np.ndarray) -> np.ndarray:
    """Mirror left-right (``HxW`` or ``HxWxC``); returns a contiguous copy."""
    return np.ascontiguousarray(arr[:, ::-1])


# ------------------------------------------------------------------------------------------------
# Photometric distortion (SSD / MaskFormer ColorAugSSD)
# ------------------------------------------------------------------------------------------------
def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """``...x3`` RGB in 0..255 -> HSV with H in degrees [0, 360), S in [0, 1], V in 0..255 (float32)."""
    rgb = rgb.astype(np.float32, copy=False)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(axis=-1)
    c = v - rgb.min(axis=-1)
    safe_c = np.where(c > 0, c, 1.0)
    # Hue sector by which channel holds the maximum (red wins ties, then green), as colorsys.
    h = np.where(v == r, ((g - b) / safe_c) % 6.0,
                 np.where(v == g, (b - r) / safe_c + 2.0, (r - g) / safe_c + 4.0))
    h = np.where(c > 0, h * 60.0, 0.0) % 360.0
    s = np.where(v > 0, c / np.where(v > 0, v, 1.0), 0.0)
    return np.stack([h, s, v], axis=-1).astype(np.float32)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_hsv` (``...x3`` float32, RGB 0..255).

    Uses the closed form ``f(n) = V - V*S*clip(min(k, 4-k), 0, 1)``, ``k = (n + H/60) mod 6`` with
    n = 5, 3, 1 for R, G, B: branch-free, hence vectorised.
    """
    h, s, v = hsv[..., 0:1], hsv[..., 1:2], hsv[..., 2:3]
    n = np.array([5.0, 3.0, 1.0], dtype=np.float32)
    k = (n + h / 60.0) % 6.0
    return (v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)).astype(np.float32)


def adjust_brightness(img: np.ndarray, delta: float) -> np.ndarray:
    """``clip(img + delta, 0, 255)`` (float32)."""
    return np.clip(img.astype(np.float32) + np.float32(delta), 0.0, 255.0)


def adjust_contrast(img: np.ndarray, alpha: float) -> np.ndarray:
    """``clip(img * alpha, 0, 255)`` — SSD's contrast is a plain gain, not mean-centred."""
    return np.clip(img.astype(np.float32) * np.float32(alpha), 0.0, 255.0)


def adjust_saturation(img: np.ndarray, alpha: float) -> np.ndarray:
    """Scale HSV saturation by ``alpha`` (clipped to [0, 1])."""
    hsv = rgb_to_hsv(img)
    hsv[..., 1] = np.clip(hsv[..., 1] * np.float32(alpha), 0.0, 1.0)
    return np.clip(hsv_to_rgb(hsv), 0.0, 255.0)


def adjust_hue(img: np.ndarray, delta_deg: float) -> np.ndarray:
    """Rotate HSV hue by ``delta_deg`` degrees (mod 360)."""
    hsv = rgb_to_hsv(img)
    hsv[..., 0] = (hsv[..., 0] + np.float32(delta_deg)) % 360.0
    return np.clip(hsv_to_rgb(hsv), 0.0, 255.0)


@dataclass(frozen=True)
class ColorParams:
    """One draw of the SSD distortion; ``None`` = that operation is skipped."""

    brightness: Optional[float]
    contrast: Optional[float]
    saturation: Optional[float]
    hue: Optional[float]  # degrees
    contrast_first: bool


def sample_color_params(rng: np.random.Generator, *, brightness_delta: float = 32.0,
                        contrast_range: Tuple[float, float] = (0.5, 1.5),
                        saturation_range: Tuple[float, float] = (0.5, 1.5),
                        hue_delta_deg: float = 36.0) -> ColorParams:
    """Draw the operations of MaskFormer's ``ColorAugSSDTransform``.

    Each of brightness (uniform +-``brightness_delta``), contrast, saturation (uniform gain in the
    range) and hue (uniform +-``hue_delta_deg``) is applied with probability 0.5; contrast goes
    before or after the two HSV operations with probability 0.5. MaskFormer's hue delta is 18 in
    OpenCV's 8-bit hue unit (2 degrees), hence the default of 36 degrees. Every draw is made
    whether or not the operation fires, so the number of generator calls is constant.
    """
    u = rng.random(5)  # coin flips: brightness, contrast_first, contrast, saturation, hue
    vals = rng.uniform(
        [-brightness_delta, contrast_range[0], saturation_range[0], -hue_delta_deg],
        [brightness_delta, contrast_range[1], saturation_range[1], hue_delta_deg],
    )
    return ColorParams(
        brightness=float(vals[0]) if u[0] < 0.5 else None,
        contrast=float(vals[1]) if u[2] < 0.5 else None,
        saturation=float(vals[2]) if u[3] < 0.5 else None,
        hue=float(vals[3]) if u[4] < 0.5 else None,
        contrast_first=bool(u[1] < 0.5),
    )


def apply_color_params(img: np.ndarray, p: ColorParams) -> np.ndarray:
    """Apply a :class:`ColorParams` draw to an ``HxWx3`` RGB image; returns float32 0..255."""
    out = img.astype(np.float32)
    if p.brightness is not None:
        out = adjust_brightness(out, p.brightness)
    if p.contrast_first and p.contrast is not None:
        out = adjust_contrast(out, p.contrast)
    if p.saturation is not None:
        out = adjust_saturation(out, p.saturation)
    if p.hue is not None:
        out = adjust_hue(out, p.hue)
    if not p.contrast_first and p.contrast is not None:
        out = adjust_contrast(out, p.contrast)
    return out


def color_aug_ssd(img: np.ndarray, rng: np.random.Generator, **kwargs) -> np.ndarray:
    """Sample (see :func:`sample_color_params`) and apply the SSD distortion; float32 ``HxWx3``."""
    return apply_color_params(img, sample_color_params(rng, **kwargs))


# ------------------------------------------------------------------------------------------------
# Padding
# ------------------------------------------------------------------------------------------------
def pad_to_divisible(image: np.ndarray, label: Optional[np.ndarray], divisor: int,
                     pad_value: Sequence[float], ignore_label: int = 255
                     ) -> Tuple[np.ndarray, Optional[np.ndarray], np.ndarray]:
    """Pad bottom/right so H and W are multiples of ``divisor`` (0 or 1 = no padding).

    Args:
        image: ``HxWx3`` (any dtype; the result is float32), padded with ``pad_value`` per channel
            (the pixel mean, so padding is 0 after normalisation).
        label: ``HxW`` integer map or None, padded with ``ignore_label`` (result int64).
    Returns:
        (image ``H'xW'x3`` float32, label ``H'xW'`` int64 or None, valid ``H'xW'`` bool).
    """
    h, w = image.shape[:2]
    if divisor and divisor > 1:
        ph, pw = -(-h // divisor) * divisor, -(-w // divisor) * divisor
    else:
        ph, pw = h, w
    out = np.empty((ph, pw, 3), dtype=np.float32)
    out[...] = np.asarray(pad_value, dtype=np.float32)
    out[:h, :w] = image
    valid = np.zeros((ph, pw), dtype=bool)
    valid[:h, :w] = True
    out_label = None
    if label is not None:
        out_label = np.full((ph, pw), ignore_label, dtype=np.int64)
        out_label[:h, :w] = label
    return out, out_label, valid
