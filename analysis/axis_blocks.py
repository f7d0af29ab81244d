"""Report blocks that follow the results along one axis: the training budget (a model trained for
900, 1200, 1800 iterations) and the paper's Fig. 6 hyper-parameters (alpha, beta, gamma).
Used by analysis/toyscenes_report.py."""
from __future__ import annotations

import os
import sys

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convergence_report import mean_std  # noqa: E402

from simformer.stats import compare, format_p, holm
from simformer.sweeps.plots import plot_curve, save_figure

# The paper's Fig. 6 hyper-parameters: grid columns of experiments/toyscenes/fig6_*.yaml and their keys.
FIG6 = {"alpha": "WEAKSHOT.DISTILL.LOSS_WEIGHT", "beta": "WEAKSHOT.COMPLEMENTARY.LOSS_WEIGHT",
        "gamma": "WEAKSHOT.COMPLEMENTARY.IGNORE_PROB"}
# Models trained at several budgets (methods X and X@B of experiments/toyscenes/main.yaml).
BUDGET_MODELS = ("FullyOracle", "SimFormer")


def split_budget(methods: pd.Series) -> pd.DataFrame:
    """Method names ``X`` (trained at the recipe's budget), ``X@B`` (B iterations) or ``X@B-tag`` (a
    variant at B iterations, e.g. ``SimFormer*@1800-from1800``) as columns ``model`` (X) and
    ``budget`` (B as a float, NaN for the recipe), on ``methods``' index."""
    parts = methods.str.partition("@")
    budget = parts[2].str.extract(r"^(\d+)(?:-|$)", expand=False)
    return pd.DataFrame({"model": parts[0], "budget": pd.to_numeric(budget, errors="coerce")})


def _paired_to_default(labelled: pd.DataFrame, label: str, base: str, metric: str = "novel_miou"):
    """Paired t-test (two-sided, ddof 1) of ``label``'s ``metric`` against ``base`` on the seeds both
    ran: the row of :func:`simformer.stats.compare` and the number of pairs, or ``(None, pairs)``
    when fewer than 2 seeds are shared (a seed fixes data order, augmentation and init, so runs of
    one seed differ only by the hyper-parameter)."""
    shared = set(labelled.loc[labelled["method"] == label, "seed"]) & set(labelled.loc[labelled["method"] == base, "seed"])
    if len(shared) < 2:
        return None, len(shared)
    pair = labelled[labelled["method"].isin([label, base]) & labelled["seed"].isin(shared)]
    return compare(pair, metric=metric, baseline=base, test="paired").set_index("method").loc[label], len(shared)


def paired_change_cells(labelled: pd.DataFrame, label: str, base: str, metrics) -> tuple:
    """For each of ``metrics``, the cells "change [95 % CI]" and "p" of :func:`_paired_to_default`
    (both blank under 2 shared seeds), and the number of seeds ``label`` and ``base`` share."""
    cells, pairs = [], 0
    for metric in metrics:
        r, pairs = _paired_to_default(labelled, label, base, metric)
        cells += ["", ""] if r is None else [f"{r['diff']:+.1f} [{r['ci_low']:+.1f}, {r['ci_high']:+.1f}]",
                                             format_p(r["p_value"])]
    return cells, pairs


