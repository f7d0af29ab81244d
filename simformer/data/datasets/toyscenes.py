"""ToyScenes: the embedded, procedurally generated default dataset (see docs/toyscenes.md).

The class list is fixed here; the generator below writes the same on-disk layout as the real
datasets (images/{train,val}/*.jpg, annotations/{train,val}/*.png, classes.json).
"""
from __future__ import annotations

import colorsys
import json
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np


@dataclass(frozen=True)
class ToyClass:
    name: str
    kind: str  # "stuff": region-filling background; "thing": a compact shape instance


# Ids are contiguous training ids (= pixel values). 10 stuff + 14 things.
TOYSCENES_CLASSES = (
    ToyClass("sky", "stuff"),
    ToyClass("grass", "stuff"),
    ToyClass("water", "stuff"),
    ToyClass("sand", "stuff"),
    ToyClass("road", "stuff"),
    ToyClass("wall", "stuff"),
    ToyClass("forest", "stuff"),
    ToyClass("snow", "stuff"),
    ToyClass("brick", "stuff"),
    ToyClass("carpet", "stuff"),
    ToyClass("ball", "thing"),
    ToyClass("box", "thing"),
    ToyClass("kite", "thing"),
    ToyClass("star", "thing"),
    ToyClass("ring", "thing"),
    ToyClass("cross", "thing"),
    ToyClass("house", "thing"),
    ToyClass("tree", "thing"),
    ToyClass("boat", "thing"),
    ToyClass("car", "thing"),
    ToyClass("flower", "thing"),
    ToyClass("fish", "thing"),
    ToyClass("lamp", "thing"),
    ToyClass("sign", "thing"),
)


# ================================================================================================
# Generator
# ================================================================================================

GENERATOR_VERSION = 1
SPLITS = ("train", "val")
_SPLIT_IDS = {"train": 0, "val": 1}
IGNORE = 255
NUM_CLASSES = len(TOYSCENES_CLASSES)
CLASS_IDS = {c.name: i for i, c in enumerate(TOYSCENES_CLASSES)}

# Colour families as HSV (hue, saturation, value). Several classes share a family and several share
# a texture, so a class is identified by the combination (and, for things, by the shape).
COLOURS: Dict[str, Tuple[float, float, float]] = {
    "skyblue": (0.56, 0.42, 0.93),
    "blue": (0.62, 0.72, 0.72),
    "cyan": (0.50, 0.68, 0.76),
    "green": (0.29, 0.62, 0.66),
    "darkgreen": (0.36, 0.68, 0.40),
    "tan": (0.11, 0.38, 0.84),
    "yellow": (0.15, 0.80, 0.94),
    "orange": (0.075, 0.85, 0.95),
    "brown": (0.07, 0.62, 0.46),
    "red": (0.01, 0.74, 0.76),
    "magenta": (0.90, 0.58, 0.84),
    "purple": (0.77, 0.52, 0.58),
    "grey": (0.60, 0.04, 0.52),
    "darkgrey": (0.60, 0.05, 0.22),
    "white": (0.60, 0.05, 0.94),
}

# How strongly each texture modulates brightness: pixel = colour * (1 - c * (1 - t)), t in [0, 1].
TEXTURE_CONTRAST = {
    "smooth": 0.12, "gradient": 0.35, "hstripes": 0.45, "vstripes": 0.45, "dstripes": 0.5,
    "waves": 0.45, "dots": 0.5, "checker": 0.45, "bricks": 0.55, "blobs": 0.45, "speckle": 0.45,
}

# class name -> (colour family, texture family) of its main part.
APPEARANCE: Dict[str, Tuple[str, str]] = {
    "sky": ("skyblue", "gradient"), "grass": ("green", "speckle"), "water": ("blue", "waves"),
    "sand": ("tan", "speckle"), "road": ("grey", "blobs"), "wall": ("white", "smooth"),
    "forest": ("darkgreen", "blobs"), "snow": ("white", "blobs"), "brick": ("red", "bricks"),
    "carpet": ("purple", "dstripes"),
    "ball": ("red", "smooth"), "box": ("brown", "hstripes"), "kite": ("orange", "dstripes"),
    "star": ("yellow", "smooth"), "ring": ("cyan", "dots"), "cross": ("magenta", "checker"),
    "house": ("tan", "hstripes"), "tree": ("green", "blobs"), "boat": ("white", "hstripes"),
    "car": ("blue", "smooth"), "flower": ("magenta", "dots"), "fish": ("orange", "waves"),
    "lamp": ("yellow", "gradient"), "sign": ("cyan", "vstripes"),
}
# Secondary parts of composite things borrow the appearance of other classes' parts on purpose
# (brown trunk ~ box, grey pole ~ road, white sail ~ wall), as parts are shared in real scenes.
PART_APPEARANCE: Dict[str, Tuple[str, str]] = {
    "roof": ("brown", "smooth"), "door": ("darkgrey", "smooth"), "trunk": ("brown", "smooth"),
    "sail": ("white", "smooth"), "pole": ("grey", "smooth"), "wheel": ("darkgrey", "smooth"),
    "window": ("skyblue", "smooth"), "centre": ("yellow", "smooth"), "stem": ("green", "smooth"),
    "eye": ("darkgrey", "smooth"),
}
# Vertical order of stuff in "bands" layouts (0 = top of the image).
ALTITUDE = {"sky": 0.0, "forest": 1.0, "wall": 1.0, "brick": 1.5, "snow": 2.0, "water": 2.0,
            "grass": 3.0, "sand": 3.0, "road": 3.5, "carpet": 4.0}
