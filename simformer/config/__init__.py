"""Config loading: fvcore CfgNode YAML with ``_BASE_`` inheritance and strict key checking.

    cfg = load_cfg("configs/toyscenes/simformer.yaml", ["SOLVER.MAX_ITER", "100"])

Every key in a YAML file or an override must exist in ``defaults.py``; otherwise
``ConfigError`` names the key, the file (or "command line") and the closest valid keys.
"""
from __future__ import annotations

import difflib
import os
from typing import Iterable, Sequence

import yaml
from fvcore.common.config import CfgNode

from .checks import check_cfg
from .defaults import _C

__all__ = ["CfgNode", "ConfigError", "get_cfg", "load_cfg", "dump_cfg"]

BASE_KEY = "_BASE_"


class ConfigError(ValueError):
    """A config file or override that cannot be applied; the message says where and why."""


def get_cfg() -> CfgNode:
    """A fresh copy of the defaults."""
    return _C.clone()


def _all_keys(node: CfgNode, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, CfgNode):
            keys.extend(_all_keys(v, full + "."))
    return keys


def _unknown_key_error(key: str, where: str) -> ConfigError:
    close = difflib.get_close_matches(key, _all_keys(_C), n=3, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return ConfigError(
        f"Unknown config key '{key}' in {where}. Every key must be defined in "
        f"simformer/config/defaults.py.{hint}"
    )


def _check_keys(data: dict, schema: CfgNode, where: str, prefix: str = "") -> None:
    for k, v in data.items():
        full = f"{prefix}{k}"
        if k not in schema:
            raise _unknown_key_error(full, where)
        if isinstance(schema[k], CfgNode):
            if not isinstance(v, dict):
                raise ConfigError(f"Config key '{full}' in {where} must be a mapping, got {v!r}.")
            _check_keys(v, schema[k], where, full + ".")


def _read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"Config file not found: {path}")
    with open(path) as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"Config file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must contain a mapping at top level.")
    return data


def _merge_file(cfg: CfgNode, path: str, seen: tuple[str, ...] = ()) -> None:
    path = os.path.abspath(path)
    if path in seen:
        raise ConfigError(f"Config file {path} inherits from itself through _BASE_: {seen}")
    data = _read_yaml(path)
    bases = data.pop(BASE_KEY, None)
    if bases:
        for base in [bases] if isinstance(bases, str) else bases:
            base_path = os.path.expanduser(base)
            if not os.path.isabs(base_path):
                base_path = os.path.join(os.path.dirname(path), base_path)
            _merge_file(cfg, base_path, seen + (path,))
    _check_keys(data, _C, path)
    try:
        cfg.merge_from_other_cfg(CfgNode(data))
    except (ValueError, KeyError) as e:
        raise ConfigError(f"Config file {path}: {e}") from e


def load_cfg(path: str | None = None, overrides: Sequence[str] = (), freeze: bool = True) -> CfgNode:
    """Defaults, then ``path`` (with its ``_BASE_`` chain), then ``KEY VALUE`` overrides."""
    cfg = get_cfg()
    if path:
        _merge_file(cfg, path)
    apply_overrides(cfg, overrides)
    check_cfg(cfg, where=path or "config")
    if freeze:
        cfg.freeze()
    return cfg


def apply_overrides(cfg: CfgNode, overrides: Iterable[str]) -> CfgNode:
    overrides = list(overrides)
    if len(overrides) % 2:
        raise ConfigError(
            f"Command-line overrides must be KEY VALUE pairs; got an odd number: {overrides}"
        )
    for key in overrides[0::2]:
        node = _C
        for part in key.split("."):
            if not isinstance(node, CfgNode) or part not in node:
                raise _unknown_key_error(key, "the command line")
            node = node[part]
    was_frozen = cfg.is_frozen()
    cfg.defrost()
    try:
        cfg.merge_from_list(overrides)
    except (ValueError, KeyError, AssertionError) as e:
        raise ConfigError(f"Command-line override: {e}") from e
    if was_frozen:
        cfg.freeze()
    return cfg


def resolve_path(path: str) -> str:
    """A relative path as given if it exists from the working directory, else relative to the
    simformer checkout (so ``splits/...`` in the shipped configs works from anywhere)."""
    if not path or os.path.isabs(path) or os.path.exists(path):
        return path
    from simformer.utils.env import checkout_root

    candidate = os.path.join(checkout_root(), path)
    return candidate if os.path.exists(candidate) else path


def dump_cfg(cfg: CfgNode, path: str) -> None:
    """Write the resolved config atomically (temp file + rename)."""
    from simformer.utils.io import atomic_write_text

    atomic_write_text(path, cfg.dump())
