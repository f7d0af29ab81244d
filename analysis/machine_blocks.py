"""The "machines" block of docs/results-toyscenes.md: which CPU trained each run, how far the same
method moves from one machine to another, and the comparisons redone within one machine.

The same command and seed give other floating-point results on another CPU (README, "What a run
depends on"), and the ToyScenes runs of one table were trained on more than one machine. Each
collected run's run_info.json names its host's platform (the kernel build tells the machines of
different days apart), since 2026-12-06 its CPU (``cpu``, ``cpu_capability``) and since 2026-12-07
a fingerprint of the data it read (``datasets``), so a shift between machines can be told from a
change of data. Runs of other sweeps join with ``NAME=GLOB`` specs over their metrics files (e.g.
the stage 1 of experiments/toyscenes/label_precision.yaml, a SimFormer run, as
``SimFormer=.../stage1_metrics.json``); their machine is read from the run_info.json beside the
file. Used by analysis/toyscenes_report.py, which reads its ``--reference`` specs with
:func:`named_files` too.
"""
from __future__ import annotations

import glob
import json
import os
import re
import sys

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from axis_blocks import split_budget  # noqa: E402
from convergence_report import mean_std  # noqa: E402

from simformer.stats import compare, format_p, holm

NOT_RECORDED = "not recorded"
METRICS = ("novel_miou", "base_miou", "hm")
# Within one machine, each method against SimFormer: the paper's Tables 1, 2 and 5 on novel classes,
# the base-class cost of the methods that trade base for novel, and the point-sampled mask loss
# (a training option, not a paper method) on both.
SAME_MACHINE = [
    ("novel_miou", "SimFormer", ["SimFormer", "Pr", "Pr+Pi", "Pr+Co", "SelfPair", "SimFormer*", "SimFormer*+GFSAM",
                                 "CAM*", "SimFormer+PointLoss", "FullyOracle"]),
    ("base_miou", "SimFormer", ["SimFormer", "SelfPair", "CAM*", "SimFormer+PointLoss"]),
]


def machine_of(run_dir: str) -> tuple:
    """``(platform, cpu, data)`` of the run in ``run_dir`` from its run_info.json: the host's
    platform string (kernel build included; every run records it), ``"CPU (capability)"`` and the
    first 12 hex digits of the training dataset's fingerprint (simformer.data.catalog
    .dataset_fingerprint, recorded since 2026-12-07); :data:`NOT_RECORDED` for what the file lacks."""
    path = os.path.join(run_dir, "run_info.json")
    info = {}
    if os.path.isfile(path):
        with open(path) as f:
            info = json.load(f)
    platform = info.get("versions", {}).get("platform") or NOT_RECORDED
    cpu = info.get("cpu")
    if cpu and info.get("cpu_capability"):
        cpu = f"{cpu} ({info['cpu_capability']})"
    datasets = info.get("datasets") or {}
    data = next(iter(datasets.values()), {}).get("sha256", "")[:12]
    return platform, cpu or NOT_RECORDED, data or NOT_RECORDED


def with_machines(df: pd.DataFrame, results_dir: str) -> pd.DataFrame:
    """``df`` (a results CSV, ``run_dir`` relative to ``results_dir``) with ``machine`` (platform),
    ``cpu`` and ``data`` columns."""
    if "run_dir" not in df.columns:
        return df.assign(machine=NOT_RECORDED, cpu=NOT_RECORDED, data=NOT_RECORDED)
    found = [machine_of(os.path.join(results_dir, str(d))) for d in df["run_dir"]]
    return df.assign(**{k: [f[i] for f in found] for i, k in enumerate(("machine", "cpu", "data"))})


def named_files(specs, option: str) -> list:
    """``NAME=GLOB`` command-line specs -> ``(NAME, file)`` for every file each glob matches, in
    sorted order; a spec without a name or matching nothing is an error naming ``option``."""
    pairs = []
    for spec in specs or ():
        name, sep, pattern = spec.partition("=")
        files = sorted(glob.glob(pattern)) if sep and name else []
        if not files:
            raise SystemExit(f"{option} {spec!r}: expected NAME=GLOB matching metrics files; none found")
        pairs += [(name, path) for path in files]
    return pairs