# Relative size of a thing instance (half-extent multiplier).
THING_SCALE = {"ball": 0.85, "box": 0.9, "kite": 1.0, "star": 1.05, "ring": 0.9, "cross": 1.05,
               "house": 1.3, "tree": 1.3, "boat": 1.2, "car": 1.1, "flower": 1.1, "fish": 1.05,
               "lamp": 1.35, "sign": 1.1}
# Things that stay upright (small tilt only); the others get any rotation.
UPRIGHT = {"house", "tree", "boat", "car", "flower", "lamp", "sign", "fish"}


@dataclass(frozen=True)
class Theme:
    name: str
    stuff: Dict[str, float]    # stuff class -> selection weight
    things: Dict[str, float]   # thing class -> selection weight
    layouts: Tuple[float, float, float]  # probabilities of bands / voronoi / blobs


THEMES = (
    Theme("beach", {"sky": .95, "sand": .95, "water": .9, "grass": .15},
          {"ball": 1, "boat": 1, "kite": 1, "fish": .6, "sign": .5, "star": .3, "flower": .2}, (.55, .15, .30)),
    Theme("city", {"sky": .8, "road": .95, "wall": .7, "brick": .6},
          {"car": 1.2, "house": 1, "lamp": 1, "sign": 1, "box": .5, "tree": .5, "cross": .3}, (.5, .3, .2)),
    Theme("park", {"sky": .9, "grass": .95, "forest": .6, "road": .3, "sand": .2},
          {"tree": 1.2, "flower": 1, "ball": .7, "kite": .7, "house": .5, "lamp": .4, "ring": .3}, (.5, .2, .3)),
    Theme("winter", {"sky": .9, "snow": .95, "forest": .6, "water": .2},
          {"tree": 1, "house": 1, "star": .7, "lamp": .5, "ring": .5, "sign": .4, "car": .3}, (.5, .2, .3)),
    Theme("indoor", {"wall": .95, "carpet": .9, "brick": .5},
          {"box": 1, "ball": .8, "lamp": .8, "star": .6, "ring": .6, "cross": .6, "flower": .5}, (.6, .3, .1)),
    Theme("harbour", {"sky": .9, "water": .95, "road": .6, "brick": .5, "wall": .4},
          {"boat": 1.2, "fish": .8, "lamp": .6, "house": .6, "box": .6, "cross": .5, "sign": .5}, (.5, .3, .2)),
)

_STUFF = [c.name for c in TOYSCENES_CLASSES if c.kind == "stuff"]
_THINGS = [c.name for c in TOYSCENES_CLASSES if c.kind == "thing"]


# ------------------------------------------------------------------------------------------------
# Textures: float32 maps in [0, 1] over the whole (H, W) grid
# ------------------------------------------------------------------------------------------------
def value_noise(rng: np.random.Generator, size: int, cells: float) -> np.ndarray:
    """Smooth random field (size, size) in [0, 1]: a random lattice of ``cells`` cells per side,
    interpolated with a smoothstep (classic value noise)."""
    n = int(np.ceil(cells)) + 2
    lattice = rng.random((n, n), dtype=np.float32)
    g = np.arange(size, dtype=np.float32) * np.float32(cells / size) + rng.random(2, dtype=np.float32)[:, None]
    fl = np.floor(g)
    f, i = g - fl, fl.astype(np.int64)
    f = f * f * (3 - 2 * f)
    # Separable: interpolate the lattice rows along x (n, W), then those rows along y (H, W).
    rows = lattice[:, i[1]] * (1 - f[1]) + lattice[:, i[1] + 1] * f[1]
    fy = f[0][:, None]
    return rows[i[0]] * (1 - fy) + rows[i[0] + 1] * fy


