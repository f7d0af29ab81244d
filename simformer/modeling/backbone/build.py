"""``build_backbone(cfg)``: the backbone named by MODEL.BACKBONE.NAME, with weights and freezing."""
from __future__ import annotations

import logging

from . import efficientnet, resnet  # noqa: F401  (importing registers the built-in backbones)
from .base import BACKBONE_REGISTRY, Backbone
from .weights import load_backbone_weights

__all__ = ["build_backbone"]

logger = logging.getLogger("simformer")


def build_backbone(cfg) -> Backbone:
    """Build MODEL.BACKBONE.NAME, load MODEL.BACKBONE.WEIGHTS (if set), apply FREEZE_AT."""
    name = cfg.MODEL.BACKBONE.NAME
    if name not in BACKBONE_REGISTRY:
        known = ", ".join(sorted(k for k, _ in BACKBONE_REGISTRY))
        raise KeyError(f"MODEL.BACKBONE.NAME = {name!r} is not a registered backbone; choose one of: {known}.")
    backbone = BACKBONE_REGISTRY.get(name)(cfg)
    if not isinstance(backbone, Backbone):
        raise TypeError(f"Backbone builder {name!r} returned {type(backbone).__name__}, not a Backbone.")
    weights = cfg.MODEL.BACKBONE.WEIGHTS
    if weights:
        load_backbone_weights(backbone, weights)
    else:
        logger.info("Backbone %s: random initialisation (MODEL.BACKBONE.WEIGHTS is empty).", name)
    backbone.freeze(int(cfg.MODEL.BACKBONE.FREEZE_AT))
    return backbone
