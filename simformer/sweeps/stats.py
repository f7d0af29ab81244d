"""Statistics across seeds (METHOD.md section 9): mean +- std, tests against a baseline, tables.

Input is a results table with one row per run. The columns a sweep writes are
``run, method, split, seed, novel_miou, base_miou, miou, hm`` (metrics in percent); extra columns
(hyper-parameters such as ``alpha``) are kept. Only the columns an operation needs are required, so a
hand-made CSV with ``method, split, seed, novel_miou`` works.

Conventions, stated next to every p-value (the ``test`` column and table footnotes):

* ``std`` is the sample standard deviation, ``ddof=1``.
* ``diff = mean(method) - mean(baseline)`` on the same split.
* The CI has level ``1 - alpha`` (95 % by default) and the sidedness of the test, so "p < alpha"
  and "CI excludes 0" agree for the t-tests. For a one-sided alternative one end is infinite.
* ``welch``: Welch t-test (``scipy.stats.ttest_ind(equal_var=False)``), CI with the
  Welch-Satterthwaite degrees of freedom.
* ``student``: Student t-test with pooled variance (``ttest_ind(equal_var=True)``), df = n1+n0-2.
* ``paired``: paired t-test (``ttest_rel``) on runs matched by the ``seed`` column; CI of the mean
  paired difference, df = n-1.
* ``mannwhitney``: Mann-Whitney U (``scipy.stats.mannwhitneyu``; exact null distribution when there
  are no ties and both groups have at most 50 runs, else the tie-corrected normal approximation with
  continuity correction). Its CI is the distribution-free Hodges-Lehmann/Moses interval for the
  location shift, from order statistics of all pairwise differences (exact U quantiles; attained
  coverage >= 1 - alpha is reported in ``ci_level``). ``diff`` stays the difference of means; the
  Hodges-Lehmann shift itself is in the extra column ``estimate``.
* Hedges' g: unpaired tests use Cohen's d with the pooled SD (ddof=1) times
  ``J = 1 - 3 / (4 (n1 + n0) - 9)``; the paired test uses d_z = mean(d) / sd(d) times
  ``J = 1 - 3 / (4 (n - 1) - 1)`` (the same correction with df = n - 1).
* Holm's step-down correction is applied across the splits within each method (baseline rows and
  NaN p-values are not part of the family).
"""
from __future__ import annotations

import json
import math
import os
import warnings
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
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
# Largest group size for which the exact U distribution is used (DP cost ~ m * n * m * n).
MW_EXACT_MAX = 50


class StatsWarning(UserWarning):
    """A statistic could not be computed (too few runs, zero variance, missing baseline)."""


# --------------------------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------------------------
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