def _rotated(yy: np.ndarray, xx: np.ndarray, angle: float) -> Tuple[np.ndarray, np.ndarray]:
    """Coordinates along (a) and across (b) the direction ``angle`` (radians)."""
    c, s = np.cos(angle), np.sin(angle)
    return xx * c + yy * s, -xx * s + yy * c


def texture(kind: str, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: int) -> np.ndarray:
    """Texture map (H, W) float32 in [0, 1]; periods scale with the image size (reference 128 px)."""
    s = size / 128.0
    two_pi = np.float32(2 * np.pi)
    if kind == "smooth":
        return value_noise(rng, size, 2.0)
    if kind == "gradient":
        _, b = _rotated(yy, xx, rng.normal(0, 0.2))  # b grows downwards: light top, darker bottom
        return np.clip(1.0 - b / size, 0, 1).astype(np.float32)
    if kind in ("hstripes", "vstripes", "dstripes", "waves"):
        base = {"hstripes": 0.0, "vstripes": np.pi / 2, "dstripes": np.pi / 4 * rng.choice([-1, 1]),
                "waves": 0.0}[kind]
        period = s * rng.uniform(*{"hstripes": (5, 8), "vstripes": (4, 7), "dstripes": (6, 9),
                                   "waves": (6, 9)}[kind])
        a, b = _rotated(yy, xx, base + rng.normal(0, 0.12))
        if kind == "waves":
            b = b + s * rng.uniform(1.5, 3.0) * np.sin(two_pi * a / (s * rng.uniform(14, 24)) + rng.uniform(0, 7))
        return (0.5 + 0.5 * np.sin(two_pi * b / period + rng.uniform(0, 7))).astype(np.float32)
    if kind == "dots":
        period = s * rng.uniform(6, 9)
        a, b = _rotated(yy, xx, rng.uniform(0, np.pi))
        da = (a / period + rng.random()) % 1.0 - 0.5
        db = (b / period + rng.random()) % 1.0 - 0.5
        d = np.sqrt(da * da + db * db) * period
        r = rng.uniform(0.25, 0.35) * period
        return np.clip(r - d + 0.5, 0, 1).astype(np.float32)  # 1 inside a dot, soft 1 px edge
    if kind == "checker":
        period = s * rng.uniform(7, 11)
        a, b = _rotated(yy, xx, rng.normal(0, 0.15))
        return ((np.floor(a / period + rng.random()) + np.floor(b / period + rng.random())) % 2).astype(np.float32)
    if kind == "bricks":
        h = s * rng.uniform(5, 8)
        w = h * rng.uniform(2.0, 2.6)
        a, b = _rotated(yy, xx, rng.normal(0, 0.05))
        row = np.floor(b / h + rng.random())
        shifted = a + (row % 2) * (w / 2)
        col = np.floor(shifted / w)
        mortar = ((b / h + 1) % 1.0 < 1.2 / h) | ((shifted / w) % 1.0 < 1.2 / w)
        shade = rng.uniform(0.55, 1.0, size=(64, 64)).astype(np.float32)
        t = shade[row.astype(np.int64) % 64, col.astype(np.int64) % 64]
        return np.where(mortar, np.float32(0.0), t)
    if kind == "blobs":
        n = value_noise(rng, size, rng.uniform(5, 9))
        return (1 / (1 + np.exp(-10 * (n - 0.5)))).astype(np.float32)
    if kind == "speckle":
        fine = value_noise(rng, size, size / (2.0 * s))
        return np.clip(0.5 + 1.6 * (fine - 0.5) + 0.2 * (value_noise(rng, size, 4) - 0.5), 0, 1).astype(np.float32)
    raise ValueError(f"Unknown texture '{kind}'")


def _jittered_rgb(rng: np.random.Generator, family: str) -> np.ndarray:
    """Per-image colour of a family: hue, saturation and value jittered (families then overlap a little)."""
    h, s, v = COLOURS[family]
    h = (h + rng.normal(0, 0.018)) % 1.0
    s = float(np.clip(s * rng.uniform(0.8, 1.15), 0, 1))
    v = float(np.clip(v * rng.uniform(0.85, 1.1), 0, 1))
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32) * 255


def _appearance_map(rng, family: str, tex: str, yy, xx, size) -> np.ndarray:
    """Colour image (H, W, 3) float32 of one appearance over the whole grid."""
    rgb = _jittered_rgb(rng, family)
    c = TEXTURE_CONTRAST[tex] * rng.uniform(0.7, 1.1)
    t = texture(tex, rng, yy, xx, size)
    return rgb[None, None, :] * (1 - c * (1 - t))[..., None]


