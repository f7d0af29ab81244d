"""The few-shot contract: what a method sees of an image (:class:`View`), what it returns, and the
method registry. Every few-shot method (``prototype``, ``oracle``, ``mm-match``, ``mm-former``,
``gfsam``) and every proposal source (a trained SimFormer/MaskFormer here; SAM + DINOv2 for a user
who has those checkpoints) meets here, so a method never touches a model or a data loader.

Shapes (H, W = the image's own size; h, w = a feature map's size at its stride):
- ``View.image``      float32 [3,H,W], RGB 0..255.
- ``View.proposals``  float32 [N,H,W], class-agnostic mask probabilities in [0, 1].
- ``View.scores``     float32 [N], each proposal's confidence (1 - p(no object) for a MaskFormer).
- ``View.features``   dict name -> float32 [C,h,w]: "res2".."res5" (backbone, strides 4..32) and
                      "mask_features" (pixel decoder, stride 4). Methods name the map they use.
- ``View.mask``       bool [H,W] on a support view: the class's pixels; None on the query.
- ``View.valid``      bool [H,W]: pixels that carry a label (void = False); None = all valid.

A method's ``predict(query, supports)`` returns the foreground probability float32 [H,W] of the
query; the evaluator thresholds it at 0.5 (``FOREGROUND_THRESHOLD``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Dict, Optional, Protocol, Sequence

import torch

FOREGROUND_THRESHOLD = 0.5


@dataclass(frozen=True)
class View:
    image: torch.Tensor
    proposals: torch.Tensor
    scores: torch.Tensor
    features: Dict[str, torch.Tensor] = field(default_factory=dict)
    mask: Optional[torch.Tensor] = None
    valid: Optional[torch.Tensor] = None

    def __post_init__(self):
        h, w = self.image.shape[-2:]
        if self.image.dim() != 3 or self.image.shape[0] != 3:
            raise ValueError(f"View.image must be [3,H,W], got {tuple(self.image.shape)}")
        if self.proposals.dim() != 3 or tuple(self.proposals.shape[-2:]) != (h, w):
            raise ValueError(f"View.proposals must be [N,{h},{w}], got {tuple(self.proposals.shape)}")
        if self.scores.shape != self.proposals.shape[:1]:
            raise ValueError(f"View.scores must be [{self.proposals.shape[0]}], got {tuple(self.scores.shape)}")
        for name, m in (("mask", self.mask), ("valid", self.valid)):
            if m is not None and tuple(m.shape) != (h, w):
                raise ValueError(f"View.{name} must be [{h},{w}], got {tuple(m.shape)}")

    @property
    def size(self) -> tuple:
        return tuple(self.image.shape[-2:])

    def with_mask(self, mask: torch.Tensor, valid: Optional[torch.Tensor] = None) -> "View":
        """This view as a support: ``mask`` bool [H,W] marks the class."""
        return replace(self, mask=mask.bool(), valid=None if valid is None else valid.bool())


class ProposalSource(Protocol):
    """image float32 [3,H,W] RGB 0..255 -> View (mask=None). A trained mask-classification model
    is one (``simformer.fewshot.proposals.ModelProposalSource``); a SAM automatic-mask generator +
    DINOv2 features is another, for users who have those checkpoints."""

    def __call__(self, image: torch.Tensor) -> View: ...


class FewShotMethod(Protocol):
    """One few-shot segmenter. ``predict`` -> float32 [H,W] query foreground probability."""

    name: str

    def predict(self, query: View, supports: Sequence[View]) -> torch.Tensor: ...


FEWSHOT_METHOD_REGISTRY: Dict[str, Callable[..., FewShotMethod]] = {}


def register_method(name: str) -> Callable[[Callable], Callable]:
    """``@register_method("name")`` on a builder ``fn(cfg, **kwargs) -> FewShotMethod``."""

    def deco(fn: Callable) -> Callable:
        if name in FEWSHOT_METHOD_REGISTRY and FEWSHOT_METHOD_REGISTRY[name] is not fn:
            raise KeyError(f"few-shot method '{name}' is already registered")
        FEWSHOT_METHOD_REGISTRY[name] = fn
        return fn

    return deco