def _clean(df: pd.DataFrame, metric: str, *, required: Sequence[str] = ("method", "split"),
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


def _ordered(values: pd.Series) -> List[str]:
    """Unique values in first-appearance order (tables follow the CSV order, not alphabetical)."""
    return list(pd.unique(values))


# --------------------------------------------------------------------------------------------
# Descriptive statistics
# --------------------------------------------------------------------------------------------
def t_interval(values: np.ndarray, confidence: float = 0.95) -> Tuple[float, float, float]:
    """Mean and two-sided Student-t CI of the mean of ``values`` (1-D); NaN CI when n < 2."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    n = x.size
    if n == 0:
        return math.nan, math.nan, math.nan
    m = float(x.mean())
    if n < 2:
        return m, math.nan, math.nan
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=DDOF) / math.sqrt(n)
    return m, m - half, m + half


def summarize(df: pd.DataFrame, metric: str, *, by: Sequence[str] = ("method", "split"),
              confidence: float = 0.95) -> pd.DataFrame:
    """Per group (default method x split): n, mean, std (ddof=1), sem, two-sided t-CI of the mean.

    Rows are in first-appearance order of the groups. std/sem/CI are NaN when n < 2.
    """
    from scipy import stats

    d = _clean(df, metric, required=tuple(by))
    g = d.groupby(list(by), sort=False)[metric]
    out = g.agg(n="count", mean="mean", std=lambda s: s.std(ddof=DDOF)).reset_index()
    out["n"] = out["n"].astype(int)
    out["sem"] = out["std"] / np.sqrt(out["n"])
    with np.errstate(invalid="ignore"):
        tq = stats.t.ppf(0.5 + confidence / 2, np.maximum(out["n"].to_numpy() - 1, 1))
    half = np.where(out["n"].to_numpy() >= 2, tq * out["sem"].to_numpy(), np.nan)
    out["ci_low"] = out["mean"] - half
    out["ci_high"] = out["mean"] + half
    return out


# --------------------------------------------------------------------------------------------
# Effect sizes, multiple testing, Mann-Whitney CI
# --------------------------------------------------------------------------------------------
def hedges_g(x: np.ndarray, y: np.ndarray) -> float:
    """Hedges' g of x vs y: (mean x - mean y) / pooled SD (ddof=1) * (1 - 3 / (4 (nx + ny) - 9))."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    nx, ny = x.size, y.size
    if nx < 2 or ny < 2 or nx + ny < 4:
        return math.nan
    sp2 = ((nx - 1) * x.var(ddof=1) + (ny - 1) * y.var(ddof=1)) / (nx + ny - 2)
    if sp2 <= 0:
        return math.nan
    return float((x.mean() - y.mean()) / math.sqrt(sp2) * (1 - 3 / (4 * (nx + ny) - 9)))


def hedges_gz(d: np.ndarray) -> float:
    """Paired effect size: d_z = mean(d) / sd(d) (ddof=1) times J = 1 - 3 / (4 (n - 1) - 1)."""
    d = np.asarray(d, float)
    n = d.size
    if n < 3:  # J is undefined/negative for df = n - 1 < 2
        return math.nan
    sd = d.std(ddof=1)
    if sd <= 0:
        return math.nan
    return float(d.mean() / sd * (1 - 3 / (4 * (n - 1) - 1)))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values; NaN entries stay NaN and are not counted in the family.

    p_holm_(i) = min(1, max_{j <= i} (m - j + 1) p_(j)) over the ascending p-values p_(1..m).
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = q.size
    if m == 0:
        return out
    order = np.argsort(q, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * q[order]))
    res = np.empty(m)
    res[order] = adj
    out[ok] = res
    return out


def mann_whitney_null_cdf(m: int, n: int) -> np.ndarray:
    """Exact null CDF of the Mann-Whitney U statistic (no ties): ``cdf[u] = P(U <= u)``, u = 0..m*n.

    Recurrence on the probability mass (no overflow):
    p_{i,j}(u) = i/(i+j) p_{i-1,j}(u - j) + j/(i+j) p_{i,j-1}(u), p_{0,j} = p_{i,0} = delta_0.
    """
    if m < 0 or n < 0:
        raise ValueError("group sizes must be >= 0")
    size = m * n + 1
    # prev[j] = pmf for (i - 1, j); one row of the (i, j) table at a time.
    delta = np.zeros(size)
    delta[0] = 1.0
    prev = [delta.copy() for _ in range(n + 1)]
    for i in range(1, m + 1):
        cur = [delta.copy()]
        for j in range(1, n + 1):
            shifted = np.zeros(size)
            shifted[j:] = prev[j][: size - j]
            cur.append((i * shifted + j * cur[j - 1]) / (i + j))
        prev = cur
    return np.minimum(np.cumsum(prev[n]), 1.0)