# ------------------------------------------------------------------------------------------------
# Stuff layouts: label maps (H, W) of indices into the chosen stuff list
# ------------------------------------------------------------------------------------------------
def _bands(rng, k: int, size: int, xx, yy, wavy: float) -> np.ndarray:
    """k horizontal bands separated by wavy curves; returns band index 0..k-1 (0 = top)."""
    frac = 0.1 + (1 - 0.1 * k) * rng.dirichlet(np.full(k, 2.0))
    cuts = np.cumsum(frac)[:-1]
    x = xx[0] / size  # (W,)
    idx = np.zeros(yy.shape, dtype=np.int64)
    for c in cuts:  # loop over <= 3 boundaries, each vectorised over the image
        curve = c + wavy * rng.uniform(0.2, 1.0) * (
            np.sin(2 * np.pi * rng.uniform(0.4, 1.6) * x + rng.uniform(0, 7))
            + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * x + rng.uniform(0, 7))
        ) + rng.normal(0, 0.04) * (x - 0.5)
        idx += yy > (curve * size)[None, :]
    return idx


def _voronoi(rng, k: int, size: int, xx, yy) -> np.ndarray:
    """Domain-warped Voronoi cells, each assigned one of k classes (each class >= 1 cell)."""
    cells = k + int(rng.integers(0, 3))
    owner = np.concatenate([np.arange(k), rng.integers(0, k, cells - k)])
    seeds = rng.uniform(0.05, 0.95, size=(cells, 2)) * size
    warp = 0.12 * size
    wy = yy + warp * (value_noise(rng, size, 3) - 0.5)
    wx = xx + warp * (value_noise(rng, size, 3) - 0.5)
    aniso = rng.uniform(0.6, 1.6)
    d = (wy[None] - seeds[:, 0, None, None]) ** 2 * aniso + (wx[None] - seeds[:, 1, None, None]) ** 2
    return owner[np.argmin(d, axis=0)]


def _stuff_layout(rng, stuff: List[str], theme: Theme, size: int, xx, yy) -> np.ndarray:
    """Label map (H, W) of class ids for the stuff classes (ordered by altitude where banded)."""
    k = len(stuff)
    layout = rng.choice(3, p=theme.layouts)
    # Altitude order with random tie breaks, so sky stays on top and floors at the bottom.
    order = sorted(stuff, key=lambda n: ALTITUDE[n] + rng.uniform(0, 0.6))
    ids = np.array([CLASS_IDS[n] for n in order])
    wavy = 0.012 if theme.name == "indoor" else 0.05
    if layout == 0 or k == 1:
        return ids[_bands(rng, k, size, xx, yy, wavy)]
    if layout == 1:
        return ids[_voronoi(rng, k, size, xx, yy)]
    # Bands of k-1 classes plus noise-thresholded patches of the remaining one (puddles, snow patches).
    patch = int(rng.integers(0, k))
    rest = np.delete(ids, patch)
    lab = rest[_bands(rng, k - 1, size, xx, yy, wavy)]
    n = value_noise(rng, size, rng.uniform(2.5, 5))
    lab[n > np.quantile(n, 1 - rng.uniform(0.15, 0.35))] = ids[patch]
    return lab


