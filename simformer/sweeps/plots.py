"""Plots of results across seeds: per-split grouped bars and hyper-parameter curves (paper Fig. 6).

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot, so
importing this module changes no global backend and works without a display. Every point/bar is the
mean over runs with a two-sided Student-t CI of the mean (``summarize``; std ddof=1); groups with a
single run get no error bar. The functions return what they drew (``PlotResult.summary``) so that
callers and tests can check the figure against the numbers.
"""
from __future__ import annotations

import os
import warnings
from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from simformer.stats import StatsWarning, check_columns, clean_table, first_seen_order, summarize


class PlotResult(NamedTuple):
    figure: "object"        # matplotlib.figure.Figure
    axes: "object"          # matplotlib.axes.Axes
    summary: pd.DataFrame   # one row per drawn bar / point: keys, n, mean, std, ci_low, ci_high


def _figure(figsize: Tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _yerr(summary: pd.DataFrame) -> np.ndarray:
    """(2, N) asymmetric error-bar lengths; 0 where the CI is undefined (n < 2)."""
    lo = (summary["mean"] - summary["ci_low"]).to_numpy(float)
    hi = (summary["ci_high"] - summary["mean"]).to_numpy(float)
    return np.nan_to_num(np.vstack([lo, hi]), nan=0.0)


def _select(values: Sequence[str], wanted: Optional[Sequence[str]], what: str) -> list:
    if not wanted:
        return list(values)
    unknown = [w for w in wanted if w not in values]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; available: {list(values)}")
    return list(wanted)


METRIC_LABELS = {"novel_miou": "novel mIoU", "base_miou": "base mIoU", "miou": "all-class mIoU", "hm": "HM",
                 "fwiou": "fwIoU", "macc": "mACC", "pacc": "pACC"}


def metric_label(metric: str, summary: pd.DataFrame, confidence: float) -> str:
    """Axis label in percent; the CI is named only if some group has n >= 2 (else it is a value)."""
    name = METRIC_LABELS.get(metric, metric)
    if (summary["n"].fillna(0) >= 2).any():
        return f"{name} (%)\nmean ± {confidence:.0%} t-CI; dots = runs"
    return f"{name} (%), one run per bar"


def plot_bars(df: pd.DataFrame, *, metric: str, confidence: float = 0.95,
              methods: Optional[Sequence[str]] = None, splits: Optional[Sequence[str]] = None,
              title: Optional[str] = None) -> PlotResult:
    """Bars of the mean per method (and split) with a t-CI, every run drawn as a dot, n under
    each bar. One split: methods on the x axis. Several: one group per split, methods side by side
    (legend). ``methods`` / ``splits`` select and order what is drawn (default: all, in CSV
    order). ``axes.containers[i]`` is the BarContainer of ``methods[i]`` (label = method name).
    """
    summ = summarize(df, metric, confidence=confidence)
    runs = clean_table(df, metric)
    methods = _select(first_seen_order(summ["method"]), methods, "method(s)")
    splits = _select(first_seen_order(summ["split"]), splits, "split(s)")
    m_count = len(methods)
    one_split = len(splits) == 1
    fig, ax = _figure((max(6.0, 1.0 + len(splits) * (0.5 + 0.45 * m_count)), 4.2))
    x = np.arange(len(splits), dtype=float)
    width = 0.8 / m_count
    drawn = []
    for i, m in enumerate(methods):
        rows = (summ[summ["method"] == m].set_index("split").reindex(splits)
                .reset_index().assign(method=m))
        rows["x"] = x + (i - (m_count - 1) / 2) * width
        ax.bar(rows["x"], rows["mean"].fillna(0.0), width * 0.9, yerr=_yerr(rows), capsize=3,
                      label=m, error_kw={"elinewidth": 1}, alpha=0.75)
        for xi, split in zip(rows["x"], splits):
            vals = runs[(runs["method"] == m) & (runs["split"] == split)][metric].to_numpy(float)
            if len(vals):
                offsets = np.linspace(-0.2, 0.2, len(vals)) * width if len(vals) > 1 else np.zeros(1)
                ax.scatter(xi + offsets, vals, s=12, color="black", zorder=3)
        drawn.append(rows)
    out = pd.concat(drawn, ignore_index=True)[["method", "split", "x", "n", "mean", "std",
                                                 "ci_low", "ci_high"]]
    out["n"] = out["n"].fillna(0).astype(int)
    if one_split:
        if max(len(m) for m in methods) > 10:  # long names side by side overlap: one slanted line each
            ax.set_xticks(out["x"], [f"{m} (n={n})" for m, n in zip(out["method"], out["n"])],
                          rotation=40, ha="right", rotation_mode="anchor")
        else:
            ax.set_xticks(out["x"], [f"{m}\nn={n}" for m, n in zip(out["method"], out["n"])])
        ax.set_xlabel(f"split: {splits[0]}")
    else:
        ax.set_xticks(x, splits, rotation=20 if max(len(s) for s in splits) > 8 else 0,
                      ha="right" if max(len(s) for s in splits) > 8 else "center")
        for _, r in out.iterrows():
            ax.annotate(f"n={r['n']}", (r["x"], 0), xytext=(0, 2), textcoords="offset points",
                        ha="center", va="bottom", fontsize=6)
        # legend outside the axes (right), so it never covers a bar or an error bar
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_ylabel(metric_label(metric, out, confidence))
    ax.set_title(title or f"{METRIC_LABELS.get(metric, metric)} per {'method' if one_split else 'split'}")
    values = np.concatenate([out["ci_high"].to_numpy(float), out["mean"].to_numpy(float),
                             runs[metric].to_numpy(float)])
    top = np.nanmax(values) if len(values) else np.nan
    if np.isfinite(top) and top > 0:
        ax.set_ylim(top=top * 1.05)
    ax.grid(axis="y", alpha=0.3)
    return PlotResult(fig, ax, out)


def plot_curve(df: pd.DataFrame, *, param: str, metric: str, group: Optional[str] = None,
               confidence: float = 0.95, logx: bool = False,
               title: Optional[str] = None) -> PlotResult:
    """Hyper-parameter curve: mean ± t-CI of ``metric`` against ``param``, one line per split.

    With ``group`` (e.g. ``"method"``) there is one line per split x group value. Rows without a
    ``param`` value (e.g. baseline runs) are dropped with a warning. Numeric parameters get a
    numeric (sorted) x axis, others a categorical one in CSV order. ``axes.lines`` hold the curves;
    ``summary`` has one row per point with its ``x`` position and ``line`` label.
    """
    check_columns(df, [param] + ([group] if group else []), source="results")
    d = df[df[param].notna()]
    if len(d) < len(df):
        warnings.warn(f"{len(df) - len(d)} row(s) without a value for '{param}' ignored",
                      StatsWarning, stacklevel=2)
    if d.empty:
        raise ValueError(f"no rows with a value for parameter '{param}'")
    d = clean_table(d, metric, required=("split",))
    if group is None and "method" in d.columns and d["method"].nunique() > 1:
        raise ValueError(f"results hold several methods {first_seen_order(d['method'])}; pass "
                         "group='method' (--group method) or filter the CSV to one method")
    keys = ["split"] + ([group] if group and group != "split" else [])
    summ = summarize(d, metric, by=keys + [param], confidence=confidence)

    numeric = pd.to_numeric(summ[param], errors="coerce")
    if numeric.notna().all():
        summ["x"] = numeric.astype(float)
        ticks = None
    else:
        cats = [str(v) for v in first_seen_order(d[param].astype(str))]
        summ["x"] = summ[param].astype(str).map({c: i for i, c in enumerate(cats)}).astype(float)
        ticks = cats
    summ["line"] = summ[keys].astype(str).agg(" / ".join, axis=1)
    d = d.assign(line=d[keys].astype(str).agg(" / ".join, axis=1),
                 x=summ.set_index(param)["x"].groupby(level=0).first().reindex(d[param]).to_numpy())

    fig, ax = _figure((5.0, 3.6))
    parts = []
    for label in first_seen_order(summ["line"]):
        rows = summ[summ["line"] == label].sort_values("x")
        bar = ax.errorbar(rows["x"], rows["mean"], yerr=_yerr(rows), marker="o", ms=4, capsize=3,
                          label=label)
        runs = d[d["line"] == label]
        ax.scatter(runs["x"], runs[metric], s=10, color=bar.lines[0].get_color(), alpha=0.6, zorder=3)
        for _, r in rows.iterrows():
            ax.annotate(f"n={int(r['n'])}", (r["x"], r["mean"]), xytext=(4, -10), textcoords="offset points",
                        fontsize=6)
        parts.append(rows)
    if ticks is not None:
        ax.set_xticks(range(len(ticks)), ticks)
    elif logx:
        if (summ["x"] <= 0).any():
            raise ValueError(f"log x axis needs positive '{param}' values")
        ax.set_xscale("log")
        values = sorted(set(summ["x"]))
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.minorticks_off()
    ax.margins(x=0.08)  # room for the n labels of the last point
    ax.set_xlabel(param + (" (log scale)" if logx and ticks is None else ""))
    ax.set_ylabel(metric_label(metric, summ, confidence))
    ax.set_title(title or f"{metric} vs {param}")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    out = pd.concat(parts, ignore_index=True)
    return PlotResult(fig, ax, out[["line"] + keys + [param, "x", "n", "mean", "std", "ci_low",
                                                      "ci_high"]])


def save_figure(fig, path: str, *, dpi: int = 150) -> str:
    """Write ``fig`` atomically; the format follows the extension (png, pdf, svg, ...)."""
    from simformer.utils.io import atomic_path

    ext = os.path.splitext(path)[1].lower().lstrip(".")
    supported = fig.canvas.get_supported_filetypes()
    if ext not in supported:
        raise ValueError(f"cannot write figure {path}: unknown extension '.{ext}'; "
                         f"use one of {sorted(supported)}")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=ext, dpi=dpi)
    return path
