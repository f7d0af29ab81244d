"""Statistics across seeds (docs/method.md section 9): mean +- std and tests against a baseline.

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

import math
import warnings
from typing import Dict, Sequence, Tuple
import numpy as np
import pandas as pd

from .results import (ALTERNATIVES, DDOF, EXTRA_COLUMNS, STATS_COLUMNS, TESTS, StatsWarning, clean_table,
                      first_seen_order)


# Largest group size for which the exact U distribution is used (DP cost ~ m * n * m * n).
MW_EXACT_MAX = 50


def summarize(df: pd.DataFrame, metric: str, *, by: Sequence[str] = ("method", "split"),
              confidence: float = 0.95) -> pd.DataFrame:
    """Per group (default method x split): n, mean, std (ddof=1), sem, two-sided t-CI of the mean.

    Rows are in first-appearance order of the groups. std/sem/CI are NaN when n < 2.
    """
    from scipy import stats

    d = clean_table(df, metric, required=tuple(by))
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
    d = clean_table(df, metric, required=required)
    methods = first_seen_order(d["method"])
    baseline = str(baseline)
    if baseline not in methods:
        raise ValueError(f"baseline '{baseline}' not found; methods available: {methods}")
    methods = [baseline] + [m for m in methods if m != baseline]
    splits = first_seen_order(d["split"])
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