# ------------------------------------------------------------------------------------------------
# Thing shapes in local coordinates (u right, v down, unit half-extent)
# ------------------------------------------------------------------------------------------------
def thing_parts(name: str, u: np.ndarray, v: np.ndarray) -> List[Tuple[np.ndarray, str]]:
    """Boolean masks of the parts of a thing (painted in order) with their appearance key
    ("main" = the class's own appearance, else a key of PART_APPEARANCE). u, v: (h, w) arrays."""
    rho = np.sqrt(u * u + v * v)
    phi = np.arctan2(v, u)
    au, av = np.abs(u), np.abs(v)
    if name == "ball":
        return [(rho <= 1.0, "main")]
    if name == "box":
        return [((au <= 0.9) & (av <= 0.75), "main")]
    if name == "kite":
        return [(au / 0.65 + np.where(v < 0, -v / 0.7, v / 1.25) <= 1.0, "main")]
    if name == "star":
        return [(rho <= 0.42 + 0.58 * ((0.5 + 0.5 * np.cos(5 * phi + np.pi / 2)) ** 3), "main")]
    if name == "ring":
        return [((rho <= 1.0) & (rho >= 0.58), "main")]
    if name == "cross":
        return [(((au <= 0.24) & (av <= 1.0)) | ((np.abs(v + 0.3) <= 0.24) & (au <= 0.75)), "main")]
    if name == "house":
        body = (au <= 0.72) & (v >= 0) & (v <= 1.0)
        roof = (v < 0) & (v >= -0.8) & (au <= 0.95 * (v + 0.8) / 0.8)
        door = (au <= 0.17) & (v >= 0.5) & (v <= 1.0)
        return [(body, "main"), (roof, "roof"), (door, "door")]
    if name == "tree":
        pc = np.sqrt(u * u + (v + 0.35) ** 2)
        crown = pc <= 0.62 * (1 + 0.12 * np.cos(7 * np.arctan2(v + 0.35, u)))
        trunk = (au <= 0.14) & (v >= 0.1) & (v <= 1.0)
        return [(trunk, "trunk"), (crown, "main")]
    if name == "boat":
        hull = (v >= 0.35) & (v <= 0.75) & (au <= 1.0 - (v - 0.35) * 0.9)
        sail = (v >= -0.95) & (v <= 0.28) & (u >= 0.07) & (u <= 0.75 * (v + 0.95) / 1.23)
        mast = (au <= 0.05) & (v >= -0.95) & (v <= 0.35)
        return [(hull, "main"), (sail, "sail"), (mast, "pole")]
    if name == "car":
        body = (au <= 1.0) & (v >= -0.05) & (v <= 0.45)
        cabin = (v >= -0.5) & (v < -0.05) & (au <= 0.38 + 0.27 * (v + 0.5) / 0.45)
        window = (v >= -0.42) & (v < -0.1) & (au <= 0.3 + 0.2 * (v + 0.42) / 0.32) & (au >= 0.05)
        wheels = ((au - 0.6) ** 2 + (v - 0.45) ** 2) <= 0.22 ** 2
        return [(body | cabin, "main"), (window, "window"), (wheels, "wheel")]
    if name == "flower":
        pv = v + 0.35
        pr = np.sqrt(u * u + pv * pv)
        petals = pr <= 0.6 * (0.6 + 0.4 * np.abs(np.cos(3 * np.arctan2(pv, u))))
        stem = (au <= 0.06) & (v >= -0.1) & (v <= 1.0)
        return [(stem, "stem"), (petals, "main"), (pr <= 0.17, "centre")]
    if name == "fish":
        body = ((u + 0.15) / 0.75) ** 2 + (v / 0.42) ** 2 <= 1.0
        tail = (u >= 0.45) & (u <= 1.0) & (av <= (u - 0.45) * 1.0)
        eye = ((u + 0.55) ** 2 + (v + 0.08) ** 2) <= 0.07 ** 2
        return [(body | tail, "main"), (eye, "eye")]
    if name == "lamp":
        pole = ((au <= 0.06) & (v >= -0.55) & (v <= 1.0)) | ((au <= 0.3) & (v >= 0.88) & (v <= 1.0))
        bulb = (u * u + (v + 0.7) ** 2) <= 0.3 ** 2
        return [(pole, "pole"), (bulb, "main")]
    if name == "sign":
        board = (au <= 0.72) & (v >= -1.0) & (v <= -0.2)
        post = (au <= 0.06) & (v > -0.2) & (v <= 1.0)
        return [(post, "pole"), (board, "main")]
    raise ValueError(f"Unknown thing '{name}'")


# ------------------------------------------------------------------------------------------------
# One scene
# ------------------------------------------------------------------------------------------------
def _weighted_sample(rng, weights: Dict[str, float], n: int) -> List[str]:
    names = list(weights)
    p = np.array([weights[k] for k in names], dtype=np.float64)
    n = min(n, len(names))
    return [names[i] for i in rng.choice(len(names), size=n, replace=False, p=p / p.sum())]


def _choose_classes(rng) -> Tuple[Theme, List[str], List[str]]:
    theme = THEMES[int(rng.integers(len(THEMES)))]
    k = min(int(rng.choice([2, 3, 4], p=[0.4, 0.42, 0.18])), len(theme.stuff))
    stuff = _weighted_sample(rng, theme.stuff, k)
    if rng.random() < 0.12:  # an out-of-theme stuff class keeps co-occurrence from being rigid
        others = [s for s in _STUFF if s not in stuff]
        stuff[int(rng.integers(k))] = others[int(rng.integers(len(others)))]
    m = int(rng.integers(max(1, 3 - k), min(5, 8 - k) + 1))
    things = _weighted_sample(rng, theme.things, m)
    if rng.random() < 0.2:
        others = [t for t in _THINGS if t not in things]
        things[int(rng.integers(len(things)))] = others[int(rng.integers(len(others)))]
    return theme, stuff, things


