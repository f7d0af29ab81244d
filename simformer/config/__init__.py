"""Config loading: fvcore CfgNode YAML with ``_BASE_`` inheritance and strict key checking.

    cfg = load_cfg("configs/toyscenes/simformer.yaml", ["SOLVER.MAX_ITER", "100"])

Every key in a YAML file or an override must exist in ``defaults.py`` or be a detectron2 /
MaskFormer / SimFormer-release key that ``d2compat.py`` translates or accepts; otherwise
``ConfigError`` names the key, the file (or "the command line") and the closest valid keys, for
all problems of the file chain at once. YAML is read with ``safe_yaml`` (no code runs; the
``!!python/object/apply:eval`` tag only for arithmetic / list comprehensions).
"""
from __future__ import annotations

import copy
import difflib
import os
from typing import Iterable, Sequence

import yaml
from fvcore.common.config import CfgNode
from yacs.config import _check_and_coerce_cfg_value_type

from .checks import check_cfg
from .d2compat import Entry, translate
from .defaults import _C
from .safe_yaml import load_yaml_text

__all__ = ["CfgNode", "ConfigError", "get_cfg", "load_cfg", "load_cfg_report", "dump_cfg"]

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


def _schema_node(key: str):
    """The default at ``key`` (a value or a CfgNode), or KeyError."""
    node = _C
    for part in key.split("."):
        if not isinstance(node, CfgNode) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def _is_leaf(key: str) -> bool:
    try:
        return not isinstance(_schema_node(key), CfgNode)
    except KeyError:
        return False


def _unknown_message(key: str, where: str) -> str:
    close = difflib.get_close_matches(key, _all_keys(_C), n=3, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return (f"Unknown config key '{key}' in {where}: not a simformer key (simformer/config/defaults.py) "
            f"nor a detectron2 / MaskFormer / SimFormer-release key (docs/detectron2.md).{hint}")


def _unknown_key_error(key: str, where: str) -> ConfigError:
    return ConfigError(_unknown_message(key, where))


def _read_yaml(path: str) -> dict:
    """The file's mapping (a fresh copy: callers pop ``_BASE_``). Each distinct text is parsed once
    per process: a sweep resolves every run's config, most of them through the same ``_BASE_`` files."""
    if not os.path.isfile(path):
        raise ConfigError(f"Config file not found: {path}")
    with open(path) as f:
        text = f.read()
    data = _PARSED.get(text)
    if data is None:
        try:
            data = load_yaml_text(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"Config file {path} is not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"Config file {path} must contain a mapping at top level.")
        if len(_PARSED) >= 256:
            _PARSED.clear()
        _PARSED[text] = data
    return copy.deepcopy(data)


_PARSED: dict = {}  # file text -> parsed mapping


def _decode(value):
    """detectron2 reads string values as Python literals where they parse (``SIZE: (512, 512)``)."""
    return CfgNode._decode_cfg_value(value) if isinstance(value, str) else value


def _flatten(data: dict, origin: str, rank: int, out: dict, problems: list, prefix: str = "") -> None:
    for k, v in data.items():
        full = f"{prefix}{k}"
        if isinstance(v, dict):
            if _is_leaf(full):
                problems.append(f"Config key '{full}' in {origin} is a single value, got a mapping {v!r}.")
            else:
                _flatten(v, origin, rank, out, problems, full + ".")
            continue
        try:
            node = _schema_node(full)
        except KeyError:
            node = None
        if isinstance(node, CfgNode) and v is None:  # an empty section (`MODEL:` with nothing under it)
            continue
        if isinstance(node, CfgNode):
            problems.append(f"Config key '{full}' in {origin} must be a mapping, got {v!r}.")
            continue
        out[full] = Entry(_decode(v), origin, rank)


def _collect_file(path: str, out: dict, problems: list, counter: list, seen: tuple = ()) -> None:
    """Flatten ``path`` after its ``_BASE_`` chain into ``out`` (later files win)."""
    path = os.path.abspath(path)
    if path in seen:
        raise ConfigError(f"Config file {path} inherits from itself through _BASE_: {seen}")
    data = _read_yaml(path)
    bases = data.pop(BASE_KEY, None)
    if bases:
        for base in [bases] if isinstance(bases, str) else bases:
            base_path = os.path.expanduser(str(base))
            if not os.path.isabs(base_path):
                base_path = os.path.join(os.path.dirname(path), base_path)
            _collect_file(base_path, out, problems, counter, seen + (path,))
    counter[0] += 1
    shown = os.path.relpath(path)
    _flatten(data, path if shown.startswith("..") else shown, counter[0], out, problems)


def _set_value(cfg: CfgNode, key: str, entry: Entry, problems: list) -> None:
    *parents, last = key.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    try:
        value = _check_and_coerce_cfg_value_type(entry.value, node[last], last, key)
    except ValueError:
        problems.append(f"Config key '{key}' in {entry.origin}: expected {type(node[last]).__name__} like the "
                        f"default {node[last]!r}, got {entry.value!r}.")
        return
    node[last] = value


def load_cfg_report(path: str | None = None, overrides: Sequence[str] = (),
                    freeze: bool = True) -> tuple[CfgNode, list[str]]:
    """``load_cfg`` that also returns the notes: translated, accepted and ignored foreign keys."""
    overrides = list(overrides)
    if len(overrides) % 2:
        raise ConfigError(
            f"Command-line overrides must be KEY VALUE pairs; got an odd number: {overrides}"
        )
    entries: dict = {}
    problems: list = []
    if path:
        _collect_file(path, entries, problems, [0])
    for key, value in zip(overrides[0::2], overrides[1::2]):
        _flatten(_nest(key, value), "the command line", 10**6, entries, problems)
    result = translate(entries, _is_leaf, lambda k, e: _unknown_message(k, e.origin))
    problems.extend(result.problems)
    cfg = get_cfg()
    for key, entry in result.values.items():
        if not _is_leaf(key):
            problems.append(_unknown_message(key, entry.origin))
            continue
        _set_value(cfg, key, entry, problems)
    if problems:
        where = path or "the command line"
        head = f"{len(problems)} problem(s) in config {where}:" if len(problems) > 1 else ""
        err = ConfigError("\n  ".join([head] + problems) if head else problems[0])
        err.problems = problems
        raise err
    check_cfg(cfg, where=path or "config")
    if freeze:
        cfg.freeze()
    return cfg, result.notes


def _nest(key: str, value):
    out: dict = {}
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def load_cfg(path: str | None = None, overrides: Sequence[str] = (), freeze: bool = True) -> CfgNode:
    """Defaults, then ``path`` (with its ``_BASE_`` chain), then ``KEY VALUE`` overrides.

    detectron2 / MaskFormer / SimFormer-release keys are translated or checked (d2compat.py);
    every problem of the file chain and the overrides is reported in one ConfigError.
    """
    return load_cfg_report(path, overrides, freeze)[0]


def apply_overrides(cfg: CfgNode, overrides: Iterable[str]) -> CfgNode:
    """Apply simformer-key ``KEY VALUE`` pairs to an existing cfg (no detectron2 translation)."""
    overrides = list(overrides)
    if len(overrides) % 2:
        raise ConfigError(
            f"Command-line overrides must be KEY VALUE pairs; got an odd number: {overrides}"
        )
    for key in overrides[0::2]:
        if not _is_leaf(key):
            raise _unknown_key_error(key, "the command line")
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
