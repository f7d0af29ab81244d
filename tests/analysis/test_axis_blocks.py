"""analysis/axis_blocks.py: the Fig. 6 sensitivity and training-budget blocks against hand computations."""
import os
import sys

import pandas as pd
import pytest
from scipy import stats

from simformer.stats.significance import StatsWarning

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "analysis"))

import axis_blocks  # noqa: E402


def fmt_p(p: float) -> str:
    """The suite's p-value format, written out: 3 decimals, scientific below 0.001."""
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


ALPHA = {0.05: [40.0, 44.0, 42.0], 0.1: [50.0, 53.0, 51.0], 1.0: [30.0, 26.0, 31.0]}


def alpha_results():
    return pd.DataFrame([dict(run=f"simformer/split1/seed{i + 1}/alpha={a}", method="simformer", split="split1",
                              seed=i + 1, alpha=a, novel_miou=v, base_miou=v + 10, miou=v + 5, hm=v + 2)
                         for a, vals in ALPHA.items() for i, v in enumerate(vals)])


def table_rows(text: str) -> dict:
    return {ln.split("|")[1].strip(): [c.strip() for c in ln.strip("|").split("|")]
            for ln in text.splitlines() if ln.startswith("| ") and ln.split("|")[1].strip()[0].isdigit()}


def test_sensitivity_table_pairs_each_value_with_the_default_by_seed_with_holm():
    rows = table_rows(axis_blocks.sensitivity_table(alpha_results(), "alpha"))
    assert rows["0.1"][6] == "(default)" and rows["0.1"][2] == "51.3 ± 1.5"
    raw = {a: stats.ttest_rel(ALPHA[a], ALPHA[0.1]).pvalue for a in (0.05, 1.0)}
    lo, hi = sorted(raw, key=raw.get)
    holm = {lo: min(1.0, 2 * raw[lo])}
    holm[hi] = max(holm[lo], min(1.0, raw[hi]))
    for a in (0.05, 1.0):
        cells = rows[f"{a:g}"]
        diffs = [x - y for x, y in zip(ALPHA[a], ALPHA[0.1])]
        assert cells[1] == "3" and cells[5] == "3" and float(cells[6]) == round(sum(diffs) / 3, 1)
        assert cells[8] == fmt_p(raw[a]) and cells[9] == fmt_p(holm[a])
        assert cells[10] == fmt_p(stats.ttest_ind(ALPHA[a], ALPHA[0.1], equal_var=False).pvalue)


def test_sensitivity_table_pairs_only_shared_seeds_and_skips_a_single_pair():
    df = alpha_results()
    # alpha 0.05 keeps seeds 1-2 (paired on those two); alpha 1.0 keeps seed 3 only (one pair: no test)
    df = df[~((df["alpha"] == 0.05) & (df["seed"] == 3)) & ~((df["alpha"] == 1.0) & (df["seed"] < 3))]
    with pytest.warns(StatsWarning, match="welch test needs >= 2 runs"):  # alpha 1.0's single run
        rows = table_rows(axis_blocks.sensitivity_table(df, "alpha"))
    p = stats.ttest_rel(ALPHA[0.05][:2], ALPHA[0.1][:2]).pvalue
    assert rows["0.05"][5] == "2" and float(rows["0.05"][6]) == round((40 - 50 + 44 - 53) / 2, 1)
    assert rows["0.05"][8] == fmt_p(p) and rows["0.05"][9] == fmt_p(p)  # Holm over one test
    assert rows["1"][5] == "1" and rows["1"][6] == rows["1"][8] == rows["1"][9] == ""
    assert rows["1"][10] == "n/a"  # Welch needs 2 runs per group


def budget_runs():
    """FullyOracle and SimFormer at the recipe's 900 and at 1200 iterations (+ a row of another model)."""
    spec = [("FullyOracle", 1, 60.0, 66.0), ("FullyOracle", 2, 64.0, 70.0), ("FullyOracle@1200", 1, 70.0, 80.0),
            ("SimFormer", 1, 58.0, 50.0), ("SimFormer@1200", 1, 66.0, 60.0), ("Pr", 1, 40.0, 8.0)]
    df = pd.DataFrame([dict(run=f"{m}/split1/seed{s}", method=m, split="split1", seed=s, miou=a, novel_miou=n)
                       for m, s, a, n in spec])
    curves = []
    for r in df.itertuples():
        last = 1200 if "@1200" in r.method else 900
        curves += [dict(run=r.run, iteration=it, series="total_loss", value=1.0) for it in (20, last)]
        if r.seed == 1:  # seed 2's log predates the step time
            curves += [dict(run=r.run, iteration=it, series="time_per_iter", value=v)
                       for it, v in ((20, 0.5), (40, 0.7), (60, 0.6))]
    return df, pd.DataFrame(curves)


