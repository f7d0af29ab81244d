"""The meta-architecture registry: ``MODEL.META_ARCHITECTURE`` name -> builder.

A builder is ``fn(cfg, num_classes, split) -> nn.Module`` (``split`` None = every class base).
Modules register theirs with ``@register_meta_arch("Name")``; :mod:`simformer.modeling.meta_arch`
imports the built-in ones and builds from the config.
"""
from __future__ import annotations

from typing import Callable, Dict

META_ARCH_REGISTRY: Dict[str, Callable] = {}


def register_meta_arch(name: str) -> Callable[[Callable], Callable]:
    def deco(fn: Callable) -> Callable:
        if name in META_ARCH_REGISTRY and META_ARCH_REGISTRY[name] is not fn:
            raise KeyError(f"meta-architecture '{name}' is already registered")
        META_ARCH_REGISTRY[name] = fn
        return fn

    return deco