def sensitivity_table(df: pd.DataFrame, param: str) -> str:
    """The paper's Fig. 6 at this scale: per value of ``param`` (a grid column), novel / base mIoU and
    HM (mean ± std, n), and the novel difference to the config default over the seeds both ran (mean
    paired difference, its 95 % CI, paired t p, Holm across the values tested), with the Welch p on
    all runs (two-sided, unpaired, ddof 1) beside it."""
    default = float(_cfg_value(FIG6[param]))
    labelled = df.assign(method=[f"{param}={float(v):g}" for v in df[param]])
    base = f"{param}={default:g}"
    has_base = base in set(labelled["method"])
    welch = (compare(labelled, metric="novel_miou", baseline=base, test="welch").set_index("method")
             if has_base and labelled["method"].nunique() > 1 else None)
    values = sorted(set(df[param].astype(float)))
    paired = {f"{param}={v:g}": _paired_to_default(labelled, f"{param}={v:g}", base)
              for v in values if has_base and f"{param}={v:g}" != base}
    tested = [m for m, (r, _) in paired.items() if r is not None and not pd.isna(r["p_value"])]
    p_holm = dict(zip(tested, holm([float(paired[m][0]["p_value"]) for m in tested]))) if tested else {}
    lines = [f"### Sensitivity to {param} ({FIG6[param]}; default {default:g}), the paper's Fig. 6\n",
             f"| {param} | n | novel mIoU | base mIoU | HM | seed pairs | novel diff vs {default:g} (paired) "
             "| 95 % CI | p (paired t) | p (Holm) | p (Welch, all runs) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for value in values:
        g = df[df[param].astype(float) == value]
        label = f"{param}={value:g}"
        cells = [mean_std(g[m]) for m in ("novel_miou", "base_miou", "hm")]
        pairs = diff = ci = p = ph = pw = ""
        if label == base:
            diff = "(default)"
        elif label in paired:
            r, n_pairs = paired[label]
            pairs = str(n_pairs)
            if r is not None:
                diff = f"{r['diff']:+.1f}"
                ci = "" if pd.isna(r["ci_low"]) else f"[{r['ci_low']:+.1f}, {r['ci_high']:+.1f}]"
                p, ph = format_p(r["p_value"]), format_p(p_holm.get(label, float("nan")))
            if welch is not None and label in welch.index:
                pw = format_p(welch.loc[label, "p_value"])
        lines.append(f"| {value:g} | {len(g)} | " + " | ".join(cells)
                     + f" | {pairs} | {diff} | {ci} | {p} | {ph} | {pw} |")
    return "\n".join(lines) + ("\n\npercent, ToyScenes val, the other hyper-parameters at their defaults; the "
                               "difference, CI and paired t-test (two-sided, ddof 1) use the seeds a value shares "
                               "with the default (same data order, augmentation and init), Holm across the values; "
                               "the Welch p (two-sided, unpaired) uses every run. The paper (COCO-Stuff-10K, "
                               "Fig. 6) reports its model 'relatively robust' to each in a range around the "
                               "default, as curves without numbers.\n")


def with_budget(df: pd.DataFrame, curves: pd.DataFrame, models=BUDGET_MODELS) -> pd.DataFrame:
    """The runs of ``models`` (a method ``X`` or ``X@B``) with columns ``model`` (X), ``budget`` (the
    last logged iteration of the run in ``curves``, i.e. its SOLVER.MAX_ITER) and ``step_s`` (median
    logged step time in seconds; NaN where the run's log predates it)."""
    model = split_budget(df["method"])["model"]
    d = df[model.isin(models)].assign(model=model)
    d["budget"] = d["run"].map(curves.groupby("run")["iteration"].max())
    d["step_s"] = d["run"].map(curves[curves["series"] == "time_per_iter"].groupby("run")["value"].median())
    return d[d["budget"].notna()]


def budget_table(d: pd.DataFrame) -> str:
    """One row per model and budget (rows of :func:`with_budget`): all / novel mIoU (mean ± std, n),
    novel relative to FullyOracle at the same budget, median step time and the training minutes it
    implies (budget x step)."""
    oracle = d[d["model"] == "FullyOracle"].groupby("budget")["novel_miou"].mean()
    lines = ["### Training budget: FullyOracle and SimFormer at each number of iterations\n",
             "| model | iterations | n | all mIoU | novel mIoU | novel / FullyOracle | median step (s) "
             "| training min (n timed) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (model, budget), g in d.sort_values(["model", "budget"]).groupby(["model", "budget"], sort=False):
        rel = f"{100 * g['novel_miou'].mean() / oracle[budget]:.0f} %" if budget in oracle else "n/a"
        timed = g["step_s"].dropna()
        step = f"{timed.median():.2f}" if len(timed) else "n/a"
        minutes = f"{(timed * budget / 60).median():.1f} ({len(timed)})" if len(timed) else "n/a"
        lines.append(f"| {model} | {int(budget)} | {len(g)} | {mean_std(g['miou'])} | {mean_std(g['novel_miou'])} "
                     f"| {rel} | {step} | {minutes} |")
    return "\n".join(lines) + ("\n\npercent, ToyScenes val; iterations: the run's last logged iteration "
                               "(SOLVER.MAX_ITER; each budget a full poly schedule); step time: median over the "
                               "run's logged periods (one thread per run, two runs side by side), the training "
                               "minutes exclude start-up and the final evaluation (a few seconds).\n")


def budget_gain_table(d: pd.DataFrame) -> str:
    """Each model's change from the recipe's budget (its runs named ``X``) to every other budget it
    trained (``X@B``) on the seeds both ran (a seed fixes data order, augmentation and init): base and
    novel mIoU, mean paired difference with its 95 % CI and the paired t-test's p (two-sided; blank
    under 2 shared seeds); "" when no model trained at the recipe's budget and another one."""
    lines = []
    for model, runs in d.groupby("model", sort=False):
        if model not in set(runs["method"]):
            continue
        recipe = int(runs.loc[runs["method"] == model, "budget"].iloc[0])
        for method, g in runs[runs["method"] != model].sort_values("budget").groupby("method", sort=False):
            cells, pairs = paired_change_cells(runs, method, model, ("base_miou", "novel_miou"))
            lines.append(f"| {model} | {recipe} -> {int(g['budget'].iloc[0])} | {pairs} | " + " | ".join(cells) + " |")
    if not lines:
        return ""
    return ("### Training budget: each model's change from the recipe's budget, paired by seed\n\n"
            "| model | iterations | seed pairs | base mIoU change [95 % CI] | p (paired t) "
            "| novel mIoU change [95 % CI] | p (paired t) |\n|---|---|---:|---:|---:|---:|---:|\n"
            + "\n".join(lines) + "\n\npercentage points, ToyScenes val; paired t-test (two-sided, ddof 1) "
            "on the seeds both budgets ran.\n")


def _cfg_value(key: str):
    from simformer.config import get_cfg

    node = get_cfg()
    for part in key.split("."):
        node = node[part]
    return node


def grid_params(df: pd.DataFrame) -> list:
    """The Fig. 6 hyper-parameters swept in ``df`` (grid columns with a value)."""
    return [c for c in FIG6 if c in df.columns and df[c].notna().any()]


def write_axis_blocks(df: pd.DataFrame, results_dir: str, out: str) -> dict:
    """The blocks along an axis that ``df`` supports, ``{block name: Markdown}``, with their figures
    written to ``out``: ``fig6_<param>`` (+ fig6_<param>.png, log x) for each swept Fig. 6 parameter,
    and ``budget`` (+ budget_miou.png, budget_novel_miou.png) when the runs of ``results_dir``'s
    curves.csv train FullyOracle / SimFormer at more than one budget."""
    blocks = {}
    for param in grid_params(df):
        runs = df[df[param].notna()]
        blocks[f"fig6_{param}"] = sensitivity_table(runs, param)
        curve = plot_curve(runs, param=param, metric="novel_miou", logx=True, title=f"ToyScenes: novel mIoU vs {param}")
        save_figure(curve.figure, os.path.join(out, f"fig6_{param}.png"))
    curves_csv = os.path.join(results_dir, "curves.csv")
    curves = pd.read_csv(curves_csv) if os.path.isfile(curves_csv) else pd.DataFrame()
    budgets = with_budget(df, curves) if {"run"} <= set(curves.columns) & set(df.columns) else pd.DataFrame()
    if len(budgets) and budgets["budget"].nunique() > 1:
        gains = budget_gain_table(budgets)
        blocks["budget"] = budget_table(budgets) + ("\n" + gains if gains else "")
        for metric in ("miou", "novel_miou"):
            curve = plot_curve(budgets, param="budget", metric=metric, group="model",
                               title=f"ToyScenes: {metric} vs training iterations")
            save_figure(curve.figure, os.path.join(out, f"budget_{metric}.png"))
    return blocks
