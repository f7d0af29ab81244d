"""ToyScenes: the embedded, procedurally generated default dataset (see docs/toyscenes.md).

The class list is fixed here; the generator below writes the same on-disk layout as the real
datasets (images/{train,val}/*.jpg, annotations/{train,val}/*.png, classes.json).
"""
from __future__ import annotations

from dataclasses import dataclass


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