def seed_of(path: str):
    """The seed of a run file from the ``seedN`` folder of its path (as sweeps lay runs out), or None."""
    seed = re.search(r"(?:^|/)seed(\d+)(?:/|$)", path.replace(os.sep, "/"))
    return int(seed.group(1)) if seed else None


def read_extra_runs(specs) -> pd.DataFrame:
    """``NAME=GLOB`` specs -> one row per metrics file matched: method NAME, split ``"extra"``, the
    seed (a ``seedN`` folder of its path, as sweeps lay runs out), the metrics of :data:`METRICS`,
    the file and its machine. A spec matching nothing is an error."""
    rows = []
    for name, path in named_files(specs, "--machine-runs"):
        with open(path) as f:
            metrics = json.load(f)
        missing = [m for m in METRICS if m not in metrics]
        if missing:
            raise SystemExit(f"{path}: no {missing} in it; give metrics.json files of finished runs")
        machine, cpu, data = machine_of(os.path.dirname(path))
        rows.append(dict(method=name, split="extra", seed=seed_of(path), file=path,
                         machine=machine, cpu=cpu, data=data, **{m: metrics[m] for m in METRICS}))
    return pd.DataFrame(rows, columns=["method", "split", "seed", "file", "machine", "cpu", "data", *METRICS])


def machine_table(runs: pd.DataFrame) -> str:
    """Per method and machine: the CPUs and training-data fingerprints its runs recorded (each with
    its number of runs), n and mean ± std (ddof 1) of novel, base mIoU and HM."""
    lines = ["| method | machine (platform) | CPU | training data | n | novel mIoU | base mIoU | HM |",
             "|---|---|---|---|---:|---:|---:|---:|"]

    def counted(values: pd.Series) -> str:
        return ", ".join(f"{v} ({(values == v).sum()})" for v in pd.unique(values))

    for (method, machine), g in runs.groupby(["method", "machine"], sort=False):
        lines.append(f"| {method} | {machine} | {counted(g['cpu'])} | {counted(g['data'])} | {len(g)} | "
                     + " | ".join(mean_std(g[m]) for m in METRICS) + " |")
    return "\n".join(lines)


def _table(header: str, align: str, lines) -> str:
    """A Markdown table of ``lines`` under ``header`` / ``align``; "" when there are none."""
    return "\n".join([header, align, *lines]) if lines else ""


def _welch_cells(r: pd.Series) -> str:
    """"diff | 95 % CI | p" of one row of a ``compare`` table (CI empty where it is undefined)."""
    ci = "" if pd.isna(r["ci_low"]) else f"[{r['ci_low']:+.1f}, {r['ci_high']:+.1f}]"
    return f"{r['diff']:+.1f} | {ci} | {format_p(r['p_value'])}"


def machine_effect_table(runs: pd.DataFrame) -> str:
    """Each method trained on two or more machines: every other machine against the first listed,
    on novel and base mIoU (difference, 95 % CI, Welch p); empty when no method spans machines."""
    lines = []
    for method, g in runs.groupby("method", sort=False):
        machines = list(pd.unique(g["machine"]))
        for metric in ("novel_miou", "base_miou") if len(machines) > 1 else ():
            table = compare(g.assign(method=g["machine"], split="all"), metric=metric, baseline=machines[0],
                            test="welch").set_index("method")
            for other in machines[1:]:
                r = table.loc[other]
                lines.append(f"| {method} | {metric} | {machines[0]} | {other} | {int(r['n_baseline'])} vs "
                             f"{int(r['n'])} | {r['baseline_mean']:.1f} | {r['mean']:.1f} | {_welch_cells(r)} "
                             f"| {_paired_by_seed(g, metric, machines[0], other)} |")
    return _table("| method | metric | machine A | machine B | n | A mean | B mean | diff (B - A) | 95 % CI "
                  "| p (Welch) | paired by seed: diff (pairs, p) |", "|---|---|---|---|---" + "|---:" * 6 + "|", lines)


