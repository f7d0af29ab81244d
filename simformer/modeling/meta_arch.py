"""``build_model(cfg, num_classes, split)``: the model named by ``MODEL.META_ARCHITECTURE``.

Built-in meta-architectures: ``SimFormer`` (MaskFormer + weak-shot losses, ``simformer.py``) and
``CAM`` (the image-label baseline, ``cam.py``). A new one registers a builder with
``simformer.modeling.registry.register_meta_arch`` and is imported here.
"""
from __future__ import annotations

import contextlib
from typing import Optional

from torch import nn

from . import cam, simformer  # noqa: F401  (importing registers them)
from .registry import META_ARCH_REGISTRY


def build_model(cfg, num_classes: int, split: Optional[object] = None) -> nn.Module:
    """Build the model named by MODEL.META_ARCHITECTURE. ``split`` None = every class base."""
    name = cfg.MODEL.META_ARCHITECTURE
    if name not in META_ARCH_REGISTRY:
        names = " or ".join(f"'{n}'" for n in sorted(META_ARCH_REGISTRY))
        raise ValueError(f"MODEL.META_ARCHITECTURE must be {names}, got '{name}'")
    return META_ARCH_REGISTRY[name](cfg, num_classes, split)


@contextlib.contextmanager
def restricted_to_image_labels(model: nn.Module):
    """Inside, a model that can restrict its predictions to each image's image-level labels does
    so (CAM: ``use_image_labels``); other models are unchanged. Restored on exit."""
    had = getattr(model, "use_image_labels", None)
    if had is not None:
        model.use_image_labels = True
    try:
        yield model
    finally:
        if had is not None:
            model.use_image_labels = had
