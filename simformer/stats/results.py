"""Results tables (one row per run) as the statistics read them: loading, column checks, cleaning."""
from __future__ import annotations

import os
import warnings
from typing import Iterable, List, Optional, Sequence
import pandas as pd


RESULT_COLUMNS = ("run", "method", "split", "seed", "novel_miou", "base_miou", "miou", "hm")
METRICS = ("novel_miou", "base_miou", "miou", "hm")
STATS_COLUMNS = [
    "method", "split", "n", "mean", "std", "diff", "ci_low", "ci_high",
    "p_value", "p_holm", "hedges_g", "test",
]
EXTRA_COLUMNS = [
    "n_baseline", "baseline_mean", "baseline_std", "estimate", "statistic", "df", "ci_level",
    "significant",
]
TESTS = ("welch", "student", "paired", "mannwhitney")
ALTERNATIVES = ("two-sided", "greater", "less")
DDOF = 1


class StatsWarning(UserWarning):
    """A statistic could not be computed (too few runs, zero variance, missing baseline)."""


def check_columns(df: pd.DataFrame, columns: Iterable[str], *, source: str = "results") -> None:
    """Raise ValueError naming the first missing column and listing the columns present."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{source}: missing column(s) {missing}; columns present: {list(df.columns)}. "
            "A results CSV needs one row per run with at least method, split and the metric "
            "(and seed for --test paired)."
        )


def check_metric(df: pd.DataFrame, metric: str, *, source: str = "results") -> None:
    """Raise ValueError if ``metric`` is not a numeric column of ``df``."""
    if metric in df.columns:
        return
    numeric = [c for c in df.columns if c not in ("run", "method", "split", "seed")
               and pd.api.types.is_numeric_dtype(df[c])]
    if metric in METRICS:
        raise ValueError(f"{source}: metric column '{metric}' is missing; columns present: "
                         f"{list(df.columns)}")
    raise ValueError(f"{source}: unknown metric '{metric}' (not a column). Known metrics: "
                     f"{list(METRICS)}; numeric columns present: {numeric}")


def load_results(path: str, *, metric: Optional[str] = None,
                 required: Sequence[str] = ("method", "split")) -> pd.DataFrame:
    """Read a results CSV; check that ``required`` columns and ``metric`` exist.

    ``method`` and ``split`` are read as strings, ``seed`` as given. Raises FileNotFoundError /
    ValueError naming the file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Results file not found: {path}")
    try:
        df = pd.read_csv(path, dtype={"method": str, "split": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"Cannot parse results CSV {path}: {e}") from e
    df.columns = [str(c).strip() for c in df.columns]
    check_columns(df, required, source=path)
    if metric is not None:
        check_metric(df, metric, source=path)
    if df.empty:
        raise ValueError(f"{path}: no rows (one row per run expected)")
    return df


def clean_table(df: pd.DataFrame, metric: str, *, required: Sequence[str] = ("method", "split"),
           source: str = "results") -> pd.DataFrame:
    """Copy with string method/split, numeric metric; rows whose metric is NaN are dropped (warned)."""
    check_columns(df, required, source=source)
    check_metric(df, metric, source=source)
    out = df.copy()
    for c in ("method", "split"):
        if c in out.columns:
            out[c] = out[c].astype(str)
    values = pd.to_numeric(out[metric], errors="coerce")
    bad = values.isna() & out[metric].notna()
    if bad.any():
        raise ValueError(f"{source}: column '{metric}' has non-numeric values "
                         f"{out.loc[bad, metric].unique()[:5].tolist()}")
    out[metric] = values.astype(float)
    if values.isna().any():
        kind, who = ("runs", out.loc[values.isna(), "run"].tolist()) if "run" in out.columns \
            else ("rows", out.index[values.isna()].tolist())
        warnings.warn(f"{source}: {int(values.isna().sum())} row(s) without '{metric}' ignored "
                      f"({kind} {who[:10]})", StatsWarning, stacklevel=3)
        out = out[values.notna()]
    if out.empty:
        raise ValueError(f"{source}: no rows with a value for '{metric}'")
    return out


def first_seen_order(values: pd.Series) -> List[str]:
    """Unique values in first-appearance order (tables follow the CSV order, not alphabetical)."""
    return list(pd.unique(values))
