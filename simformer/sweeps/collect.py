"""Results: :func:`collect` turns the finished runs of a sweep into one table (``results.csv``)
that ``simformer stats`` / ``simformer plot`` read."""
from __future__ import annotations

import json
import math
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .spec import METRIC_COLUMNS, RESULT_COLUMNS, Run, Sweep, TRAILING_COLUMNS, value_label
from .state import run_state


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
            row[c] = value_label(v) if isinstance(v, (list, tuple)) else v
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