def hodges_lehmann(x: np.ndarray, y: np.ndarray, *, alpha: float = 0.05,
                   alternative: str = "two-sided") -> Tuple[float, float, float, float]:
    """Hodges-Lehmann shift of x vs y and its distribution-free (Moses) confidence interval.

    With D = sorted pairwise differences x_i - y_j (m*n values), the interval is
    [D_(k), D_(mn+1-k)] where k = 1 + max{c : P(U <= c) <= alpha/2} (alpha for one-sided ends).
    Exact U quantiles for groups up to ``MW_EXACT_MAX``, normal approximation beyond.

    Returns (shift, ci_low, ci_high, attained_level); the CI is NaN if too few runs for the level.
    """
    from scipy import stats

    x, y = np.asarray(x, float), np.asarray(y, float)
    m, n = x.size, y.size
    if m == 0 or n == 0:
        return math.nan, math.nan, math.nan, math.nan
    diffs = np.sort(np.subtract.outer(x, y).ravel())
    shift = float(np.median(diffs))
    tail = alpha / 2 if alternative == "two-sided" else alpha
    mn = m * n
    if max(m, n) <= MW_EXACT_MAX:
        cdf = mann_whitney_null_cdf(m, n)
        ok = np.nonzero(cdf <= tail + 1e-12)[0]
        if ok.size == 0:  # even U = 0 is too likely: no interval at this level
            return shift, math.nan, math.nan, math.nan
        k = int(ok[-1]) + 1
        tail_mass = float(cdf[k - 1])
    else:
        z = stats.norm.ppf(1 - tail)
        k = int(math.floor(mn / 2 - z * math.sqrt(mn * (m + n + 1) / 12)))
        if k < 1:
            return shift, math.nan, math.nan, math.nan
        tail_mass = float(stats.norm.cdf((k - 0.5 - mn / 2) / math.sqrt(mn * (m + n + 1) / 12)))
    lo, hi = float(diffs[k - 1]), float(diffs[mn - k])
    if alternative == "greater":
        return shift, lo, math.inf, 1 - tail_mass
    if alternative == "less":
        return shift, -math.inf, hi, 1 - tail_mass
    return shift, lo, hi, 1 - 2 * tail_mass


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------
def _sidedness(alternative: str) -> str:
    return {"two-sided": "two-sided", "greater": "one-sided (method > baseline)",
            "less": "one-sided (method < baseline)"}[alternative]


def describe_test(test: str, alternative: str = "two-sided", *, mw_method: str = "") -> str:
    """Human-readable name of the test with sidedness, pairing and ddof (goes next to p-values)."""
    side = _sidedness(alternative)
    if test == "welch":
        return f"Welch t-test, {side}, unpaired, ddof=1"
    if test == "student":
        return f"Student t-test (pooled variance), {side}, unpaired, ddof=1"
    if test == "paired":
        return f"paired t-test (runs matched by seed), {side}, paired, ddof=1"
    if test == "mannwhitney":
        how = f" ({mw_method})" if mw_method else ""
        return f"Mann-Whitney U{how}, {side}, unpaired, Hodges-Lehmann CI, std ddof=1"
    raise ValueError(f"unknown test '{test}'; choose one of {list(TESTS)}")


def _t_ci(diff: float, se: float, df: float, alpha: float, alternative: str) -> Tuple[float, float]:
    from scipy import stats

    if not (np.isfinite(se) and np.isfinite(df)) or df <= 0:
        return math.nan, math.nan
    if alternative == "two-sided":
        h = stats.t.ppf(1 - alpha / 2, df) * se
        return diff - h, diff + h
    h = stats.t.ppf(1 - alpha, df) * se
    return (diff - h, math.inf) if alternative == "greater" else (-math.inf, diff + h)