def test_budget_table_reads_budgets_and_step_times_from_the_curves():
    df, curves = budget_runs()
    d = axis_blocks.with_budget(df, curves)
    assert set(d["model"]) == {"FullyOracle", "SimFormer"} and "Pr" not in set(d["method"])
    text = axis_blocks.budget_table(d)
    rows = {tuple(c.strip() for c in ln.strip("|").split("|")[:2]): [c.strip() for c in ln.strip("|").split("|")]
            for ln in text.splitlines() if ln.startswith("| FullyOracle") or ln.startswith("| SimFormer")}
    assert rows[("FullyOracle", "900")][2:5] == ["2", "62.0 ± 2.8", "68.0 ± 2.8"]
    # novel relative to FullyOracle at the same budget: 50 / 68 and 60 / 80
    assert rows[("SimFormer", "900")][5] == "74 %" and rows[("SimFormer", "1200")][5] == "75 %"
    # median step 0.6 s: 900 x 0.6 / 60 = 9.0 min from the one timed run; 1200 -> 12.0
    assert rows[("FullyOracle", "900")][6:] == ["0.60", "9.0 (1)"]
    assert rows[("FullyOracle", "1200")][6:] == ["0.60", "12.0 (1)"]


def test_budget_gain_table_pairs_each_budget_with_the_recipe_on_shared_seeds():
    # the recipe (method "FullyOracle", 1200 iterations) at seeds 1-3; 1800 at seeds 1-4 (seed 4 has no
    # partner); 900 at seed 1 only (one pair: no test)
    recipe = {1: (60.0, 62.0), 2: (66.0, 70.0), 3: (65.0, 71.0)}
    longer = {1: (70.0, 77.0), 2: (75.0, 79.0), 3: (73.0, 84.0), 4: (99.0, 99.0)}
    rows = [("FullyOracle", 1200, s, b, n) for s, (b, n) in recipe.items()]
    rows += [("FullyOracle@1800", 1800, s, b, n) for s, (b, n) in longer.items()]
    rows += [("FullyOracle@900", 900, 1, 50.0, 55.0)]
    d = pd.DataFrame([dict(method=m, model="FullyOracle", budget=b, split="split1", seed=s, base_miou=base,
                           novel_miou=novel) for m, b, s, base, novel in rows])
    text = axis_blocks.budget_gain_table(d)
    lines = {ln.split("|")[2].strip(): [c.strip() for c in ln.strip("|").split("|")]
             for ln in text.splitlines() if ln.startswith("| FullyOracle")}
    assert list(lines) == ["1200 -> 900", "1200 -> 1800"]  # budgets in ascending order
    assert lines["1200 -> 900"][2:] == ["1", "", "", "", ""]
    cells = lines["1200 -> 1800"]
    assert cells[2] == "3"
    for k, col in ((0, 3), (1, 5)):
        diffs = [longer[s][k] - recipe[s][k] for s in (1, 2, 3)]  # base: 10, 9, 8; novel: 15, 9, 13
        mean = sum(diffs) / 3
        half = stats.t.ppf(0.975, 2) * stats.tstd(diffs) / 3 ** 0.5
        assert cells[col] == f"{mean:+.1f} [{mean - half:+.1f}, {mean + half:+.1f}]"
        assert cells[col + 1] == fmt_p(stats.ttest_rel([longer[s][k] for s in (1, 2, 3)],
                                                       [recipe[s][k] for s in (1, 2, 3)]).pvalue)
    assert axis_blocks.budget_gain_table(d[d["method"] != "FullyOracle"]) == ""  # no recipe runs


def test_split_budget_reads_the_budget_and_a_tagged_variant():
    names = pd.Series(["SimFormer", "SimFormer@1800", "SimFormer*@1800-from1800", "FullyOracle@900", "X@abc"])
    got = axis_blocks.split_budget(names)
    assert got["model"].tolist() == ["SimFormer", "SimFormer", "SimFormer*", "FullyOracle", "X"]
    assert got["budget"].fillna(-1).tolist() == [-1, 1800.0, 1800.0, 900.0, -1]  # -1: the recipe / no number
