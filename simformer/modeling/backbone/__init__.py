"""Backbones: registry, ResNet-50/101, EfficientNet-Lite0 and ImageNet weight loading.

    backbone = build_backbone(cfg)      # MODEL.BACKBONE.{NAME,WEIGHTS,FREEZE_AT}
    feats = backbone(x)                 # {"res2","res3","res4","res5"} at strides 4/8/16/32
"""
from .base import BACKBONE_REGISTRY, OUT_FEATURES, Backbone, FrozenBatchNorm2d
from .build import build_backbone
from .efficientnet import EfficientNetLite
from .resnet import ResNet
from .weights import load_backbone_weights

__all__ = [
    "BACKBONE_REGISTRY", "OUT_FEATURES", "Backbone", "FrozenBatchNorm2d", "build_backbone",
    "EfficientNetLite", "ResNet", "load_backbone_weights",
]