def _void_borders(label: np.ndarray, width: int) -> np.ndarray:
    """Boundary mask (H, W): pixels whose right/lower (width 1) or any 4-neighbour (width 2) differs."""
    b = np.zeros(label.shape, dtype=bool)
    dy = label[1:, :] != label[:-1, :]
    dx = label[:, 1:] != label[:, :-1]
    b[:-1, :] |= dy
    b[:, :-1] |= dx
    if width >= 2:
        b[1:, :] |= dy
        b[:, 1:] |= dx
    return b


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an (H, W, C) float image with edge padding."""
    r = max(1, int(np.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2).astype(np.float32)
    k /= k.sum()
    pad = np.pad(img, ((r, r), (0, 0), (0, 0)), mode="edge")
    img = sum(k[i] * pad[i:i + img.shape[0]] for i in range(2 * r + 1))
    pad = np.pad(img, ((0, 0), (r, r), (0, 0)), mode="edge")
    return sum(k[i] * pad[:, i:i + img.shape[1]] for i in range(2 * r + 1))


def render_scene(rng: np.random.Generator, size: int = 128) -> Tuple[np.ndarray, np.ndarray, dict]:
    """One ToyScenes image.

    Returns ``image`` uint8 (size, size, 3) RGB before JPEG coding, ``label`` uint8 (size, size) with
    class ids 0..23 and 255 = void, and ``info`` ({"theme", "classes"}). Retries the layout (same
    rng stream, so still deterministic) until 3..8 classes are visible with enough pixels each.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    min_px = max(12, int(0.004 * size * size))
    for _ in range(50):
        theme, stuff, things = _choose_classes(rng)
        label = _stuff_layout(rng, stuff, theme, size, xx, yy).astype(np.uint8)
        image = np.zeros((size, size, 3), dtype=np.float32)
        for name in stuff:
            m = label == CLASS_IDS[name]
            image[m] = _appearance_map(rng, *APPEARANCE[name], yy, xx, size)[m]

        # Thing instances, painted in a random interleaved order so they occlude each other.
        instances = [(name, j) for name in things for j in range(int(rng.integers(1, 4 if name in ("flower", "fish", "star") else 3)))]
        if rng.random() < 0.3:  # unlabeled clutter objects (void), as "other" pixels in real data
            instances += [("clutter", j) for j in range(int(rng.integers(1, 3)))]
        rng.shuffle(instances)
        maps: Dict[str, np.ndarray] = {}
        for name, _j in instances:
            _paint_instance(rng, name, size, image, label, maps, yy, xx)

        # Tiny visible fragments are not worth a label (as annotators do): make them void.
        counts = np.bincount(label.ravel(), minlength=256)
        tiny = np.flatnonzero((counts > 0) & (counts < min_px))
        tiny = tiny[tiny != IGNORE]
        if tiny.size:
            label[np.isin(label, tiny)] = IGNORE
        label[_void_borders(label, 1 if rng.random() < 0.6 else 2)] = IGNORE
        present = np.flatnonzero(np.bincount(label.ravel(), minlength=256)[:NUM_CLASSES] > 0)
        if 3 <= present.size <= 8:
            break
    else:  # pragma: no cover - the class choice makes this practically impossible
        raise RuntimeError("ToyScenes: could not draw a scene with 3..8 visible classes")
    image = _photometric(rng, image, size)
    return image, label, {"theme": theme.name, "classes": present.tolist()}