def _compare_one(x1: np.ndarray, x0: np.ndarray, *, test: str, alpha: float,
                 alternative: str, where: str) -> Dict[str, float]:
    """Test x1 (method) against x0 (baseline); both 1-D, already aligned by seed for 'paired'."""
    from scipy import stats

    n1, n0 = x1.size, x0.size
    r = dict(diff=float(x1.mean() - x0.mean()), ci_low=math.nan, ci_high=math.nan,
             p_value=math.nan, hedges_g=math.nan, estimate=math.nan, statistic=math.nan,
             df=math.nan, ci_level=1 - alpha, test=describe_test(test, alternative))
    if test == "mannwhitney":
        ties = np.unique(np.concatenate([x1, x0])).size < n1 + n0
        exact = not ties and max(n1, n0) <= MW_EXACT_MAX
        method = "exact" if exact else "asymptotic"
        r["test"] = describe_test(test, alternative,
                                     mw_method="exact" if exact else "normal approx., tie-corrected")
        res = stats.mannwhitneyu(x1, x0, alternative=alternative, method=method)
        r["p_value"], r["statistic"] = float(res.pvalue), float(res.statistic)
        r["estimate"], r["ci_low"], r["ci_high"], r["ci_level"] = hodges_lehmann(
            x1, x0, alpha=alpha, alternative=alternative)
        if not np.isfinite(r["ci_level"]):
            warnings.warn(f"{where}: too few runs ({n1} vs {n0}) for a {1 - alpha:.0%} "
                          "Hodges-Lehmann interval; CI left NaN", StatsWarning, stacklevel=4)
        r["hedges_g"] = hedges_g(x1, x0)
        return r

    n_min = n1 if test == "paired" else min(n1, n0)
    if n_min < 2:
        warnings.warn(f"{where}: {test} test needs >= 2 runs per group (have {n1} vs {n0}); "
                      "p-value, CI and g are NaN", StatsWarning, stacklevel=4)
        return r
    r["estimate"] = r["diff"]
    if test == "paired":
        d = x1 - x0
        se = d.std(ddof=1) / math.sqrt(n1)
        dof = n1 - 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = stats.ttest_rel(x1, x0, alternative=alternative)
        r["hedges_g"] = hedges_gz(d)
    else:
        v1, v0 = x1.var(ddof=1), x0.var(ddof=1)
        if test == "welch":
            a, b = v1 / n1, v0 / n0
            se = math.sqrt(a + b)
            dof = (a + b) ** 2 / (a * a / (n1 - 1) + b * b / (n0 - 1)) if a + b > 0 else math.nan
        else:
            dof = n1 + n0 - 2
            se = math.sqrt(((n1 - 1) * v1 + (n0 - 1) * v0) / dof * (1 / n1 + 1 / n0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = stats.ttest_ind(x1, x0, equal_var=(test == "student"), alternative=alternative)
        r["hedges_g"] = hedges_g(x1, x0)
    if se == 0:
        warnings.warn(f"{where}: zero variance in both groups; t-test undefined (p NaN)",
                      StatsWarning, stacklevel=4)
        r["ci_low"] = r["ci_high"] = r["diff"]
        return r
    r["p_value"], r["statistic"], r["df"] = float(res.pvalue), float(res.statistic), float(dof)
    r["ci_low"], r["ci_high"] = _t_ci(r["diff"], se, dof, alpha, alternative)
    return r


def _paired_align(m: pd.DataFrame, b: pd.DataFrame, metric: str, *, method: str, baseline: str,
                  split: str) -> Tuple[np.ndarray, np.ndarray]:
    """Values of method and baseline on one split matched on ``seed`` (row order irrelevant)."""
    for name, part in ((method, m), (baseline, b)):
        dup = part["seed"][part["seed"].duplicated()].unique().tolist()
        if dup:
            raise ValueError(f"paired test: method '{name}' has several runs with seed(s) {dup} on "
                             f"split '{split}'; pairing by seed needs one run per seed")
    s1, s0 = set(m["seed"].tolist()), set(b["seed"].tolist())
    if s1 != s0:
        raise ValueError(
            f"paired test on split '{split}': seeds do not match. '{method}' lacks seeds "
            f"{sorted(s0 - s1, key=str)}, baseline '{baseline}' lacks seeds {sorted(s1 - s0, key=str)}. "
            "Run the missing seeds or use --test welch.")
    j = m[["seed", metric]].merge(b[["seed", metric]], on="seed", suffixes=("_m", "_b"))
    return j[f"{metric}_m"].to_numpy(float), j[f"{metric}_b"].to_numpy(float)


def compare(df: pd.DataFrame, *, metric: str, baseline: str, test: str = "welch",
            alpha: float = 0.05, alternative: str = "two-sided") -> pd.DataFrame:
    """Compare every method with ``baseline`` on every split.

    Args:
        df: one row per run; needs ``method``, ``split``, ``metric`` (and ``seed`` for ``paired``).
        alternative: ``greater`` tests method > baseline, ``less`` method < baseline.

    Returns:
        One row per method x split (baseline first, diff 0 and NaN tests), columns
        ``STATS_COLUMNS`` followed by ``EXTRA_COLUMNS``. ``n`` is the number of runs of the method
        (number of seed pairs for ``paired``). See the module docstring for the exact conventions.
    """
    if test not in TESTS:
        raise ValueError(f"unknown test '{test}'; choose one of {list(TESTS)}")
    if alternative not in ALTERNATIVES:
        raise ValueError(f"unknown alternative '{alternative}'; choose one of {list(ALTERNATIVES)}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    required = ("method", "split", "seed") if test == "paired" else ("method", "split")
    d = _clean(df, metric, required=required)
    methods = _ordered(d["method"])
    baseline = str(baseline)
    if baseline not in methods:
        raise ValueError(f"baseline '{baseline}' not found; methods available: {methods}")
    methods = [baseline] + [m for m in methods if m != baseline]
    splits = _ordered(d["split"])
    groups = {k: g for k, g in d.groupby(["method", "split"], sort=False)}

    rows = []
    for method in methods:
        for split in splits:
            if (method, split) not in groups:
                continue
            part = groups[(method, split)]
            x1 = part[metric].to_numpy(float)
            row = dict(method=method, split=split, n=int(x1.size), mean=float(x1.mean()),
                       std=float(x1.std(ddof=DDOF)) if x1.size > 1 else math.nan)
            base = groups.get((baseline, split))
            if base is not None:
                x0 = base[metric].to_numpy(float)
                row.update(n_baseline=int(x0.size), baseline_mean=float(x0.mean()),
                           baseline_std=float(x0.std(ddof=DDOF)) if x0.size > 1 else math.nan)
            if method == baseline:
                row.update(diff=0.0, test="baseline")
            elif base is None:
                warnings.warn(f"split '{split}': no baseline '{baseline}' runs; '{method}' not "
                              "compared there", StatsWarning, stacklevel=2)
                row.update(test="no baseline runs on this split")
            else:
                if test == "paired":
                    x1, x0 = _paired_align(part, base, metric, method=method, baseline=baseline,
                                           split=split)
                    row["n"] = int(x1.size)
                row.update(_compare_one(x1, x0, test=test, alpha=alpha, alternative=alternative,
                                        where=f"{method} vs {baseline} on {split}"))
            rows.append(row)

    out = pd.DataFrame(rows)
    for c in STATS_COLUMNS + EXTRA_COLUMNS:
        if c not in out.columns:
            out[c] = math.nan
    out["p_holm"] = math.nan
    for method in methods[1:]:
        sel = (out["method"] == method).to_numpy()
        out.loc[sel, "p_holm"] = holm(out.loc[sel, "p_value"].to_numpy(float))
    sig = pd.Series(out["p_value"] < alpha, dtype="boolean")
    sig[out["p_value"].isna()] = pd.NA
    out["significant"] = sig
    out["n_baseline"] = out["n_baseline"].astype("Int64")
    out = out[STATS_COLUMNS + EXTRA_COLUMNS].reset_index(drop=True)
    out.attrs.update(metric=metric, baseline=baseline, test=test, alpha=alpha,
                     alternative=alternative, description=describe_test(test, alternative))
    return out


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------
def _num(v: float, nd: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if math.isinf(v):
        return "+inf" if v > 0 else "-inf"
    return f"{v:.{nd}f}"


def _p(v: float) -> str:
    if v is None or math.isnan(v):
        return "n/a"
    return f"{v:.2e}" if v < 1e-3 else f"{v:.3f}"


def _mean_std(mean: float, std: float, pm: str = " ± ") -> str:
    return _num(mean) if (std is None or math.isnan(std)) else f"{_num(mean)}{pm}{_num(std)}"


def _ci_header(table: pd.DataFrame) -> str:
    lvl = 1 - table.attrs.get("alpha", 0.05)
    side = table.attrs.get("alternative", "two-sided")
    return f"{lvl * 100:g}% CI" + ("" if side == "two-sided" else " (one-sided)")


def tests_used(table: pd.DataFrame) -> str:
    """The distinct test descriptions of a ``compare`` table's rows ("; "-joined)."""
    tests = [t for t in _ordered(table["test"]) if t != "baseline" and not t.startswith("no baseline")]
    return "; ".join(tests) if tests else table.attrs.get("description", "")


def _footnote(table: pd.DataFrame) -> str:
    a = table.attrs
    desc = tests_used(table)
    levels = table["ci_level"].dropna()
    nominal = 1 - a.get("alpha", 0.05)
    attained = ""
    if len(levels) and not np.allclose(levels, nominal):
        attained = (" Attained coverage of the distribution-free CI: "
                    + ", ".join(f"{v:.1%}" for v in sorted(set(np.round(levels, 4)))) + ".")
    g = "Hedges' g_z (paired)" if a.get("test") == "paired" else "Hedges' g (pooled SD)"
    return (f"Test: {desc}. Baseline: {a.get('baseline', '?')}; alpha = {a.get('alpha', 0.05):g}; "
            f"metric: {a.get('metric', '?')} (mean ± std, ddof=1); diff = mean(method) - "
            f"mean(baseline); p_holm: Holm across splits within each method; g: {g}.{attained}")


def format_markdown(table: pd.DataFrame) -> str:
    """Markdown: a mean ± std (n) grid (methods x splits) and the per-comparison table + footnote."""
    splits = _ordered(table["split"])
    methods = _ordered(table["method"])
    cell = {(r.method, r.split): f"{_mean_std(r.mean, r.std)} (n={r.n})" for r in table.itertuples()}
    lines = [f"**{table.attrs.get('metric', 'metric')}** (mean ± std over runs, ddof=1)", "",
             "| method | " + " | ".join(splits) + " |",
             "|---|" + "---|" * len(splits)]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(cell.get((m, s), "–") for s in splits) + " |")
    lines += ["", f"| method | split | n | mean ± std | diff | {_ci_header(table)} | p | p_holm | "
                  "Hedges' g |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in table.itertuples():
        ci = "" if math.isnan(r.ci_low) and math.isnan(r.ci_high) else \
            f"[{_num(r.ci_low)}, {_num(r.ci_high)}]"
        lines.append(f"| {r.method} | {r.split} | {r.n} | {_mean_std(r.mean, r.std)} | "
                     f"{_num(r.diff)} | {ci} | {_p(r.p_value)} | {_p(r.p_holm)} | "
                     f"{_num(r.hedges_g)} |")
    lines += ["", _footnote(table)]
    return "\n".join(lines) + "\n"


def _tex(s: str) -> str:
    rep = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#",
           "$": r"\$", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
           "±": r"$\pm$"}
    return "".join(rep.get(ch, ch) for ch in str(s))


def _tex_p(v: float) -> str:
    if v is None or math.isnan(v):
        return "--"
    if v >= 1e-3:
        return f"{v:.3f}"
    mant, exp = f"{v:.2e}".split("e")
    return f"${mant}\\times10^{{{int(exp)}}}$"


def _tex_num(v: float) -> str:
    if math.isnan(v):
        return "--"
    if math.isinf(v):
        return r"$+\infty$" if v > 0 else r"$-\infty$"
    return f"{v:.2f}"


def format_latex(table: pd.DataFrame) -> str:
    """A LaTeX ``table`` (no extra packages) with the per-comparison rows; caption names the test."""
    lines = [r"\begin{table}[t]", r"\centering",
             r"\begin{tabular}{llrrrlllr}", r"\hline",
             r"Method & Split & $n$ & Mean $\pm$ std & $\Delta$ & " + _tex(_ci_header(table)) +
             r" & $p$ & $p_{\mathrm{Holm}}$ & $g$ \\", r"\hline"]
    for r in table.itertuples():
        ms = _tex_num(r.mean) if math.isnan(r.std) else f"{r.mean:.2f} $\\pm$ {r.std:.2f}"
        ci = "--" if math.isnan(r.ci_low) and math.isnan(r.ci_high) else \
            f"[{_tex_num(r.ci_low)}, {_tex_num(r.ci_high)}]"
        lines.append(f"{_tex(r.method)} & {_tex(r.split)} & {r.n} & {ms} & {_tex_num(r.diff)} & "
                     f"{ci} & {_tex_p(r.p_value)} & {_tex_p(r.p_holm)} & {_tex_num(r.hedges_g)} \\\\")
    lines += [r"\hline", r"\end{tabular}", r"\caption{" + _tex(_footnote(table)) + "}",
              r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_stats(table: pd.DataFrame, out_dir: str) -> Dict[str, str]:
    """Write ``stats.csv`` (exactly ``STATS_COLUMNS``), ``stats.md`` and ``stats.tex`` atomically."""
    from simformer.utils.io import atomic_path, atomic_write_text

    os.makedirs(out_dir, exist_ok=True)
    paths = {k: os.path.join(out_dir, f"stats.{k}") for k in ("csv", "md", "tex")}
    with atomic_path(paths["csv"]) as tmp:
        table[STATS_COLUMNS].to_csv(tmp, index=False, float_format="%.10g")
    atomic_write_text(paths["md"], format_markdown(table))
    atomic_write_text(paths["tex"], format_latex(table))
    return paths


# --------------------------------------------------------------------------------------------
# The paper's Table 7 (appendix A7)
# --------------------------------------------------------------------------------------------
def paper_pvalue_check(n: int = 5) -> pd.DataFrame:
    """Recompute the Table 7 p-values (SimFormer* vs RETAB*) from the printed mean ± std, n runs.

    For every split: Welch and Student two-sided p (``scipy.stats.ttest_ind_from_stats``, the stds
    read as ddof=1), and the range of each p over the printing precision (means +- 0.05, stds
    +- 0.005; one-sided p is half the two-sided one). ``reachable_<test>_<side>`` tells whether the
    printed p lies in that range; ``printed_reachable`` = any of them. It is False for most splits,
    so the paper's test cannot be Welch's or Student's on these numbers (METHOD.md section 9).
    """
    from importlib import resources
    from scipy import stats

    t7 = json.loads(resources.files("simformer.resources").joinpath("paper_results.json")
                    .read_text())["table7_significance"]
    m0, s0 = np.array(t7["RETAB*_mean"]), np.array(t7["RETAB*_std"])
    m1, s1 = np.array(t7["SimFormer*_mean"]), np.array(t7["SimFormer*_std"])
    printed = np.array(t7["p_value"], dtype=float)

    # Rounding box, vectorised over a grid: axis 0 = split, axes 1.. = perturbations.
    dm = np.array([-0.1, 0.0, 0.1])          # diff of two means each rounded to 0.1
    ds = np.linspace(-0.005, 0.005, 5)         # each std rounded to 0.01
    D = (m1 - m0)[:, None, None, None] + dm[None, :, None, None]
    S1 = s1[:, None, None, None] + ds[None, None, :, None]
    S0 = s0[:, None, None, None] + ds[None, None, None, :]
    D, S1, S0 = np.broadcast_arrays(D, S1, S0)

    out = {"split": t7["columns"], "retab_mean": m0, "retab_std": s0, "simformer_mean": m1,
           "simformer_std": s1, "p_printed": printed}
    ok = np.zeros(len(printed), dtype=bool)
    for name, eq in (("welch", False), ("student", True)):
        p = stats.ttest_ind_from_stats(m1, s1, n, m0, s0, n, equal_var=eq).pvalue
        pg = stats.ttest_ind_from_stats(D, S1, n, np.zeros_like(D), S0, n, equal_var=eq).pvalue
        pg = pg.reshape(len(printed), -1)
        out[f"p_{name}"] = p
        out[f"p_{name}_min"] = pg.min(axis=1)
        out[f"p_{name}_max"] = pg.max(axis=1)
        out[f"ratio_printed_{name}"] = printed / p
        lo, hi = pg.min(axis=1), pg.max(axis=1)
        for side, f in (("two_sided", 1.0), ("one_sided", 0.5)):
            hit = (printed >= f * lo) & (printed <= f * hi)
            out[f"reachable_{name}_{side}"] = hit
            ok |= hit
    out["printed_reachable"] = ok
    return pd.DataFrame(out)
