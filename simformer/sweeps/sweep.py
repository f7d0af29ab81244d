"""Sweeps: expand a sweep file into runs, execute them resumably, collect one results table.

A sweep file (YAML, schema in ``docs/sweeps.md``) names a base config and axes -- methods (each a
config + overrides + stage), splits, seeds and any grid of ``KEY: values``. :func:`load_sweep`
validates it strictly and expands it into :class:`Run` objects in a deterministic order
(method, split, seed, then grid axes in file order). Every config a run will train with is loaded
with :func:`simformer.config.load_cfg` at expansion time, so a typo fails before anything runs.

A run lives in its own folder ``OUTPUT/<method>/<split>/seed<seed>[/<col>=<value>...]``; its state
is read from the files there:

==========  ===================================================================================
done        ``metrics.json`` and ``model_final.pth`` present: skipped
running     another sweep process or job holds the run's lock (``flock`` on ``RUN_DIR/.lock``): skipped
failed      ``FAILED`` present (exit code + log tail): reported, re-run only with ``retry_failed``
partial     ``last_checkpoint`` present (in the folder or one level down): resumed with --resume
new         none of these: started from scratch
changed     ``sweep_run.json`` records a different command spec than the sweep file now gives:
            refused (delete the folder, or its ``sweep_run.json`` to adopt the run as it is)
==========  ===================================================================================

Executors: :func:`run_local` (N subprocesses at a time, optional GPU assignment, Ctrl-C stops
children cleanly) and :func:`run_submitit` (one submitit job per run, submitted as a SLURM job
array; requeued after a timeout/preemption and resumed from its checkpoint). :func:`collect` turns
the finished runs into one table (``results.csv``) that ``simformer stats`` / ``plot`` read.
"""
from __future__ import annotations

import contextlib
import datetime
import difflib
import fnmatch
import itertools
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from simformer.utils.run_dir import LOCK_FD_ENV, stop_on_signals
from simformer.utils.threads import child_thread_env

SWEEP_KEYS = ("name", "output", "base_config", "opts", "methods", "splits", "seeds", "grid")
METHOD_KEYS = ("config", "opts", "stage", "retrain_config", "stage1_from")
GRID_KEYS = ("key", "values", "methods")
STAGES = ("train", "pipeline")
METRIC_COLUMNS = ("novel_miou", "base_miou", "miou", "hm", "fwiou", "macc", "pacc")
RESULT_COLUMNS = ("run", "method", "split", "seed") + METRIC_COLUMNS
TRAILING_COLUMNS = ("run_dir", "git_commit")
STATES = ("done", "running", "partial", "failed", "new", "changed")

FAILED_FILE = "FAILED"
LOCK_FILE = ".lock"
RECORD_FILE = "sweep_run.json"
LOG_FILE = "stdout.log"
LOG_TAIL_LINES = 40
# Environment variable: a command prefix used instead of ``python -m simformer`` (tests, wrappers).
RUNNER_ENV = "SIMFORMER_SWEEP_RUNNER"
# Distributed variables a child must not inherit (torchrun sets its own for its workers).
_DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
              "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SweepError(ValueError):
    """An invalid sweep file or sweep state; the message names the file, the entry and the fix."""


# ---------------------------------------------------------------------------------------------
# Data model
# ---------------------------------------------------------------------------------------------
@dataclass
class Run:
    """One training (or pipeline) run of a sweep.

    ``opts`` are the ``KEY VALUE`` overrides after ``--config`` (``OUTPUT_DIR`` is passed as
    ``--output run_dir``); ``params`` maps grid column -> value for the grid axes that apply to
    this run's method; ``fingerprint`` is the cwd-independent spec recorded in ``sweep_run.json``.
    """

    name: str
    run_dir: str
    method: str
    split: str
    seed: int
    params: Dict[str, Any]
    stage: str
    config: str
    opts: Tuple[str, ...]
    retrain_config: Optional[str] = None
    fingerprint: Dict[str, Any] = field(default_factory=dict)
    stage1_from: Optional[str] = None  # pipeline: run folder of the same seed/split of another method

    def args(self, resume: bool = False) -> List[str]:
        """Arguments after ``simformer``: ``STAGE --config C --output D [--resume] [...] KEY VALUE...``."""
        out = [self.stage, "--config", self.config, "--output", self.run_dir]
        if resume:
            out.append("--resume")
        if self.retrain_config:
            out += ["--retrain-config", self.retrain_config]
        if self.stage1_from:
            out += ["--stage1-from", self.stage1_from]
        return out + list(self.opts)


@dataclass
class Sweep:
    """A validated, expanded sweep file."""

    name: str
    path: str
    output: str
    runs: List[Run]
    grid_columns: List[str]

    def select(self, patterns: Optional[Sequence[str]]) -> List[Run]:
        """Runs whose name matches any of the shell-style ``patterns`` (all runs when none)."""
        if not patterns:
            return list(self.runs)
        chosen = [r for r in self.runs if any(fnmatch.fnmatchcase(r.name, p) for p in patterns)]
        if not chosen:
            raise SweepError(f"{self.path}: --only {' '.join(patterns)} matches none of the "
                             f"{len(self.runs)} runs (e.g. {self.runs[0].name if self.runs else '-'})")
        return chosen


@dataclass
class SweepReport:
    """What an executor did: run names per outcome; ``failed`` maps name -> one-line reason."""

    completed: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    failed: Dict[str, str] = field(default_factory=dict)
    submitted: List[str] = field(default_factory=list)
    busy: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


# ---------------------------------------------------------------------------------------------
# Parsing and expansion
# ---------------------------------------------------------------------------------------------
def _repo_root() -> str:
    import simformer

    return os.path.dirname(os.path.dirname(os.path.abspath(simformer.__file__)))


