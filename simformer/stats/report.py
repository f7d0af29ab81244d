"""Statistics tables as text: Markdown and LaTeX with the test named beside every p-value, and
the atomic ``stats.csv`` / ``stats.md`` / ``stats.tex`` writer."""
from __future__ import annotations

import math
import os
from typing import Dict
import numpy as np
import pandas as pd

from .results import STATS_COLUMNS, first_seen_order


def _num(v: float, nd: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if math.isinf(v):
        return "+inf" if v > 0 else "-inf"
    return f"{v:.{nd}f}"


def format_p(v: float, missing: str = "n/a") -> str:
    """A p-value as every table of the suite prints it: 3 decimals, scientific below 0.001."""
    if v is None or math.isnan(v):
        return missing
    return f"{v:.2e}" if v < 1e-3 else f"{v:.3f}"


def _mean_std(mean: float, std: float, pm: str = " ± ") -> str:
    return _num(mean) if (std is None or math.isnan(std)) else f"{_num(mean)}{pm}{_num(std)}"


def _ci_header(table: pd.DataFrame) -> str:
    lvl = 1 - table.attrs.get("alpha", 0.05)
    side = table.attrs.get("alternative", "two-sided")
    return f"{lvl * 100:g}% CI" + ("" if side == "two-sided" else " (one-sided)")


def tests_used(table: pd.DataFrame) -> str:
    """The distinct test descriptions of a ``compare`` table's rows ("; "-joined)."""
    tests = [t for t in first_seen_order(table["test"]) if t != "baseline" and not t.startswith("no baseline")]
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
    splits = first_seen_order(table["split"])
    methods = first_seen_order(table["method"])
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
                     f"{_num(r.diff)} | {ci} | {format_p(r.p_value)} | {format_p(r.p_holm)} | "
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
