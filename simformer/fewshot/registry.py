"""``build_method(name, cfg, **kwargs)``: a registered few-shot method by name.

Importing a method module registers its methods (``register_method``). The modules below are
imported on first use; one that is not installed in this checkout is simply not registered, while
an error inside a module that exists is raised as is.
"""
from __future__ import annotations

import importlib
import importlib.util
from typing import List

from .base import FEWSHOT_METHOD_REGISTRY, FewShotMethod

METHOD_MODULES = ("simformer.fewshot.methods", "simformer.fewshot.mm_former", "simformer.fewshot.gfsam")


def _import_methods() -> None:
    for module in METHOD_MODULES:
        if importlib.util.find_spec(module) is not None:
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
