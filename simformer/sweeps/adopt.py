"""``simformer sweep FILE --adopt DIR``: a new training run of the sweep takes a finished run found
under DIR (another sweep's output, say) whose saved config.yaml equals the config this run would
train with (seed and split included; only OUTPUT_DIR may differ), instead of training it again.

Training is deterministic for a given config, seed and thread count (README, "What a run depends
on"), so the copy is the run the sweep would have made with that thread count; the folder keeps
the source's run_info.json (commit, threads, versions) and its sweep_run.json names the source
(``adopted_from``). Files are copied one by one through a temp name, metrics.json last, under the
run's lock, so an interrupted adoption leaves the run "new" and a parallel sweep skips it.
"""
from __future__ import annotations

import os
import shutil
from typing import Callable, Dict, List, Optional, Sequence

from simformer.retrain import STAGE1
from simformer.utils.run_dir import SWEEP_FILES

from .spec import Run, SweepError
from .state import resolved_configs, run_state, try_lock, unlock


def finished_runs_under(root: str) -> List[str]:
    """Folders under ``root`` holding a finished training (metrics.json, model_final.pth and
    config.yaml); moved-aside ``.old-*`` folders and a pipeline's own folder (whose files are its
    stage 2's) excluded. A pipeline's stage folders are training runs and count, so another
    sweep can adopt a pipeline's stage 1."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if ".old-" not in d and not d.startswith("."))
        if {"metrics.json", "model_final.pth", "config.yaml"} <= set(files) and \
                not os.path.isdir(os.path.join(folder, STAGE1)):
            found.append(folder)
            dirs[:] = []
    return found


def find_same_config(run: Run, candidates: Sequence[str]) -> Optional[str]:
    """The first candidate folder whose config.yaml equals ``run``'s resolved config, or None."""
    from simformer.config.compare import config_differences

    (cfg, _), = resolved_configs(run)
    mine = os.path.realpath(run.run_dir)
    for folder in candidates:
        if os.path.realpath(folder) != mine and not config_differences(cfg, os.path.join(folder, "config.yaml")):
            return folder
    return None


def _saved_seed(folder: str) -> Optional[int]:
    import yaml

    from simformer.config.compare import SAFE_LOADER

    try:
        with open(os.path.join(folder, "config.yaml")) as f:
            return int((yaml.load(f, Loader=SAFE_LOADER) or {}).get("SEED"))
    except (OSError, yaml.YAMLError, TypeError, ValueError, AttributeError):
        return None


def _copy_run(source: str, run_dir: str) -> None:
    """Every file of ``source`` except the sweep's own, each via temp + rename, metrics.json last."""
    files = []
    for folder, dirs, names in os.walk(source):
        dirs.sort()
        rel = os.path.relpath(folder, source)
        files += [os.path.normpath(os.path.join(rel, n)) for n in sorted(names)
                  if not (rel == "." and n in SWEEP_FILES) and not n.startswith(".tmp-")]
    files.sort(key=lambda f: f == "metrics.json")
    for rel in files:
        target = os.path.join(run_dir, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = os.path.join(os.path.dirname(target), f".tmp-adopt-{os.path.basename(target)}")
        shutil.copy2(os.path.join(source, rel), tmp)
        os.replace(tmp, target)


def adopt_finished(runs: Sequence[Run], sources: Sequence[str], log: Callable[[str], None] = print) -> Dict[str, str]:
    """Adopt, for every new training run of ``runs``, a finished run with the same config found under
    ``sources``; returns {run name: source folder}."""
    from .launch import write_record

    for root in sources:  # a mistyped folder would silently train every run again
        if not os.path.isdir(root):
            raise SweepError(f"--adopt {root}: no such folder; name a folder holding finished runs (e.g. another "
                             "sweep's output), or leave out --adopt to train these runs")
    candidates = [f for root in sources for f in finished_runs_under(root)]
    seeds = {f: _saved_seed(f) for f in candidates}  # a cheap first filter
    adopted: Dict[str, str] = {}
    for run in runs:
        if run.stage != "train" or run_state(run) != "new":
            continue
        # files of an attempt that died before its first checkpoint: that run trains again instead
        if os.path.isdir(run.run_dir) and set(os.listdir(run.run_dir)) - set(SWEEP_FILES):
            continue
        source = find_same_config(run, [f for f in candidates if seeds[f] == run.seed])
        if source is None:
            continue
        fd = try_lock(run.run_dir)
        if fd is None:  # another sweep process took it meanwhile
            continue
        try:
            _copy_run(source, run.run_dir)
            write_record(run, [], resume=False, adopted_from=os.path.abspath(source))
        finally:
            unlock(fd)
        adopted[run.name] = source
        log(f"[adopt] {run.name} <- {source} (same config)")
    return adopted
