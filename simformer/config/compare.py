"""Comparing a resolved config with a config.yaml a run saved: what resuming, adopting a finished
stage 1 and a sweep's "changed" state all decide on. Free of torch, so that a sweep's dry run stays fast."""
from __future__ import annotations

import functools
import os
from typing import Dict, List

import yaml

# Keys that may change between a run and its resumption: where it is written, how long ranks wait.
NOT_COMPARED = ("OUTPUT_DIR", "DIST_TIMEOUT_S")

# libyaml's loader when PyYAML has it (a sweep compares every run's config.yaml). The files read
# here are config.yaml files a run wrote with safe_dump; loading them is safe_load either way.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _flat(node, prefix: str = "") -> Dict[str, object]:
    out = {}
    for k, v in (node or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(cfg, saved_path: str) -> List[str]:
    """``KEY: saved -> new`` for every key whose value differs from ``saved_path`` (a config.yaml we
    wrote). A key missing from the saved file (written by an older version) counts only when the
    new value is not the default."""
    with open(saved_path) as f:
        saved = _flat(yaml.load(f, Loader=SAFE_LOADER))
    new = _flat(yaml.load(cfg.dump(), Loader=SAFE_LOADER))
    default = _default_flat()
    missing = object()
    diffs = []
    for key in sorted(set(saved) | set(new)):
        if key in NOT_COMPARED:
            continue
        old_v, new_v = saved.get(key, missing), new.get(key, missing)
        if old_v is missing:
            if new_v == default.get(key, missing):
                continue
            old_v = "(absent)"
        if new_v is missing:
            new_v = "(absent)"
        if old_v != new_v and not _same_file(old_v, new_v):
            diffs.append(f"{key}: {old_v!r} -> {new_v!r}")
    return diffs


@functools.lru_cache(maxsize=1)
def _default_flat() -> Dict[str, object]:
    from simformer.config import get_cfg

    return _flat(yaml.load(get_cfg().dump(), Loader=SAFE_LOADER))


def _same_file(a, b) -> bool:
    """Two path values naming the same existing file ("splits/x.json" given relative by one run and
    absolute by a sweep), resolved as the runs resolve them (``simformer.config.resolve_path``)."""
    from simformer.config import resolve_path

    if not (isinstance(a, str) and isinstance(b, str) and a and b):
        return False
    a, b = resolve_path(a), resolve_path(b)
    return os.path.isfile(a) and os.path.isfile(b) and os.path.samefile(a, b)
