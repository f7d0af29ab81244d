"""What the trainer does with its output folder before it writes anything: one writer at a time,
our own leftovers removed, and a decision on what is already there.

* The folder is locked (:func:`simformer.utils.run_dir.lock_run_dir`, ``OUTPUT_DIR/.lock``): a second
  ``train`` on the same ``--output`` refuses with a one-line message instead of deleting the first
  run's files. Trainers of one process share the lock (a pipeline trains its stages in turn).
* Stale ``.tmp-*`` files of an interrupted atomic write (``kill -9`` during a checkpoint) go.
* Without ``--resume``: a folder holding a checkpoint of the *same* config is resumed; any other
  earlier run (another config, or no checkpoint) is moved aside to ``OUTPUT_DIR.old-YYYYmmdd-HHMMSS``
  so that no old TensorBoard events or metrics lines mix with the new run. Both are logged.
* With ``--resume``: a config that differs from the saved ``config.yaml`` is refused (naming the keys)
  unless ``force_config`` (``--force-config``), which overwrites it.
"""
from __future__ import annotations

import datetime
import fnmatch
import logging
import os
import shutil
from typing import Dict, List, Optional, Tuple

import yaml

from simformer.utils.run_dir import RunLock, lock_run_dir, remove_stale_temps

from .checkpoint import LAST

logger = logging.getLogger("simformer")

# Files a training run writes into OUTPUT_DIR (moved aside together when a new run starts there).
# Other files (a sweep's stdout.log, sweep_run.json, FAILED, .lock) stay.
RUN_FILES = ("config.yaml", "run_info.json", "log.txt", "metrics.jsonl", "metrics.json", "per_class_iou.csv",
             LAST, "model_*.pth", "events.out.tfevents.*", "figures")
# Keys that may change between a run and its resumption: where it is written, how long ranks wait.
NOT_COMPARED = ("OUTPUT_DIR", "DIST_TIMEOUT_S")

_HELD: Dict[str, RunLock] = {}  # folder -> this process's lock on it


class ConfigMismatchError(ValueError):
    """``--resume`` with a config other than the run's ``config.yaml``."""


def acquire(folder: str) -> RunLock:
    """This process's lock on ``folder`` (taken once; later trainers of the process share it)."""
    key = os.path.realpath(folder)
    lock = _HELD.get(key)
    if lock is None or not lock.held:
        lock = _HELD[key] = lock_run_dir(folder)
    return lock


def release(folder: str) -> None:
    lock = _HELD.pop(os.path.realpath(folder), None)
    if lock is not None:
        lock.release()


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
    from simformer.config import get_cfg

    with open(saved_path) as f:
        saved = _flat(yaml.safe_load(f))
    new = _flat(yaml.safe_load(cfg.dump()))
    default = _flat(yaml.safe_load(get_cfg().dump()))
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


def _same_file(a, b) -> bool:
    """Two path values naming the same existing file ("splits/x.json" given relative by one run and
    absolute by a sweep), resolved as the runs resolve them (``simformer.config.resolve_path``)."""
    from simformer.config import resolve_path

    if not (isinstance(a, str) and isinstance(b, str) and a and b):
        return False
    a, b = resolve_path(a), resolve_path(b)
    return os.path.isfile(a) and os.path.isfile(b) and os.path.samefile(a, b)


def _run_files(folder: str) -> List[str]:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if any(fnmatch.fnmatch(n, p) for p in RUN_FILES))


def _checkpoint_iteration(folder: str) -> Optional[str]:
    marker = os.path.join(folder, LAST)
    if not os.path.isfile(marker):
        return None
    with open(marker) as f:
        name = f.read().strip()
    return name if name and os.path.isfile(os.path.join(folder, name)) else None


def move_aside(folder: str, names: List[str]) -> str:
    """Move ``names`` (run files) from ``folder`` into a new sibling ``folder.old-STAMP``; its path."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.normpath(folder) + f".old-{stamp}"
    target, n = base, 1
    while os.path.exists(target):
        n += 1
        target = f"{base}-{n}"
    os.makedirs(target)
    for name in names:
        shutil.move(os.path.join(folder, name), os.path.join(target, name))
    return target


def prepare(folder: str, cfg, *, resume: bool, force_config: bool, lock: RunLock) -> Tuple[bool, str]:
    """Decide how a training run starts in ``folder`` (rank 0, lock held): ``(resume, message)``.

    Raises :class:`ConfigMismatchError` for ``--resume`` with another config and no ``force_config``.
    """
    remove_stale_temps(folder, lock=lock)
    saved = os.path.join(folder, "config.yaml")
    diffs = config_differences(cfg, saved) if os.path.isfile(saved) else None
    checkpoint = _checkpoint_iteration(folder)
    if resume:
        if diffs:
            shown = "; ".join(diffs[:6]) + (f"; ... ({len(diffs)} keys)" if len(diffs) > 6 else "")
            if not force_config:
                raise ConfigMismatchError(
                    f"--resume: the config differs from {saved} ({shown}); pass --force-config to resume with the "
                    "new config (config.yaml is overwritten), or choose another --output")
            return True, f"--force-config: resuming with a config that differs from {saved} ({shown}); overwriting it"
        return True, ""
    if checkpoint is not None and diffs == []:
        return True, (f"{folder} holds a run of the same config (checkpoint {checkpoint}): resuming it. To start "
                      "over, delete the folder or choose another --output")
    names = _run_files(folder)
    if not names:
        return False, ""
    why = ("another config: " + "; ".join(diffs[:3]) + (" ..." if len(diffs) > 3 else "")) if diffs else \
        "no checkpoint to resume from" if checkpoint is None else "no config.yaml"
    target = move_aside(folder, names)
    return False, f"moved the earlier run in {folder} ({why}) to {target}; starting from iteration 0"
