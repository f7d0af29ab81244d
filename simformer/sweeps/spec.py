"""Sweep files: schema, validation and expansion into runs.

A sweep file (YAML, schema in ``docs/sweeps.md``) names a base config and axes -- methods (each a
config + overrides + stage), splits, seeds and any grid of ``KEY: values``. :func:`load_sweep`
validates it strictly and expands it into :class:`Run` objects in a deterministic order
(method, split, seed, then grid axes in file order). Every config a run will train with is loaded
with :func:`simformer.config.load_cfg` at expansion time, so a typo fails before anything runs.
A run lives in its own folder ``OUTPUT/<method>/<split>/seed<seed>[/<col>=<value>...]``.
"""
from __future__ import annotations

import difflib
import fnmatch
import itertools
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from simformer.retrain import REFINE_METHODS, STAGE1
from simformer.utils.cpu_isa import CHOICES as CPU_ISAS
from simformer.utils.env import checkout_root


SWEEP_KEYS = ("name", "output", "base_config", "opts", "methods", "splits", "seeds", "grid", "cpu_isa")
METHOD_KEYS = ("config", "opts", "stage", "retrain_config", "stage1_from", "refine")
GRID_KEYS = ("key", "values", "methods")
STAGES = ("train", "pipeline")
METRIC_COLUMNS = ("novel_miou", "base_miou", "miou", "hm", "fwiou", "macc", "pacc")
RESULT_COLUMNS = ("run", "method", "split", "seed") + METRIC_COLUMNS
TRAILING_COLUMNS = ("run_dir", "git_commit")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SweepError(ValueError):
    """An invalid sweep file or sweep state; the message names the file, the entry and the fix."""


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
    refine: Optional[str] = None  # pipeline: `--refine` of the pseudo labels (docs/gfsam.md)
    # `--cpu-isa` of the run's process (the sweep's ``cpu_isa``): how it runs, not what it is, so
    # not in the fingerprint; run_info.json records the kernels that ran
    cpu_isa: Optional[str] = None

    def args(self, resume: bool = False) -> List[str]:
        """Arguments after ``simformer``: ``STAGE --config C --output D [--resume] [...] KEY VALUE...``."""
        out = [self.stage, "--config", self.config, "--output", self.run_dir]
        if resume:
            out.append("--resume")
        if self.retrain_config:
            out += ["--retrain-config", self.retrain_config]
        if self.stage1_from:
            out += ["--stage1-from", self.stage1_from]
        if self.refine:
            out += ["--refine", self.refine]
        if self.cpu_isa:
            out += ["--cpu-isa", self.cpu_isa]
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
                      os.path.abspath(path), os.path.join(checkout_root(), path)]
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