def _paired_by_seed(runs: pd.DataFrame, metric: str, a: str, b: str) -> str:
    """Mean of ``b - a`` over the seeds run once on each machine, with the paired t-test p (two-sided,
    ddof 1); "n/a" below two pairs."""
    from scipy import stats

    if "seed" not in runs.columns:
        return "n/a"
    per = {m: runs[runs["machine"] == m].dropna(subset=["seed"]).drop_duplicates("seed", keep=False)
           .set_index("seed")[metric] for m in (a, b)}
    diff = (per[b] - per[a]).dropna()
    if len(diff) < 2:
        return "n/a"
    return f"{diff.mean():+.1f} ({len(diff)}, p = {format_p(stats.ttest_1samp(diff, 0.0).pvalue)})"


def same_machine_table(runs: pd.DataFrame, comparisons=SAME_MACHINE) -> str:
    """On each machine that ran a comparison's baseline and at least one of its methods: every
    method against the baseline (difference, 95 % CI, Welch p, Holm within the comparison and
    machine); empty when no machine ran a pair."""
    lines = []
    for metric, baseline, methods in comparisons:
        for machine, g in runs[runs["method"].isin(methods)].groupby("machine", sort=False):
            present = [m for m in methods if m in set(g["method"])]
            if baseline not in present or len(present) < 2:
                continue
            table = compare(g.assign(split="all"), metric=metric, baseline=baseline, test="welch").set_index("method")
            others = [m for m in present if m != baseline and not pd.isna(table.loc[m, "p_value"])]
            adjusted = dict(zip(others, holm([float(table.loc[m, "p_value"]) for m in others])))
            for m in (m for m in present if m != baseline):
                r = table.loc[m]
                lines.append(f"| {machine} | {metric} | {m} | {baseline} | {int(r['n'])} vs {int(r['n_baseline'])} "
                             f"| {r['mean']:.1f} | {r['baseline_mean']:.1f} | {_welch_cells(r)} "
                             f"| {format_p(adjusted.get(m, float('nan')))} |")
    return _table("| machine | metric | method | baseline | n | mean | baseline mean | diff | 95 % CI | p (Welch) "
                  "| p (Holm) |", "|---|---|---|---|---" + "|---:" * 6 + "|", lines)


def machine_block(df: pd.DataFrame, results_dir: str, extra: pd.DataFrame = None) -> str:
    """The "machines" block: ``df``'s runs at the recipe's budget (methods without ``@B``) with their
    machine, plus the ``extra`` runs (:func:`read_extra_runs`); "" when every run is on one machine."""
    runs = with_machines(df[split_budget(df["method"])["budget"].isna()], results_dir)
    if extra is not None and len(extra):
        runs = pd.concat([runs, extra], ignore_index=True)
    if runs["machine"].nunique() < 2:
        return ""
    parts = ["### Machines: which machine trained each run, at the recipe's budget\n", machine_table(runs)]
    effect = machine_effect_table(runs)
    if effect:
        parts += ["\n### The same method on two machines\n", effect]
    same = same_machine_table(runs)
    if same:
        parts += ["\n### The paper's comparisons within one machine\n", same]
    return "\n".join(parts) + (
        "\n\npercent, ToyScenes val, mean ± std over seeds (ddof 1); Welch t-test, two-sided, unpaired, ddof 1; "
        "Holm across the methods set against one baseline on one machine. Machine: the platform string in each "
        "run's run_info.json (the host's kernel build); CPU: the processor and the instruction set torch chose; "
        "training data: the start of the training set's fingerprint (file names and sizes); each with its number "
        f"of runs ('{NOT_RECORDED}': runs started before the suite recorded it, CPU 2026-12-06, data 2026-12-07).\n")
