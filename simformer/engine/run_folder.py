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

from simformer.config.compare import config_differences
from simformer.utils.run_dir import RunLock, lock_run_dir, remove_stale_temps

from .checkpoint import LAST

logger = logging.getLogger("simformer")

# Files a training run writes into OUTPUT_DIR (moved aside together when a new run starts there).
# Other files (a sweep's stdout.log, sweep_run.json, FAILED, .lock) stay.
RUN_FILES = ("config.yaml", "run_info.json", "log.txt", "metrics.jsonl", "metrics.json", "per_class_iou.csv",
             LAST, "model_*.pth", "events.out.tfevents.*", "figures")

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