def _paint_instance(rng, name: str, size: int, image, label, maps, yy, xx) -> None:
    """Rasterise one thing (or void clutter) into ``image``/``label`` in place, inside its bbox."""
    clutter = name == "clutter"
    r = size * rng.uniform(0.07, 0.2) * (1.0 if clutter else THING_SCALE[name])
    cy = size * rng.uniform(0.15, 0.92)
    cx = size * rng.uniform(0.03, 0.97)
    angle = rng.normal(0, 0.15) if (name in UPRIGHT) else rng.uniform(0, 2 * np.pi)
    aspect = rng.uniform(0.75, 1.3)
    flip = -1.0 if (name == "fish" and rng.random() < 0.5) else 1.0
    ext = 1.9 * r * max(aspect, 1 / aspect)
    y0, y1 = int(max(0, cy - ext)), int(min(size, cy + ext + 1))
    x0, x1 = int(max(0, cx - ext)), int(min(size, cx + ext + 1))
    if y1 <= y0 or x1 <= x0:
        return
    dy, dx = yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx
    c, s = np.cos(angle), np.sin(angle)
    u = flip * (dx * c + dy * s) / (r * aspect)
    v = (-dx * s + dy * c) / (r / aspect)
    if clutter:
        rho = np.sqrt(u * u + v * v)
        phi = np.arctan2(v, u)
        wob = rng.uniform(0, 0.3, 3)
        shape = rho <= 0.8 + wob[0] * np.cos(2 * phi + 1) + wob[1] * np.cos(3 * phi + 2) + wob[2] * np.cos(5 * phi)
        fam = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        tex = list(TEXTURE_CONTRAST)[int(rng.integers(len(TEXTURE_CONTRAST)))]
        parts, apps = [(shape, "clutter")], {"clutter": (fam, tex)}
        lab_value = IGNORE
    else:
        parts, apps = thing_parts(name, u, v), None
        lab_value = CLASS_IDS[name]
    shade = (1 + 0.12 * np.clip(-(u + v) / 2, -1, 1))[..., None]  # light from the top-left
    win_img, win_lab = image[y0:y1, x0:x1], label[y0:y1, x0:x1]
    for mask, part in parts:
        if not mask.any():
            continue
        key = part if clutter else (name if part == "main" else part)
        if key not in maps:  # one appearance map per class/part per image (consistent colour)
            fam, tex = apps[part] if clutter else (APPEARANCE[name] if part == "main" else PART_APPEARANCE[part])
            maps[key] = _appearance_map(rng, fam, tex, yy, xx, size)
        win_img[mask] = (maps[key][y0:y1, x0:x1] * shade)[mask]
        win_lab[mask] = lab_value
    if clutter:
        maps.pop("clutter", None)  # each clutter object looks different


def _photometric(rng, image: np.ndarray, size: int) -> np.ndarray:
    """Camera-like nuisance: colour cast, brightness/contrast, illumination ramp, blur, noise."""
    gains = 1 + rng.normal(0, 0.06, 3).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    ang = rng.uniform(0, 2 * np.pi)
    ramp = 1 + rng.uniform(0, 0.25) * ((xx - 0.5) * np.cos(ang) + (yy - 0.5) * np.sin(ang))
    contrast = rng.uniform(0.8, 1.15)
    img = image * gains * ramp[..., None]
    img = (img - 128) * contrast + 128 + rng.normal(0, 10)
    img = _gaussian_blur(img, rng.uniform(0.35, 0.85))
    img = img + rng.normal(0, rng.uniform(2.5, 7.0), img.shape).astype(np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------
# Dataset generation
# ------------------------------------------------------------------------------------------------
def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The independent random stream of one image (parallel generation = serial generation)."""
    return np.random.default_rng([seed, _SPLIT_IDS[split], index])


def _paths(root: str, split: str, i: int) -> Tuple[str, str]:
    stem = f"toy_{split}_{i:05d}"
    return (os.path.join(root, "images", split, stem + ".jpg"),
            os.path.join(root, "annotations", split, stem + ".png"))


def _generate_one(root: str, split: str, i: int, size: int, seed: int, resume: bool) -> Tuple[bool, List[int]]:
    """Write one image + label; returns (generated?, visible class ids)."""
    from PIL import Image

    from simformer.utils.io import atomic_path, read_label, save_label_png

    img_path, lbl_path = _paths(root, split, i)
    if resume and os.path.isfile(img_path) and os.path.isfile(lbl_path):
        lab = read_label(lbl_path)
        return False, np.flatnonzero(np.bincount(lab.ravel(), minlength=256)[:NUM_CLASSES]).tolist()
    rng = image_rng(seed, split, i)
    image, label, info = render_scene(rng, size)
    quality = int(rng.integers(86, 95))
    with atomic_path(img_path, ".jpg") as tmp:
        Image.fromarray(image, mode="RGB").save(tmp, format="JPEG", quality=quality)
    save_label_png(lbl_path, label)
    return True, info["classes"]


def _generate_chunk(args: Tuple[str, str, Sequence[int], int, int, bool]) -> List[Tuple[bool, List[int]]]:
    root, split, idx, size, seed, resume = args
    return [_generate_one(root, split, i, size, seed, resume) for i in idx]


def _params(num_train: int, num_val: int, size: int, seed: int) -> dict:
    return {"version": GENERATOR_VERSION, "num_train": int(num_train), "num_val": int(num_val),
            "size": int(size), "seed": int(seed)}


def _all_files_exist(root: str, params: dict) -> bool:
    for split, n in (("train", params["num_train"]), ("val", params["num_val"])):
        for i in range(n):
            if not all(os.path.isfile(p) for p in _paths(root, split, i)):
                return False
    return True


def _check_existing(path: str, params: dict, what: str) -> Optional[dict]:
    """The parameters recorded in ``path`` (None if absent); raises if they differ from ``params``."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is unreadable ({e}); delete the folder {os.path.dirname(path)} and generate again") from e
    old_params = {k: old.get(k) for k in params}
    if old_params != params:
        diff = ", ".join(f"{k}: {old_params[k]} (there) vs {params[k]} (asked)" for k in params if old_params[k] != params[k])
        raise ValueError(
            f"{os.path.dirname(path)} already holds {what} ToyScenes dataset with different parameters ({diff}). "
            "Pick another --root or delete that folder first."
        )
    return old


