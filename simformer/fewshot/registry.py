"""``build_method(name, cfg, **kwargs)``: a registered few-shot method by name.

Importing a method module registers its methods (``register_method``); the built-in modules
below are imported on first use. A new method registers itself in its own module, listed here.
"""
from __future__ import annotations

import importlib
from typing import List

from .base import FEWSHOT_METHOD_REGISTRY, FewShotMethod

METHOD_MODULES = ("simformer.fewshot.methods", "simformer.fewshot.mm_former", "simformer.fewshot.gfsam")


def _import_methods() -> None:
    for module in METHOD_MODULES:
        importlib.import_module(module)


def available_methods() -> List[str]:
    """Names of every registered method, sorted."""
    _import_methods()
    return sorted(FEWSHOT_METHOD_REGISTRY)


def build_method(name: str, cfg, **kwargs) -> FewShotMethod:
    """The method ``name`` built from ``cfg`` (FEWSHOT.* keys); KeyError listing the known names."""
    _import_methods()
    if name not in FEWSHOT_METHOD_REGISTRY:
        raise KeyError(f"unknown few-shot method '{name}'; available: {sorted(FEWSHOT_METHOD_REGISTRY)}")
    method = FEWSHOT_METHOD_REGISTRY[name](cfg, **kwargs)
    if not getattr(method, "name", None):
        method.name = name
    return method