def _unknown(where: str, keys, allowed: Sequence[str]) -> SweepError:
    key = sorted(keys, key=str)[0]
    close = difflib.get_close_matches(str(key), allowed, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return SweepError(f"{where}: unknown key '{key}'.{hint} Allowed keys: {', '.join(allowed)}.")


def _resolve_file(value: Any, *, sweep_path: str, entry: str) -> str:
    """Absolute path of ``value``: as given if absolute, else relative to the sweep file's folder,
    the working directory, then the simformer checkout (first that exists)."""
    if not isinstance(value, str) or not value.strip():
        raise SweepError(f"{sweep_path}: {entry} must be a file path, got {value!r}")
    path = os.path.expanduser(value)
    if os.path.isabs(path):
        candidates = [path]
    else:
        candidates = [os.path.join(os.path.dirname(os.path.abspath(sweep_path)), path),
                      os.path.abspath(path), os.path.join(_repo_root(), path)]
    for c in candidates:
        if os.path.isfile(c):
            return os.path.normpath(os.path.abspath(c))
    looked = ", ".join(dict.fromkeys(os.path.normpath(c) for c in candidates))
    raise SweepError(f"{sweep_path}: {entry}: file not found: {value} (looked in {looked})")


def _value_str(value: Any) -> str:
    """A config override value as the string ``load_cfg`` parses back (literal_eval)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return repr([v for v in value])
    return repr(value)


def _value_label(value: Any) -> str:
    """Short text of a grid value for run names (``alpha=0.1``)."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return ",".join(_value_label(v) for v in value)
    return str(value)


def _parse_opts(raw: Any, *, where: str) -> List[Tuple[str, str]]:
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise SweepError(f"{where} must be a mapping KEY: VALUE (e.g. {{SOLVER.MAX_ITER: 600}}), got {raw!r}")
    out = []
    for key, value in raw.items():
        if not isinstance(key, str) or not key:
            raise SweepError(f"{where}: config key {key!r} must be a string such as SOLVER.MAX_ITER")
        if key == "OUTPUT_DIR":
            raise SweepError(f"{where}: OUTPUT_DIR is set per run by the sweep (use the sweep's 'output')")
        if isinstance(value, dict) or value is None:
            raise SweepError(f"{where}.{key}: value must be a scalar or a list, got {value!r}")
        out.append((key, _value_str(value)))
    return out


def _merge_opts(*groups: Sequence[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """Concatenate override groups; a later value of a key replaces (and moves) the earlier one."""
    merged: Dict[str, str] = {}
    for group in groups:
        for key, value in group:
            merged.pop(key, None)
            merged[key] = value
    return list(merged.items())


def _sanitize(component: str) -> str:
    return _UNSAFE.sub("_", component)


@dataclass
class _Axis:
    column: str
    key: str
    values: List[Any]
    methods: Optional[List[str]]


def _read_yaml(path: str) -> dict:
    import yaml

    if not os.path.isfile(path):
        raise FileNotFoundError(f"Sweep file not found: {path}")
    with open(path) as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise SweepError(f"Sweep file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise SweepError(f"Sweep file {path} must hold a mapping (name, base_config, methods, ...), got {type(data).__name__}")
    return data


def _parse_splits(raw: Any, *, path: str) -> Optional[List[Tuple[str, str, str]]]:
    """``[(name, as_written, absolute_path)]`` or None when the sweep has no split axis."""
    if raw is None:
        return None
    if isinstance(raw, dict):
        items = []
        for name, value in raw.items():
            if not isinstance(name, str) or not name or "/" in name:
                raise SweepError(f"{path}: splits: name {name!r} must be a non-empty string without '/'")
            items.append((name, value, _resolve_file(value, sweep_path=path, entry=f"splits.{name}")))
    elif isinstance(raw, list):
        files = [(v, _resolve_file(v, sweep_path=path, entry=f"splits[{i}]")) for i, v in enumerate(raw)]
        stems = [os.path.splitext(os.path.basename(a))[0] for _, a in files]
        names = []
        for (_, a), stem in zip(files, stems):
            # The parent folder disambiguates equal stems (more_novel/novel6 vs x/novel6).
            names.append(f"{os.path.basename(os.path.dirname(a))}/{stem}" if stems.count(stem) > 1 else stem)
        items = [(n, v, a) for n, (v, a) in zip(names, files)]
    else:
        raise SweepError(f"{path}: splits must be a list of split files or a mapping name -> file, got {raw!r}")
    if not items:
        raise SweepError(f"{path}: splits is empty (leave it out to use the configs' WEAKSHOT.SPLIT)")
    seen: Dict[str, str] = {}
    for name, written, absolute in items:
        if name in seen:
            raise SweepError(f"{path}: splits: two entries are both named '{name}' ({seen[name]} and {written}); "
                             "give them names with the mapping form `splits: {name: file}`")
        seen[name] = written
    return items


def _parse_seeds(raw: Any, *, path: str) -> Optional[List[int]]:
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        raise SweepError(f"{path}: seeds must be a non-empty list of integers, got {raw!r}")
    for s in raw:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise SweepError(f"{path}: seeds: {s!r} is not a non-negative integer")
    if len(set(raw)) != len(raw):
        raise SweepError(f"{path}: seeds has duplicates: {raw}")
    return list(raw)


def _parse_grid(raw: Any, *, path: str, methods: Sequence[str]) -> List[_Axis]:
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: grid must be a mapping column -> {{key: CONFIG.KEY, values: [...]}}, got {raw!r}")
    reserved = set(RESULT_COLUMNS) | set(TRAILING_COLUMNS)
    axes = []
    for column, spec in raw.items():
        where = f"{path}: grid.{column}"
        if not isinstance(column, str) or not _COLUMN.match(column):
            raise SweepError(f"{where}: the column name must be an identifier (letters, digits, _)")
        if column in reserved:
            raise SweepError(f"{where}: '{column}' is a reserved results column; pick another name")
        if not isinstance(spec, dict):
            raise SweepError(f"{where} must be a mapping {{key: CONFIG.KEY, values: [...]}}, got {spec!r}")
        if set(spec) - set(GRID_KEYS):
            raise _unknown(where, set(spec) - set(GRID_KEYS), GRID_KEYS)
        key, values = spec.get("key"), spec.get("values")
        if not isinstance(key, str) or not key:
            raise SweepError(f"{where}: 'key' must name a config key such as WEAKSHOT.DISTILL.LOSS_WEIGHT")
        if key in ("OUTPUT_DIR", "SEED", "WEAKSHOT.SPLIT"):
            raise SweepError(f"{where}: {key} is set by the sweep itself (use 'seeds' / 'splits' / 'output')")
        if not isinstance(values, list) or not values:
            raise SweepError(f"{where}: 'values' must be a non-empty list")
        for v in values:
            if v is None or isinstance(v, dict):
                raise SweepError(f"{where}: value {v!r} must be a scalar or a list")
        labels = [_value_label(v) for v in values]
        if len(set(labels)) != len(labels):
            raise SweepError(f"{where}: 'values' has duplicates: {values}")
        only = spec.get("methods")
        if only is not None:
            if not isinstance(only, list) or not only:
                raise SweepError(f"{where}: 'methods' must be a non-empty list of method names")
            bad = [m for m in only if m not in methods]
            if bad:
                raise SweepError(f"{where}: methods {bad} are not in the sweep's methods ({', '.join(methods)})")
        axes.append(_Axis(column, key, list(values), list(only) if only is not None else None))
    return axes


def load_sweep(path: str, *, output: Optional[str] = None) -> Sweep:
    """Read, validate and expand a sweep file. ``output`` overrides the file's ``output``.

    Raises FileNotFoundError / :class:`SweepError` naming the sweep file and the entry.
    """
    from simformer.config import ConfigError, load_cfg, resolve_path
    from simformer.data.catalog import get_dataset
    from simformer.data.split import load_split

    data = _read_yaml(path)
    if set(data) - set(SWEEP_KEYS):
        raise _unknown(path, set(data) - set(SWEEP_KEYS), SWEEP_KEYS)
    name = data.get("name", os.path.splitext(os.path.basename(path))[0])
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise SweepError(f"{path}: name must be a non-empty string without '/', got {name!r}")
    out_dir = output or data.get("output") or os.path.join("runs", name)
    if not isinstance(out_dir, str):
        raise SweepError(f"{path}: output must be a folder path, got {out_dir!r}")
    out_dir = os.path.abspath(os.path.expanduser(out_dir))

    base_written = data.get("base_config")
    base_config = _resolve_file(base_written, sweep_path=path, entry="base_config") if base_written is not None else None
    opts = _parse_opts(data.get("opts"), where=f"{path}: opts")

    raw_methods = data.get("methods")
    if raw_methods is None:
        if base_config is None:
            raise SweepError(f"{path}: give base_config, methods, or both")
        raw_methods = {os.path.splitext(os.path.basename(base_config))[0]: {}}
    if not isinstance(raw_methods, dict) or not raw_methods:
        raise SweepError(f"{path}: methods must be a non-empty mapping name -> {{config, opts, stage}}, got {raw_methods!r}")
    methods = []  # (name, stage, config_abs, config_written, retrain_abs, retrain_written, opts, stage1_from)
    for mname, spec in raw_methods.items():
        where = f"{path}: methods.{mname}"
        if not isinstance(mname, str) or not mname or "/" in mname:
            raise SweepError(f"{path}: methods: name {mname!r} must be a non-empty string without '/'")
        spec = {} if spec is None else spec
        if not isinstance(spec, dict):
            raise SweepError(f"{where} must be a mapping {{config, opts, stage, retrain_config}} or empty, got {spec!r}")
        if set(spec) - set(METHOD_KEYS):
            raise _unknown(where, set(spec) - set(METHOD_KEYS), METHOD_KEYS)
        stage = spec.get("stage", "train")
        if stage not in STAGES:
            raise SweepError(f"{where}: stage must be one of {', '.join(STAGES)}, got {stage!r}")
        if "config" in spec:
            cfg_written = spec["config"]
            cfg_abs = _resolve_file(cfg_written, sweep_path=path, entry=f"methods.{mname}.config")
        elif base_config is not None:
            cfg_written, cfg_abs = base_written, base_config
        else:
            raise SweepError(f"{where}: no config (set methods.{mname}.config or the sweep's base_config)")
        retrain_written = spec.get("retrain_config")
        retrain_abs = None
        if retrain_written is not None:
            if stage != "pipeline":
                raise SweepError(f"{where}: retrain_config needs stage: pipeline")
            retrain_abs = _resolve_file(retrain_written, sweep_path=path, entry=f"methods.{mname}.retrain_config")
            try:
                load_cfg(retrain_abs)
            except ConfigError as e:
                raise SweepError(f"{where}.retrain_config: {e}") from e
        stage1_from = spec.get("stage1_from")
        if stage1_from is not None:
            if stage != "pipeline":
                raise SweepError(f"{where}: stage1_from needs stage: pipeline")
            if stage1_from not in raw_methods or (raw_methods[stage1_from] or {}).get("stage", "train") != "train":
                raise SweepError(f"{where}: stage1_from must name a method of this sweep with stage train, "
                                 f"got {stage1_from!r}")
        methods.append((mname, stage, cfg_abs, cfg_written, retrain_abs, retrain_written,
                        _parse_opts(spec.get("opts"), where=f"{where}.opts"), stage1_from))

    splits = _parse_splits(data.get("splits"), path=path)
    seeds = _parse_seeds(data.get("seeds"), path=path)
    axes = _parse_grid(data.get("grid"), path=path, methods=[m[0] for m in methods])

    cfg_cache: Dict[Tuple, Any] = {}
    split_cache: Dict[str, Any] = {}

    def checked_cfg(run_name, mname, cfg_abs, run_opts):
        key = (cfg_abs, tuple(run_opts))
        if key not in cfg_cache:
            flat = [x for kv in run_opts for x in kv]
            try:
                cfg = load_cfg(cfg_abs, flat)
            except ConfigError as e:
                raise SweepError(f"{path}: run {run_name} (method '{mname}', config {cfg_abs}): {e}") from e
            cfg_cache[key] = cfg
            _check_split_matches(cfg, run_name, mname)
        return cfg_cache[key]

    def _check_split_matches(cfg, run_name, mname):
        if not cfg.WEAKSHOT.SPLIT:
            return
        split_file = resolve_path(cfg.WEAKSHOT.SPLIT)
        if split_file not in split_cache:
            try:
                split_cache[split_file] = load_split(split_file)
            except ValueError as e:
                raise SweepError(f"{path}: run {run_name} (method '{mname}'): {e}") from e
        split = split_cache[split_file]
        for ds in list(cfg.DATASETS.TRAIN)[:1]:
            try:
                family = get_dataset(ds).family
            except KeyError as e:
                raise SweepError(f"{path}: run {run_name} (method '{mname}'): DATASETS.TRAIN: {e.args[0]}") from e
            if family != split.dataset:
                raise SweepError(f"{path}: run {run_name} (method '{mname}'): split {split_file} is for dataset "
                                 f"'{split.dataset}' but DATASETS.TRAIN {ds} belongs to '{family}'")

    runs: List[Run] = []
    dirs: Dict[str, str] = {}
    for mname, stage, cfg_abs, cfg_written, retrain_abs, retrain_written, mopts, stage1_from in methods:
        base_opts = _merge_opts(opts, mopts)
        method_axes = [a for a in axes if a.methods is None or mname in a.methods]
        split_items = splits if splits is not None else [None]
        for split_item in split_items:
            split_opts = [("WEAKSHOT.SPLIT", split_item[2])] if split_item else []
            split_written = [("WEAKSHOT.SPLIT", str(split_item[1]))] if split_item else []
            combos = []  # (grid_values, grid_opts, label); each validated once (seeds cannot change validity)
            for grid_values in itertools.product(*[a.values for a in method_axes]):
                grid_opts = [(a.key, _value_str(v)) for a, v in zip(method_axes, grid_values)]
                label = "/".join(f"{a.column}={_value_label(v)}" for a, v in zip(method_axes, grid_values))
                shown = "/".join([mname, split_item[0] if split_item else "<config split>", "seed*"]
                                 + ([label] if label else []))
                cfg = checked_cfg(shown, mname, cfg_abs, _merge_opts(base_opts, split_opts, grid_opts))
                combos.append((grid_values, grid_opts, label))
            # Grid axes cannot set WEAKSHOT.SPLIT or SEED, so the last cfg speaks for every combination.
            split_name = split_item[0] if split_item else (
                os.path.splitext(os.path.basename(cfg.WEAKSHOT.SPLIT))[0] if cfg.WEAKSHOT.SPLIT else "all-base")
            for seed in (seeds if seeds is not None else [int(cfg.SEED)]):
                seed_opts = [("SEED", str(seed))] if seeds is not None else []
                for grid_values, grid_opts, label in combos:
                    run_opts = _merge_opts(base_opts, split_opts, seed_opts, grid_opts)
                    run_name = "/".join([mname, split_name, f"seed{seed}"] + ([label] if label else []))
                    comps = [mname, split_name, f"seed{seed}"] + [f"{a.column}={_value_label(v)}"
                                                                 for a, v in zip(method_axes, grid_values)]
                    run_dir = os.path.join(out_dir, *[_sanitize(c) for c in comps])
                    if run_dir in dirs:
                        raise SweepError(f"{path}: runs {dirs[run_dir]} and {run_name} would share the folder "
                                         f"{run_dir}; rename a method or split (only A-Z a-z 0-9 . _ = + - are kept)")
                    dirs[run_dir] = run_name
                    fingerprint = {
                        "stage": stage, "config": str(cfg_written),
                        "retrain_config": None if retrain_written is None else str(retrain_written),
                        "opts": [list(kv) for kv in _merge_opts(base_opts, split_written, seed_opts, grid_opts)],
                    }
                    # the other method's folder for the same split/seed/grid (its config is checked
                    # against stage 1 by `simformer pipeline`, which trains itself on a mismatch)
                    source = None if stage1_from is None else os.path.join(
                        out_dir, *[_sanitize(c) for c in [stage1_from] + comps[1:]])
                    runs.append(Run(name=run_name, run_dir=run_dir, method=mname, split=split_name, seed=int(seed),
                                    params={a.column: v for a, v in zip(method_axes, grid_values)}, stage=stage,
                                    config=cfg_abs, opts=tuple(x for kv in run_opts for x in kv),
                                    retrain_config=retrain_abs, fingerprint=fingerprint, stage1_from=source))
    return Sweep(name=name, path=os.path.abspath(path), output=out_dir, runs=runs,
                 grid_columns=[a.column for a in axes])


# ---------------------------------------------------------------------------------------------
# Run state
# ---------------------------------------------------------------------------------------------
def is_done(run_dir: str) -> bool:
    return (os.path.isfile(os.path.join(run_dir, "metrics.json"))
            and os.path.isfile(os.path.join(run_dir, "model_final.pth")))


def has_checkpoint(run_dir: str) -> bool:
    """``last_checkpoint`` in the run folder or one level down (pipeline stages)."""
    import glob

    return (os.path.isfile(os.path.join(run_dir, "last_checkpoint"))
            or bool(glob.glob(os.path.join(glob.escape(run_dir), "*", "last_checkpoint"))))


def read_record(run_dir: str) -> Optional[dict]:
    path = os.path.join(run_dir, RECORD_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def is_changed(run: Run) -> bool:
    """True if the run folder was made by the sweep with a different command spec."""
    record = read_record(run.run_dir)
    return record is not None and "fingerprint" in record and record["fingerprint"] != run.fingerprint


def try_lock(run_dir: str, *, tries: int = 1) -> Optional[int]:
    """Take the run's exclusive lock (``flock`` on RUN_DIR/.lock, released when every process holding
    the descriptor has exited); the file descriptor, or None when someone else holds it. ``tries``
    > 1 retries 0.1 s apart (an :func:`is_running` probe holds the lock for an instant)."""
    import fcntl
    import socket

    os.makedirs(run_dir, exist_ok=True)
    fd = os.open(os.path.join(run_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    for attempt in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            if attempt == tries - 1:
                os.close(fd)
                return None
            time.sleep(0.1)
    os.ftruncate(fd, 0)
    os.write(fd, f"{socket.gethostname()} {os.getpid()} {_now()}\n".encode())
    return fd


def unlock(fd: Optional[int]) -> None:
    if fd is not None:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def is_running(run_dir: str) -> bool:
    """True while some process (a local sweep's child, a submitit job) holds the run's lock."""
    if not os.path.isfile(os.path.join(run_dir, LOCK_FILE)):
        return False
    fd = try_lock(run_dir)
    unlock(fd)
    return fd is None


def run_state(run: Run) -> str:
    """One of :data:`STATES` (see the module docstring)."""
    if is_changed(run):
        return "changed"
    if is_done(run.run_dir):
        return "done"
    if is_running(run.run_dir):
        return "running"
    if os.path.isfile(os.path.join(run.run_dir, FAILED_FILE)):
        return "failed"
    if has_checkpoint(run.run_dir):
        return "partial"
    return "new"


def failure_reason(run_dir: str) -> str:
    """First line of ``FAILED`` (``exit code N ...``)."""
    try:
        with open(os.path.join(run_dir, FAILED_FILE)) as f:
            return f.readline().strip() or "failed"
    except OSError:
        return "failed"


def check_not_changed(runs: Sequence[Run], sweep_path: str = "sweep") -> None:
    """Raise :class:`SweepError` listing runs whose folder holds a different spec."""
    changed = [r for r in runs if is_changed(r)]
    if changed:
        lines = "\n".join(f"  {r.name}: {r.run_dir}" for r in changed[:10])
        more = f"\n  ... and {len(changed) - 10} more" if len(changed) > 10 else ""
        raise SweepError(
            f"{sweep_path}: {len(changed)} run folder(s) were made with a different command (config, "
            f"overrides or stage) than the sweep file now gives:\n{lines}{more}\n"
            f"Delete those folders to rerun them, restore the sweep file, or delete their {RECORD_FILE} "
            "to keep them as they are.")


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------
def default_runner() -> List[str]:
    """Command prefix for one process: ``$SIMFORMER_SWEEP_RUNNER`` or ``python -m simformer``."""
    env = os.environ.get(RUNNER_ENV)
    return shlex.split(env) if env else [sys.executable, "-m", "simformer"]


def build_command(run: Run, *, resume: bool, runner: Optional[Sequence[str]] = None, gpus: int = 1,
                  nodes: int = 1, node_rank: int = 0, master_addr: str = "", master_port: int = 29500) -> List[str]:
    """argv of ``run``. ``gpus > 1`` or ``nodes > 1`` wraps ``simformer`` in torchrun
    (``python -m torch.distributed.run``): ``--standalone`` on one node, an explicit rendezvous
    (``master_addr:master_port``, ``node_rank``) across nodes. A custom ``runner`` (or
    ``$SIMFORMER_SWEEP_RUNNER``) replaces the whole prefix."""
    custom = runner is not None or os.environ.get(RUNNER_ENV)
    if custom:
        prefix = list(runner) if runner is not None else default_runner()
    elif gpus > 1 or nodes > 1:
        prefix = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(gpus)]
        if nodes > 1:
            prefix += ["--nnodes", str(nodes), "--node_rank", str(node_rank),
                       "--master_addr", master_addr, "--master_port", str(master_port)]
        else:
            prefix += ["--standalone"]
        prefix += ["-m", "simformer"]
    else:
        prefix = default_runner()
    return prefix + run.args(resume=resume)


def child_env(devices: Optional[Sequence[str]] = None, base: Optional[dict] = None) -> Dict[str, str]:
    """Environment of a run process: no inherited distributed variables, the simformer checkout on
    PYTHONPATH (works without ``pip install``), quiet progress bars, optional CUDA_VISIBLE_DEVICES."""
    env = dict(os.environ if base is None else base)
    for k in _DIST_VARS:
        env.pop(k, None)
    repo = _repo_root()
    paths = env.get("PYTHONPATH", "").split(os.pathsep) if env.get("PYTHONPATH") else []
    if repo not in paths:
        env["PYTHONPATH"] = os.pathsep.join([repo] + paths)
    env.setdefault("SIMFORMER_PROGRESS", "0")
    env.setdefault("PYTHONUNBUFFERED", "1")
    if devices:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in devices)
    return env


def _write_record(run: Run, command: Sequence[str], resume: bool) -> None:
    from simformer.utils.io import atomic_write_json

    old = read_record(run.run_dir) or {}
    atomic_write_json(os.path.join(run.run_dir, RECORD_FILE), {
        "name": run.name, "method": run.method, "split": run.split, "seed": run.seed, "params": run.params,
        "fingerprint": run.fingerprint, "command": list(command), "resume": resume,
        "attempts": int(old.get("attempts", 0)) + 1, "started": _now(),
    })


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def _open_log(run: Run, command: Sequence[str], log_name: str = LOG_FILE):
    """Open the run's log for appending, write an attempt header; returns (file, offset of this attempt)."""
    os.makedirs(run.run_dir, exist_ok=True)
    f = open(os.path.join(run.run_dir, log_name), "ab")
    offset = f.tell()
    f.write(f"\n===== simformer sweep {_now()}: {shlex.join(command)}\n".encode())
    f.flush()
    return f, offset


def _log_tail(run_dir: str, offset: int, lines: int = LOG_TAIL_LINES, log_name: str = LOG_FILE) -> str:
    try:
        with open(os.path.join(run_dir, log_name), "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _finish(run: Run, returncode: int, command: Sequence[str], offset: int) -> Optional[str]:
    """Record the outcome of an attempt; None on success, else the one-line failure reason
    (also written as the first line of RUN_DIR/FAILED, followed by the command and the log tail)."""
    from simformer.utils.io import atomic_write_text

    failed_path = os.path.join(run.run_dir, FAILED_FILE)
    if returncode == 0 and is_done(run.run_dir):
        if os.path.exists(failed_path):
            os.unlink(failed_path)
        return None
    if returncode == 0:
        reason = "exit code 0 but no metrics.json + model_final.pth were written (is DATASETS.TEST empty?)"
    elif returncode < 0:
        reason = f"exit code {returncode} (killed by signal {-returncode})"
    else:
        reason = f"exit code {returncode}"
    tail = _log_tail(run.run_dir, offset)
    atomic_write_text(failed_path, f"{reason}\nrun: {run.name}\nfinished: {_now()}\ncommand: "
                                   f"{shlex.join(command)}\n--- last {LOG_TAIL_LINES} lines of "
                                   f"{os.path.join(run.run_dir, LOG_FILE)} ---\n{tail}\n")
    return reason


def plan(runs: Sequence[Run], *, retry_failed: bool = False) -> Tuple[List[Tuple[Run, bool]], SweepReport]:
    """Split ``runs`` into what to launch ``[(run, resume)]`` and what is already settled
    (done -> skipped, failed and not retried -> failed)."""
    todo, report = [], SweepReport()
    for run in runs:
        state = run_state(run)
        if state == "done":
            report.skipped.append(run.name)
        elif state == "running":
            report.busy.append(run.name)
        elif state == "failed" and not retry_failed:
            report.failed[run.name] = failure_reason(run.run_dir) + " (earlier attempt; --retry-failed reruns it)"
        elif state == "changed":
            check_not_changed([run])
        else:
            todo.append((run, has_checkpoint(run.run_dir)))
    return todo, report


# ---------------------------------------------------------------------------------------------
# Local executor
# ---------------------------------------------------------------------------------------------
def _device_groups(devices: Optional[Sequence[str]], gpus: int) -> List[Optional[List[str]]]:
    if not devices:
        return [None]
    devices = [str(d) for d in devices]
    if len(devices) % gpus:
        raise SweepError(f"--devices {','.join(devices)}: {len(devices)} devices cannot be cut into groups of "
                         f"--gpus-per-node {gpus}")
    return [devices[i:i + gpus] for i in range(0, len(devices), gpus)]


def _stop(procs: Sequence[subprocess.Popen], grace_s: float) -> None:
    """SIGINT each child's process group (the trainer exits through its finally blocks), SIGKILL
    whatever is still alive after ``grace_s``."""
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGINT)
    deadline = time.monotonic() + grace_s
    try:
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
    except KeyboardInterrupt:
        pass  # a second Ctrl-C: stop waiting
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _plan_and_log(runs, retry_failed: bool, log):
    """Refuse changed runs, split the rest into to-do / skipped / busy and log the skipped ones."""
    check_not_changed(runs)
    todo, report = plan(runs, retry_failed=retry_failed)
    for name in report.skipped:
        log(f"[skip] {name}: done")
    for name in report.busy:
        log(f"[skip] {name}: running in another sweep process or job")
    return todo, report


def run_local(runs: Sequence[Run], *, jobs: int = 1, runner: Optional[Sequence[str]] = None, gpus: int = 1,
              devices: Optional[Sequence[str]] = None, retry_failed: bool = False,
              log: Callable[[str], None] = print, poll_s: float = 0.05, grace_s: float = 15.0) -> SweepReport:
    """Execute ``runs`` as subprocesses, at most ``jobs`` at a time; done runs are skipped, partial
    ones resumed, failures recorded in RUN_DIR/FAILED and reported (the others go on).

    ``devices`` (GPU ids) are cut into groups of ``gpus``; concurrent run slot ``i`` gets group
    ``i % len(groups)`` as CUDA_VISIBLE_DEVICES. ``gpus > 1`` launches through torchrun.
    Ctrl-C (or SIGTERM) stops the children (SIGINT, then SIGKILL after ``grace_s``), leaves them
    resumable and re-raises KeyboardInterrupt.
    """
    if jobs < 1:
        raise SweepError(f"--jobs must be >= 1, got {jobs}")
    groups = _device_groups(devices, gpus)
    todo, report = _plan_and_log(runs, retry_failed, log)
    total = len(todo)
    queue = list(todo)
    # slot -> (run, process, log file, log offset, command, start time, lock fd)
    running: Dict[int, Tuple[Run, subprocess.Popen, Any, int, List[str], float, int]] = {}
    started = 0
    thread_env = child_thread_env(min(jobs, max(1, total)))  # OMP_NUM_THREADS etc. per concurrent run
    # SIGINT / SIGTERM only set a flag, checked at the top of the loop: a KeyboardInterrupt raised
    # inside Popen.poll() could leave its internal lock held and hang _stop's final wait.
    with stop_on_signals((signal.SIGINT, signal.SIGTERM)) as stop:
        try:
            while queue or running:
                if stop:
                    raise KeyboardInterrupt
                while queue and len(running) < jobs and not stop:
                    slot = min(set(range(jobs)) - set(running))
                    run, resume = queue.pop(0)
                    started += 1
                    lock = try_lock(run.run_dir, tries=5)
                    if lock is None:  # taken since plan(): someone else is running it
                        report.busy.append(run.name)
                        log(f"[{started}/{total}] skip {run.name}: running in another sweep process or job")
                        continue
                    if is_done(run.run_dir):  # finished by someone else since plan()
                        unlock(lock)
                        report.skipped.append(run.name)
                        log(f"[{started}/{total}] skip {run.name}: done")
                        continue
                    command = build_command(run, resume=resume, runner=runner, gpus=gpus)
                    logf, offset = _open_log(run, command)
                    _write_record(run, command, resume)
                    try:
                        # The child inherits the lock descriptor: the run stays locked while it lives.
                        env = {**child_env(groups[slot % len(groups)]), **thread_env, LOCK_FD_ENV: str(lock)}
                        proc = subprocess.Popen(command, stdout=logf, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, env=env,
                                                start_new_session=True, pass_fds=(lock,))
                    except OSError as e:
                        logf.write(f"cannot start: {e}\n".encode())
                        logf.close()
                        report.failed[run.name] = _finish(run, 127, command, offset)
                        unlock(lock)
                        log(f"[FAILED] {run.name}: cannot start {command[0]}: {e}")
                        continue
                    running[slot] = (run, proc, logf, offset, command, time.monotonic(), lock)
                    gpu = f" on GPU {','.join(groups[slot % len(groups)])}" if groups[0] else ""
                    log(f"[{started}/{total}] start {run.name}{' (resume)' if resume else ''}{gpu}")
                finished = [s for s, (_, p, *_rest) in running.items() if p.poll() is not None]
                for slot in finished:
                    run, proc, logf, offset, command, t0, lock = running.pop(slot)
                    logf.close()
                    reason = _finish(run, proc.returncode, command, offset)
                    unlock(lock)
                    if reason is None:
                        report.completed.append(run.name)
                        log(f"[done] {run.name} in {time.monotonic() - t0:.1f} s")
                    else:
                        report.failed[run.name] = reason
                        log(f"[FAILED] {run.name}: {reason}; see {os.path.join(run.run_dir, FAILED_FILE)}")
                if running and not finished:
                    time.sleep(poll_s)
        except KeyboardInterrupt:
            procs = [p for (_, p, *_rest) in running.values()]
            log(f"[interrupted] stopping {len(procs)} running run(s); run the sweep again to resume them")
            _stop(procs, grace_s)
            for (_, _, logf, *_rest) in running.values():
                logf.close()
            for (*_rest, lock) in running.values():
                unlock(lock)
            raise
    return report


# ---------------------------------------------------------------------------------------------
# submitit / SLURM executor
# ---------------------------------------------------------------------------------------------
class SweepJob:
    """The callable submitit runs for one run (picklable; requeued with itself on timeout).

    It decides at start time, from the run folder, whether to skip (done), resume (checkpoint) or
    start fresh, so a requeued or re-submitted job continues where the last one stopped. On
    ``nodes > 1`` one task per node launches torchrun with the rendezvous on the first node.
    """

    def __init__(self, run: Run, *, runner: Optional[Sequence[str]] = None, gpus: int = 1, nodes: int = 1):
        self.run = run
        self.runner = list(runner) if runner is not None else None
        self.gpus = gpus
        self.nodes = nodes
        self._proc: Optional[subprocess.Popen] = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_proc"] = None
        return state

    def __call__(self) -> dict:
        run = self.run
        node_rank, master_addr, master_port = 0, "", 29500
        if self.nodes > 1:
            import submitit

            env = submitit.JobEnvironment()
            node_rank, master_addr = env.node, env.hostnames[0]
            master_port = 20000 + int(re.sub(r"\D", "", str(env.job_id)) or 0) % 20000
        resume = has_checkpoint(run.run_dir)
        command = build_command(run, resume=resume, runner=self.runner, gpus=self.gpus, nodes=self.nodes,
                                node_rank=node_rank, master_addr=master_addr, master_port=master_port)
        lock = None
        if node_rank == 0:
            lock = try_lock(run.run_dir, tries=5)
            if lock is None:
                return {"name": run.name, "status": "busy", "reason": None}
            if is_done(run.run_dir):
                unlock(lock)
                return {"name": run.name, "status": "skipped", "reason": None}
        elif is_done(run.run_dir):
            return {"name": run.name, "status": "skipped", "reason": None}
        log_name = LOG_FILE if node_rank == 0 else f"stdout.node{node_rank}.log"
        logf, offset = _open_log(run, command, log_name)
        if node_rank == 0:
            _write_record(run, command, resume)
        try:
            env = {**child_env(), **({LOCK_FD_ENV: str(lock)} if lock is not None else {})}
            self._proc = subprocess.Popen(command, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=env, pass_fds=(lock,) if lock is not None else ())
            returncode = self._proc.wait()
        except OSError as e:
            logf.write(f"cannot start: {e}\n".encode())
            returncode = 127
        finally:
            logf.close()
        if node_rank != 0:
            return {"name": run.name, "status": "completed" if returncode == 0 else "failed",
                    "reason": None if returncode == 0 else f"exit code {returncode} on node {node_rank}"}
        reason = _finish(run, returncode, command, offset)
        unlock(lock)
        return {"name": run.name, "status": "completed" if reason is None else "failed", "reason": reason}

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Called by submitit on timeout/preemption: stop the child, requeue this job (it resumes)."""
        import submitit

        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=30)
        return submitit.helpers.DelayedSubmission(SweepJob(self.run, runner=self.runner, gpus=self.gpus,
                                                           nodes=self.nodes))


@contextlib.contextmanager
def _checkout_on_pythonpath():
    """Jobs unpickle SweepJob, so the simformer checkout must be importable there (sbatch and the
    local controller copy this process's environment at submission)."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = child_env(base={"PYTHONPATH": old} if old else {})["PYTHONPATH"]
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def make_executor(folder: str, *, cluster: str = "slurm", job_name: str = "simformer-sweep", gpus_per_node: int = 1,
                  nodes: int = 1, cpus_per_task: Optional[int] = None, timeout_min: Optional[int] = None,
                  mem_gb: Optional[float] = None, partition: Optional[str] = None,
                  array_parallelism: Optional[int] = None, account: Optional[str] = None, qos: Optional[str] = None,
                  constraint: Optional[str] = None, setup: Optional[Sequence[str]] = None,
                  max_requeue: Optional[int] = None):
    """A ``submitit.AutoExecutor`` for ``cluster`` ("slurm", "local" or "debug"); one task per node."""
    try:
        import submitit
    except ImportError as e:
        raise SweepError("--executor slurm needs submitit: pip install submitit") from e
    if timeout_min is None:
        if cluster == "slurm":  # submitit would silently ask SLURM for 5 minutes
            raise SweepError("--executor slurm needs --timeout-min (the time limit of each job; a job that "
                             "reaches it is requeued and resumes from its last checkpoint)")
        timeout_min = 7 * 24 * 60  # submitit's local executor would otherwise stop a job after 2 minutes
    # max_num_timeout belongs to the executor's constructor (AutoExecutor: slurm_max_num_timeout),
    # update_parameters rejects it.
    ctor = {"slurm_max_num_timeout": int(max_requeue)} if max_requeue is not None else {}
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster, **ctor)
    params: Dict[str, Any] = {"name": job_name, "nodes": nodes, "tasks_per_node": 1, "gpus_per_node": gpus_per_node,
                              "cpus_per_task": cpus_per_task, "timeout_min": timeout_min, "mem_gb": mem_gb}
    slurm = {"partition": partition, "array_parallelism": array_parallelism, "account": account, "qos": qos,
             "constraint": constraint, "setup": list(setup) if setup else None}
    params.update({f"slurm_{k}": v for k, v in slurm.items() if v is not None})
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor


def run_submitit(runs: Sequence[Run], *, folder: str, cluster: str = "slurm", runner: Optional[Sequence[str]] = None,
                 retry_failed: bool = False, wait: bool = True, log: Callable[[str], None] = print,
                 poll_s: float = 10.0, executor=None, **executor_options) -> SweepReport:
    """Submit one submitit job per run that is not done (a job array on SLURM) and, with ``wait``,
    follow them to the end. ``executor_options`` go to :func:`make_executor` (gpus_per_node, nodes,
    partition, ...). A job that dies without writing FAILED (out of memory, node failure) is
    recorded as failed from its submitit error."""
    todo, report = _plan_and_log(runs, retry_failed, log)
    if not todo:
        return report
    gpus = int(executor_options.get("gpus_per_node", 1) or 1)
    nodes = int(executor_options.get("nodes", 1) or 1)
    if executor is None:
        executor = make_executor(folder, cluster=cluster, **executor_options)
    import submitit

    with submitit.helpers.clean_env(), _checkout_on_pythonpath():
        with executor.batch():
            pending = [(run, executor.submit(SweepJob(run, runner=runner, gpus=max(gpus, 1), nodes=nodes)))
                       for run, _ in todo]
    for run, job in pending:
        report.submitted.append(run.name)
        log(f"[submitted] {run.name}: job {job.job_id}")
    if not wait:
        return report
    try:
        while pending:
            still = []
            for run, job in pending:
                if not job.done():
                    still.append((run, job))
                    continue
                try:
                    result = job.result()
                except Exception as e:  # the job itself died (not the training): record why
                    reason = f"submitit job {job.job_id} failed: {str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}"
                    if not os.path.isfile(os.path.join(run.run_dir, FAILED_FILE)):
                        from simformer.utils.io import atomic_write_text

                        os.makedirs(run.run_dir, exist_ok=True)
                        atomic_write_text(os.path.join(run.run_dir, FAILED_FILE),
                                          f"{reason}\nrun: {run.name}\nfinished: {_now()}\n--- submitit error ---\n{e}\n")
                    result = {"status": "failed", "reason": reason}
                if result["status"] == "failed":
                    report.failed[run.name] = result["reason"]
                    log(f"[FAILED] {run.name}: {result['reason']}; see {os.path.join(run.run_dir, FAILED_FILE)}")
                elif result["status"] == "skipped":
                    report.skipped.append(run.name)
                    log(f"[skip] {run.name}: done")
                elif result["status"] == "busy":
                    report.busy.append(run.name)
                    log(f"[skip] {run.name}: was running elsewhere when its job started")
                else:
                    report.completed.append(run.name)
                    log(f"[done] {run.name}")
            pending = still
            if pending:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        ids = " ".join(str(job.job_id) for _, job in pending)
        log(f"[interrupted] stopped waiting; {len(pending)} job(s) keep running ({ids}). "
            "Collect later with `simformer sweep FILE --collect`.")
        raise
    return report


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------
def _read_json(path: str) -> Optional[dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def collect(sweep: Sweep, runs: Optional[Sequence[Run]] = None):
    """``(table, unfinished)``: a DataFrame with one row per done run (columns ``run, method, split,
    seed, novel_miou, base_miou, miou, hm, fwiou, macc, pacc, <grid columns>, run_dir,
    git_commit``; metrics in percent, missing = NaN) and ``[(run, state)]`` for the others."""
    import pandas as pd

    runs = sweep.runs if runs is None else runs
    columns = list(RESULT_COLUMNS) + list(sweep.grid_columns) + list(TRAILING_COLUMNS)
    rows, unfinished = [], []
    for run in runs:
        state = run_state(run)
        metrics = _read_json(os.path.join(run.run_dir, "metrics.json")) if state == "done" else None
        if metrics is None:
            unfinished.append((run, state if state != "done" else "unreadable metrics.json"))
            continue
        info = _read_json(os.path.join(run.run_dir, "run_info.json")) or {}
        row = {"run": run.name, "method": run.method, "split": run.split, "seed": run.seed}
        for k in METRIC_COLUMNS:
            v = metrics.get(k)
            row[k] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan
        for c in sweep.grid_columns:
            v = run.params.get(c)
            row[c] = _value_label(v) if isinstance(v, (list, tuple)) else v
        row["run_dir"] = run.run_dir
        row["git_commit"] = info.get("git_commit", "")
        rows.append(row)
    return pd.DataFrame(rows, columns=columns), unfinished


def write_results(table, path: str) -> str:
    """Write the results table atomically as CSV."""
    from simformer.utils.io import atomic_path

    with atomic_path(path, ".csv") as tmp:
        table.to_csv(tmp, index=False)
    return path


def summary_table(table, grid_columns: Sequence[str] = (), metrics: Sequence[str] = ("novel_miou", "base_miou", "miou", "hm")) -> str:
    """Mean ± std (ddof=1) over seeds per method x split (x grid values), in run order."""
    import numpy as np

    if table.empty:
        return "(no finished runs)\n"
    def text(v) -> str:  # a grid column a method does not use is empty (NaN), not "nan"
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)

    keys = ["method", "split"] + list(grid_columns)
    groups: Dict[Tuple, List[int]] = {}
    for i, key in enumerate(table[keys].itertuples(index=False, name=None)):
        groups.setdefault(tuple(text(v) for v in key), []).append(i)
    head = [" x ".join(["method", "split"] + list(grid_columns)), "n"] + list(metrics)
    body = []
    for key, idx in groups.items():
        label = " ".join([key[0], key[1]] + [f"{c}={v}" for c, v in zip(grid_columns, key[2:]) if v])
        cells = [label, str(len(idx))]
        for m in metrics:
            x = table[m].to_numpy(dtype=float)[idx]
            x = x[~np.isnan(x)]
            if x.size == 0:
                cells.append("n/a")
            elif x.size == 1:
                cells.append(f"{x[0]:.2f}")
            else:
                cells.append(f"{x.mean():.2f} ± {x.std(ddof=1):.2f}")
        body.append(cells)
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    lines = [fmt(head), "  ".join("-" * w for w in widths)] + [fmt(r) for r in body]
    return "\n".join(lines) + "\n"


def collect_and_write(sweep: Sweep, *, log: Callable[[str], None] = print) -> Tuple[str, Any, list]:
    """Collect every run of the sweep, write OUTPUT/results.csv, log the summary and unfinished runs."""
    table, unfinished = collect(sweep)
    path = write_results(table, os.path.join(sweep.output, "results.csv"))
    log(f"results: {len(table)} finished run(s) -> {path}  (mean ± std over seeds, ddof=1, percent)")
    log(summary_table(table, sweep.grid_columns).rstrip("\n"))
    if unfinished:
        log(f"not finished ({len(unfinished)}): " + ", ".join(f"{r.name} [{s}]" for r, s in unfinished[:20])
            + (" ..." if len(unfinished) > 20 else ""))
    return path, table, unfinished