def generate_toyscenes(root: str, *, num_train: int = 1000, num_val: int = 200, size: int = 128, seed: int = 0,
                       workers: Optional[int] = None, progress: bool = True,
                       log: Callable[[str], None] = print) -> dict:
    """Generate ToyScenes into ``root`` (layout in docs/toyscenes.md) and return a summary.

    ``root/toyscenes.json`` (parameters, version, class statistics) is written last; when it matches
    and all files exist nothing is done. ``workers``: processes (None = automatic, 0/1 = serial);
    the output does not depend on it. Raises ``ValueError`` if ``root`` holds a dataset generated
    with other parameters.
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(f"num_train and num_val must be >= 1 (got {num_train}, {num_val})")
    if size < 32:
        raise ValueError(f"size must be >= 32 pixels (got {size}); the shapes need room")
    from simformer.utils.io import atomic_write_json

    root = os.path.expanduser(root)
    params = _params(num_train, num_val, size, seed)
    meta_path = os.path.join(root, "toyscenes.json")
    partial_path = os.path.join(root, ".toyscenes_in_progress.json")
    done = _check_existing(meta_path, params, "a")
    if done is not None and _all_files_exist(root, params):
        log(f"toyscenes: {root} is already complete ({num_train} train / {num_val} val, {size}px, seed {seed}); nothing to do")
        return {"root": root, "params": params, "generated": 0, "skipped": num_train + num_val,
                "seconds": 0.0, "class_image_counts": done.get("class_image_counts")}
    # Files of an interrupted run with the same parameters are complete (atomic writes) and reused.
    resume = _check_existing(partial_path, params, "an unfinished") is not None or done is not None
    os.makedirs(root, exist_ok=True)
    atomic_write_json(partial_path, params)

    from tqdm import tqdm

    if workers is None:
        workers = min(8, os.cpu_count() or 1) if num_train + num_val >= 64 else 0
    t0 = time.time()
    generated = 0
    counts = {s: np.zeros(NUM_CLASSES, dtype=np.int64) for s in SPLITS}
    bar = tqdm(total=num_train + num_val, desc="toyscenes", unit="img", disable=not progress)
    try:
        for split, n in (("train", num_train), ("val", num_val)):
            os.makedirs(os.path.join(root, "images", split), exist_ok=True)
            os.makedirs(os.path.join(root, "annotations", split), exist_ok=True)
            chunk = 16 if workers > 1 else n
            jobs = [(root, split, range(a, min(n, a + chunk)), size, seed, resume) for a in range(0, n, chunk)]
            if workers > 1:
                from concurrent.futures import ProcessPoolExecutor

                with ProcessPoolExecutor(max_workers=workers) as ex:
                    results = ex.map(_generate_chunk, jobs)
                    for res in results:
                        for gen, classes in res:
                            generated += gen
                            counts[split][classes] += 1
                        bar.update(len(res))
            else:
                for job in jobs:
                    for i in job[2]:
                        gen, classes = _generate_one(root, split, i, size, seed, resume)
                        generated += gen
                        counts[split][classes] += 1
                        bar.update(1)
    finally:
        bar.close()
    seconds = time.time() - t0
    names = [c.name for c in TOYSCENES_CLASSES]
    class_image_counts = {s: dict(zip(names, counts[s].tolist())) for s in SPLITS}
    atomic_write_json(os.path.join(root, "classes.json"), names)
    atomic_write_json(meta_path, {**params, "classes": names, "class_image_counts": class_image_counts,
                                  "generation_seconds": round(seconds, 2)})
    os.unlink(partial_path)
    rare = [n for n in names if counts["train"][CLASS_IDS[n]] < 0.05 * num_train]
    log(f"toyscenes: generated {generated}, reused {num_train + num_val - generated} images in {seconds:.1f}s "
        f"-> {root}" + (f" (classes in < 5% of training images: {', '.join(rare)})" if rare else ""))
    return {"root": root, "params": params, "generated": generated, "skipped": num_train + num_val - generated,
            "seconds": seconds, "class_image_counts": class_image_counts}