def value_label(value: Any) -> str:
    """Short text of a grid value for run names (``alpha=0.1``)."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return ",".join(value_label(v) for v in value)
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
        labels = [value_label(v) for v in values]
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


@dataclass
class _Method:
    """One validated ``methods`` entry: absolute paths (to run) and paths as written (fingerprint)."""

    name: str
    stage: str
    config: str
    config_written: Any
    retrain_config: Optional[str]
    retrain_written: Any
    opts: List[Tuple[str, str]]
    stage1_from: Optional[str]
    refine: Optional[str]
    stage1_within: Tuple[str, ...] = ()  # (STAGE1,) when stage1_from names a pipeline: its stage 1 is reused


def _parse_method(mname: Any, spec: Any, *, path: str, raw_methods: dict, base_config: Optional[str],
                  base_written: Any) -> _Method:
    from simformer.config import ConfigError, load_cfg

    where = f"{path}: methods.{mname}"
    if not isinstance(mname, str) or not mname or "/" in mname:
        raise SweepError(f"{path}: methods: name {mname!r} must be a non-empty string without '/'")
    spec = {} if spec is None else spec
    if not isinstance(spec, dict):
        raise SweepError(f"{where} must be a mapping {{{', '.join(METHOD_KEYS)}}} or empty, got {spec!r}")
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
    stage1_from, stage1_within = spec.get("stage1_from"), ()
    if stage1_from is not None:
        if stage != "pipeline":
            raise SweepError(f"{where}: stage1_from needs stage: pipeline")
        if stage1_from == mname or stage1_from not in raw_methods:
            raise SweepError(f"{where}: stage1_from must name another method of this sweep, got {stage1_from!r}")
        if (raw_methods[stage1_from] or {}).get("stage", "train") == "pipeline":
            stage1_within = (STAGE1,)
    refine = spec.get("refine")
    if refine is not None:
        if stage != "pipeline":
            raise SweepError(f"{where}: refine needs stage: pipeline")
        if refine not in REFINE_METHODS:
            raise SweepError(f"{where}: refine must be one of {', '.join(REFINE_METHODS)}, got {refine!r}")
    return _Method(mname, stage, cfg_abs, cfg_written, retrain_abs, retrain_written,
                   _parse_opts(spec.get("opts"), where=f"{where}.opts"), stage1_from, refine, stage1_within)


class _ConfigChecker:
    """Loads every config a run will train with (once per distinct config + overrides) and checks
    that its split file belongs to the family of its training dataset."""

    def __init__(self, path: str):
        self.path = path
        self.cfgs: Dict[Tuple, Any] = {}
        self.splits: Dict[str, Any] = {}

    def __call__(self, run_name: str, mname: str, cfg_abs: str, run_opts):
        from simformer.config import ConfigError, load_cfg

        key = (cfg_abs, tuple(run_opts))
        if key not in self.cfgs:
            flat = [x for kv in run_opts for x in kv]
            try:
                cfg = load_cfg(cfg_abs, flat)
            except ConfigError as e:
                raise SweepError(f"{self.path}: run {run_name} (method '{mname}', config {cfg_abs}): {e}") from e
            self.cfgs[key] = cfg
            self._check_split_matches(cfg, run_name, mname)
        return self.cfgs[key]

    def _check_split_matches(self, cfg, run_name: str, mname: str) -> None:
        from simformer.config import resolve_path
        from simformer.data.catalog import get_dataset
        from simformer.data.class_split import load_split

        if not cfg.WEAKSHOT.SPLIT:
            return
        where = f"{self.path}: run {run_name} (method '{mname}')"
        split_file = resolve_path(cfg.WEAKSHOT.SPLIT)
        if split_file not in self.splits:
            try:
                self.splits[split_file] = load_split(split_file)
            except ValueError as e:
                raise SweepError(f"{where}: {e}") from e
        split = self.splits[split_file]
        for ds in list(cfg.DATASETS.TRAIN)[:1]:
            try:
                family = get_dataset(ds).family
            except KeyError as e:
                raise SweepError(f"{where}: DATASETS.TRAIN: {e.args[0]}") from e
            if family != split.dataset:
                raise SweepError(f"{where}: split {split_file} is for dataset "
                                 f"'{split.dataset}' but DATASETS.TRAIN {ds} belongs to '{family}'")


def _expand_method(m: _Method, *, path: str, out_dir: str, opts, splits, seeds, axes, checked_cfg,
                   dirs: Dict[str, str]) -> List[Run]:
    """The runs of one method: splits x seeds x its grid axes, in that order."""
    runs: List[Run] = []
    base_opts = _merge_opts(opts, m.opts)
    method_axes = [a for a in axes if a.methods is None or m.name in a.methods]
    split_items = splits if splits is not None else [None]
    for split_item in split_items:
        split_opts = [("WEAKSHOT.SPLIT", split_item[2])] if split_item else []
        split_written = [("WEAKSHOT.SPLIT", str(split_item[1]))] if split_item else []
        combos = []  # (grid_values, grid_opts, label); each validated once (seeds cannot change validity)
        for grid_values in itertools.product(*[a.values for a in method_axes]):
            grid_opts = [(a.key, _value_str(v)) for a, v in zip(method_axes, grid_values)]
            label = "/".join(f"{a.column}={value_label(v)}" for a, v in zip(method_axes, grid_values))
            shown = "/".join([m.name, split_item[0] if split_item else "<config split>", "seed*"]
                             + ([label] if label else []))
            cfg = checked_cfg(shown, m.name, m.config, _merge_opts(base_opts, split_opts, grid_opts))
            combos.append((grid_values, grid_opts, label))
        # Grid axes cannot set WEAKSHOT.SPLIT or SEED, so the last cfg speaks for every combination.
        split_name = split_item[0] if split_item else (
            os.path.splitext(os.path.basename(cfg.WEAKSHOT.SPLIT))[0] if cfg.WEAKSHOT.SPLIT else "all-base")
        for seed in (seeds if seeds is not None else [int(cfg.SEED)]):
            seed_opts = [("SEED", str(seed))] if seeds is not None else []
            for grid_values, grid_opts, label in combos:
                run_opts = _merge_opts(base_opts, split_opts, seed_opts, grid_opts)
                run_name = "/".join([m.name, split_name, f"seed{seed}"] + ([label] if label else []))
                comps = [m.name, split_name, f"seed{seed}"] + [f"{a.column}={value_label(v)}"
                                                              for a, v in zip(method_axes, grid_values)]
                run_dir = os.path.join(out_dir, *[_sanitize(c) for c in comps])
                if run_dir in dirs:
                    raise SweepError(f"{path}: runs {dirs[run_dir]} and {run_name} would share the folder "
                                     f"{run_dir}; rename a method or split (only A-Z a-z 0-9 . _ = + - are kept)")
                dirs[run_dir] = run_name
                fingerprint = {
                    "stage": m.stage, "config": str(m.config_written),
                    "retrain_config": None if m.retrain_written is None else str(m.retrain_written),
                    "opts": [list(kv) for kv in _merge_opts(base_opts, split_written, seed_opts, grid_opts)],
                }
                if m.refine:  # only when set: fingerprints of earlier runs stay valid
                    fingerprint["refine"] = m.refine
                # the other method's folder for the same split/seed/grid, or its stage-1 folder when it
                # is a pipeline (its config is checked against stage 1 by `simformer pipeline`, which
                # trains itself on a mismatch)
                source = None if m.stage1_from is None else os.path.join(
                    out_dir, *[_sanitize(c) for c in [m.stage1_from] + comps[1:]], *m.stage1_within)
                runs.append(Run(name=run_name, run_dir=run_dir, method=m.name, split=split_name, seed=int(seed),
                                params={a.column: v for a, v in zip(method_axes, grid_values)}, stage=m.stage,
                                config=m.config, opts=tuple(x for kv in run_opts for x in kv),
                                retrain_config=m.retrain_config, fingerprint=fingerprint, stage1_from=source,
                                refine=m.refine))
    return runs


def load_sweep(path: str, *, output: Optional[str] = None) -> Sweep:
    """Read, validate and expand a sweep file. ``output`` overrides the file's ``output``.

    Raises FileNotFoundError / :class:`SweepError` naming the sweep file and the entry.
    """
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
    methods = [_parse_method(mname, spec, path=path, raw_methods=raw_methods, base_config=base_config,
                             base_written=base_written) for mname, spec in raw_methods.items()]

    splits = _parse_splits(data.get("splits"), path=path)
    seeds = _parse_seeds(data.get("seeds"), path=path)
    axes = _parse_grid(data.get("grid"), path=path, methods=[m.name for m in methods])
    checked_cfg = _ConfigChecker(path)
    dirs: Dict[str, str] = {}
    runs = [run for m in methods for run in _expand_method(m, path=path, out_dir=out_dir, opts=opts, splits=splits,
                                                           seeds=seeds, axes=axes, checked_cfg=checked_cfg, dirs=dirs)]
    cpu_isa = data.get("cpu_isa")
    if cpu_isa is not None:
        if cpu_isa not in CPU_ISAS:
            raise SweepError(f"{path}: cpu_isa must be one of {', '.join(CPU_ISAS)} (the runs' --cpu-isa), "
                             f"got {cpu_isa!r}")
        for run in runs:
            run.cpu_isa = cpu_isa
    return Sweep(name=name, path=os.path.abspath(path), output=out_dir, runs=runs,
                 grid_columns=[a.column for a in axes])
