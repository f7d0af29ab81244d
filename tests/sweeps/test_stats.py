"""Statistics across seeds: every number is checked against scipy / statsmodels / textbook formulas."""
import itertools
import math
import statistics

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from simformer import stats as S

# Fixed data: 3 methods x 3 splits x seeds 1..5 (percent). "sim" clearly better, "near" close.
VALUES = {
    ("base", "s1"): [27.1, 27.9, 26.8, 28.3, 27.5],
    ("base", "s2"): [23.0, 23.6, 22.7, 23.3, 22.9],
    ("base", "s3"): [29.9, 30.6, 29.2, 30.1, 29.5],
    ("sim", "s1"): [30.2, 29.1, 31.0, 29.8, 30.5],
    ("sim", "s2"): [24.1, 23.5, 24.8, 23.9, 24.4],
    ("sim", "s3"): [31.4, 30.2, 32.9, 31.1, 30.8],
    ("near", "s1"): [27.4, 28.6, 26.9, 27.8, 28.0],
    ("near", "s2"): [23.4, 22.8, 23.9, 23.1, 23.7],
    ("near", "s3"): [29.7, 31.0, 30.3, 29.1, 30.9],
}


def make_df(values=VALUES, seeds=(1, 2, 3, 4, 5)):
    rows = []
    for (m, s), xs in values.items():
        for seed, v in zip(seeds, xs):
            rows.append(dict(run=f"{m}-{s}-{seed}", method=m, split=s, seed=seed, novel_miou=v,
                             base_miou=40 + v / 10, miou=35.0, hm=2 * v * 40 / (v + 40), alpha=0.1))
    return pd.DataFrame(rows)


def row(table, method, split):
    r = table[(table["method"] == method) & (table["split"] == split)]
    assert len(r) == 1
    return r.iloc[0]


def arr(m, s):
    return np.array(VALUES[(m, s)])


@pytest.mark.parametrize("split", ["s1", "s2", "s3"])
@pytest.mark.parametrize("method", ["sim", "near"])
def test_welch_matches_scipy_formula_and_statsmodels(method, split):
    t = S.compare(make_df(), metric="novel_miou", baseline="base", test="welch")
    r = row(t, method, split)
    x1, x0 = arr(method, split), arr("base", split)
    assert r["p_value"] == pytest.approx(sps.ttest_ind(x1, x0, equal_var=False).pvalue, rel=1e-12)
    # independent CI: Welch-Satterthwaite df and t quantile
    v1, v0 = statistics.variance(x1.tolist()) / 5, statistics.variance(x0.tolist()) / 5
    df = (v1 + v0) ** 2 / (v1 ** 2 / 4 + v0 ** 2 / 4)
    diff = statistics.mean(x1.tolist()) - statistics.mean(x0.tolist())
    h = sps.t.ppf(0.975, df) * math.sqrt(v1 + v0)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((diff - h, diff + h), rel=1e-10)
    assert r["diff"] == pytest.approx(diff, rel=1e-12)
    assert r["df"] == pytest.approx(df, rel=1e-12)
    cm = CompareMeans(DescrStatsW(x1), DescrStatsW(x0))
    assert (r["ci_low"], r["ci_high"]) == pytest.approx(cm.tconfint_diff(usevar="unequal"), rel=1e-9)
    assert r["p_value"] == pytest.approx(cm.ttest_ind(usevar="unequal")[1], rel=1e-9)
    assert r["test"] == "Welch t-test, two-sided, unpaired, ddof=1"
    assert r["std"] == pytest.approx(statistics.stdev(x1.tolist()), rel=1e-12)
    assert r["mean"] == pytest.approx(statistics.mean(x1.tolist()), rel=1e-12)


@pytest.mark.parametrize("split", ["s1", "s2", "s3"])
def test_student_matches_scipy_formula_and_statsmodels(split):
    t = S.compare(make_df(), metric="novel_miou", baseline="base", test="student")
    r = row(t, "sim", split)
    x1, x0 = arr("sim", split), arr("base", split)
    assert r["p_value"] == pytest.approx(sps.ttest_ind(x1, x0, equal_var=True).pvalue, rel=1e-12)
    sp2 = (4 * statistics.variance(x1.tolist()) + 4 * statistics.variance(x0.tolist())) / 8
    diff = x1.mean() - x0.mean()
    h = sps.t.ppf(0.975, 8) * math.sqrt(sp2 * (1 / 5 + 1 / 5))
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((diff - h, diff + h), rel=1e-10)
    cm = CompareMeans(DescrStatsW(x1), DescrStatsW(x0))
    assert (r["ci_low"], r["ci_high"]) == pytest.approx(cm.tconfint_diff(usevar="pooled"), rel=1e-9)
    assert r["df"] == 8
    assert r["test"].startswith("Student t-test") and "unpaired" in r["test"] and "ddof=1" in r["test"]


def test_paired_matches_ttest_rel_and_is_matched_by_seed():
    df = make_df()
    t = S.compare(df, metric="novel_miou", baseline="base", test="paired")
    for split in ("s1", "s2", "s3"):
        r = row(t, "sim", split)
        x1, x0 = arr("sim", split), arr("base", split)
        assert r["p_value"] == pytest.approx(sps.ttest_rel(x1, x0).pvalue, rel=1e-12)
        d = x1 - x0
        h = sps.t.ppf(0.975, 4) * statistics.stdev(d.tolist()) / math.sqrt(5)
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((d.mean() - h, d.mean() + h), rel=1e-10)
        assert (r["ci_low"], r["ci_high"]) == pytest.approx(DescrStatsW(d).tconfint_mean(), rel=1e-9)
        assert "paired" in r["test"] and "ddof=1" in r["test"]
    # shuffled rows (and shuffled seeds within a method) give the same result: pairing is by seed
    shuffled = df.sample(frac=1.0, random_state=3).reset_index(drop=True)
    t2 = S.compare(shuffled, metric="novel_miou", baseline="base", test="paired")
    for split in ("s1", "s2", "s3"):
        assert row(t2, "sim", split)["p_value"] == pytest.approx(row(t, "sim", split)["p_value"],
                                                                rel=1e-12)
    # a different pairing changes the answer (the test would catch order-based pairing)
    relabelled = df.copy()
    sel = relabelled["method"] == "sim"
    relabelled.loc[sel, "seed"] = relabelled.loc[sel, "seed"].map({1: 2, 2: 1, 3: 3, 4: 5, 5: 4})
    t3 = S.compare(relabelled, metric="novel_miou", baseline="base", test="paired")
    assert row(t3, "sim", "s1")["p_value"] != pytest.approx(row(t, "sim", "s1")["p_value"], rel=1e-3)


def test_paired_errors_name_missing_and_duplicate_seeds():
    df = make_df()
    df = df[~((df["method"] == "sim") & (df["split"] == "s2") & (df["seed"] == 4))]
    with pytest.raises(ValueError, match=r"'sim' lacks seeds \[4\]"):
        S.compare(df, metric="novel_miou", baseline="base", test="paired")
    df = make_df()
    df.loc[(df["method"] == "near") & (df["seed"] == 5), "seed"] = 1
    with pytest.raises(ValueError, match=r"several runs with seed"):
        S.compare(df, metric="novel_miou", baseline="base", test="paired")
    with pytest.raises(ValueError, match="missing column"):
        S.compare(make_df().drop(columns="seed"), metric="novel_miou", baseline="base", test="paired")


def test_mannwhitney_p_and_hodges_lehmann():
    t = S.compare(make_df(), metric="novel_miou", baseline="base", test="mannwhitney")
    for m, s in itertools.product(["sim", "near"], ["s1", "s2", "s3"]):
        r = row(t, m, s)
        x1, x0 = arr(m, s), arr("base", s)
        ties = len(set(x1) | set(x0)) < 10
        ref = sps.mannwhitneyu(x1, x0, method="asymptotic" if ties else "exact")
        assert r["p_value"] == pytest.approx(ref.pvalue, rel=1e-12)
        assert r["statistic"] == ref.statistic
        hl = statistics.median([a - b for a in x1 for b in x0])
        assert r["estimate"] == pytest.approx(hl)
        assert r["diff"] == pytest.approx(x1.mean() - x0.mean())
        assert r["ci_low"] <= hl <= r["ci_high"]
        assert "Mann-Whitney" in r["test"] and "two-sided" in r["test"]


def test_mann_whitney_null_cdf_brute_force():
    for m, n in [(1, 1), (2, 3), (4, 5), (5, 5)]:
        counts = np.zeros(m * n + 1)
        for pos in itertools.combinations(range(m + n), m):  # ranks of the x sample
            u = sum(p - i for i, p in enumerate(pos))  # number of y's below each x
            counts[u] += 1
        assert np.allclose(S.mann_whitney_null_cdf(m, n), np.cumsum(counts) / counts.sum())
    # 5 vs 5: P(U <= 2) = 4/252, P(U <= 3) = 7/252 -> CI uses the 3rd order statistics
    cdf = S.mann_whitney_null_cdf(5, 5)
    assert cdf[2] == pytest.approx(4 / 252) and cdf[3] == pytest.approx(7 / 252)


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_hodges_lehmann_ci_inverts_exact_test(alternative):
    """The CI is exactly the set of shifts the exact Mann-Whitney test does not reject."""
    x, y = arr("sim", "s1"), arr("base", "s1")
    shift, lo, hi, level = S.hodges_lehmann(x, y, alpha=0.05, alternative=alternative)
    eps = 1e-6

    def p(d):
        return sps.mannwhitneyu(x - d, y, alternative=alternative, method="exact").pvalue

    if np.isfinite(lo):
        assert p(lo - eps) <= 0.05 < p(lo + eps)
    if np.isfinite(hi):
        assert p(hi + eps) <= 0.05 < p(hi - eps)
    assert level >= 0.95
    if alternative == "greater":
        assert hi == math.inf
    if alternative == "less":
        assert lo == -math.inf


def test_hedges_g_textbook_formula():
    t = S.compare(make_df(), metric="novel_miou", baseline="base", test="welch")
    for m, s in itertools.product(["sim", "near"], ["s1", "s2", "s3"]):
        a, b = VALUES[(m, s)], VALUES[("base", s)]
        n1, n2 = len(a), len(b)
        sp = math.sqrt(((n1 - 1) * statistics.variance(a) + (n2 - 1) * statistics.variance(b))
                       / (n1 + n2 - 2))
        d = (statistics.mean(a) - statistics.mean(b)) / sp
        g = d * (1 - 3 / (4 * (n1 + n2) - 9))
        assert row(t, m, s)["hedges_g"] == pytest.approx(g, rel=1e-12)
    # paired: d_z with the df = n - 1 correction
    tp = S.compare(make_df(), metric="novel_miou", baseline="base", test="paired")
    dd = [a - b for a, b in zip(VALUES[("sim", "s1")], VALUES[("base", "s1")])]
    gz = statistics.mean(dd) / statistics.stdev(dd) * (1 - 3 / (4 * 4 - 1))
    assert row(tp, "sim", "s1")["hedges_g"] == pytest.approx(gz, rel=1e-12)


def test_holm_matches_statsmodels():
    rng = np.random.default_rng(0)
    for m in (1, 2, 5, 9):
        p = rng.uniform(0, 0.2, m)
        p[0] = p[-1]  # a tie
        assert np.allclose(S.holm(p), multipletests(p, method="holm")[1], rtol=0, atol=1e-15)
    p = np.array([0.01, np.nan, 0.04, 0.03])
    ref = multipletests(p[~np.isnan(p)], method="holm")[1]
    got = S.holm(p)
    assert np.isnan(got[1]) and np.allclose(got[[0, 2, 3]], ref)
    t = S.compare(make_df(), metric="novel_miou", baseline="base", test="student")
    for m in ("sim", "near"):
        sel = t[t["method"] == m]
        assert np.allclose(sel["p_holm"], multipletests(sel["p_value"], method="holm")[1])
    assert t.loc[t["method"] == "base", "p_holm"].isna().all()


@pytest.mark.parametrize("test", ["welch", "student", "paired", "mannwhitney"])
def test_sidedness(test):
    df = make_df()
    two = S.compare(df, metric="novel_miou", baseline="base", test=test)
    gt = S.compare(df, metric="novel_miou", baseline="base", test=test, alternative="greater")
    lt = S.compare(df, metric="novel_miou", baseline="base", test=test, alternative="less")
    r2, rg, rl = row(two, "sim", "s1"), row(gt, "sim", "s1"), row(lt, "sim", "s1")
    assert r2["diff"] > 0
    assert rg["p_value"] == pytest.approx(r2["p_value"] / 2, rel=1e-9)
    if test == "mannwhitney":  # discrete statistic: P(U <= u) = 1 - P(U >= u) + P(U = u)
        x1, x0 = arr("sim", "s1"), arr("base", "s1")
        ref = sps.mannwhitneyu(x1, x0, alternative="less", method="exact").pvalue
        assert rl["p_value"] == pytest.approx(ref, rel=1e-12) and rl["p_value"] > 1 - r2["p_value"] / 2
    else:
        assert rl["p_value"] == pytest.approx(1 - r2["p_value"] / 2, rel=1e-9)
    assert rg["ci_high"] == math.inf and rl["ci_low"] == -math.inf
    assert rg["ci_low"] > r2["ci_low"]  # one-sided bound is tighter
    assert "method > baseline" in rg["test"] and "method < baseline" in rl["test"]


def test_one_sided_t_ci_matches_statsmodels():
    x1, x0 = arr("sim", "s1"), arr("base", "s1")
    g = row(S.compare(make_df(), metric="novel_miou", baseline="base", test="welch",
                      alternative="greater"), "sim", "s1")
    lo, _ = CompareMeans(DescrStatsW(x1), DescrStatsW(x0)).tconfint_diff(
        alpha=0.05, alternative="larger", usevar="unequal")
    assert g["ci_low"] == pytest.approx(lo, rel=1e-9)


def test_compare_table_shape_baseline_rows_and_errors():
    t = S.compare(make_df(), metric="novel_miou", baseline="base")
    assert list(t.columns[:12]) == S.STATS_COLUMNS
    assert list(t["method"]) == ["base"] * 3 + ["sim"] * 3 + ["near"] * 3
    b = t[t["method"] == "base"]
    assert (b["diff"] == 0).all() and b["p_value"].isna().all() and b["ci_low"].isna().all()
    with pytest.raises(ValueError, match=r"baseline 'nope' not found; methods available: \['base', 'sim', 'near'\]"):
        S.compare(make_df(), metric="novel_miou", baseline="nope")
    with pytest.raises(ValueError, match="unknown metric 'foo'"):
        S.compare(make_df(), metric="foo", baseline="base")
    with pytest.raises(ValueError, match="unknown test"):
        S.compare(make_df(), metric="novel_miou", baseline="base", test="ztest")


def test_too_few_runs_gives_nan_with_warning():
    vals = dict(VALUES)
    vals[("sim", "s1")] = [30.0]
    df = make_df(vals)
    with pytest.warns(S.StatsWarning, match="needs >= 2 runs"):
        t = S.compare(df, metric="novel_miou", baseline="base", test="welch")
    r = row(t, "sim", "s1")
    assert r["n"] == 1 and math.isnan(r["std"]) and math.isnan(r["p_value"])
    assert r["diff"] == pytest.approx(30.0 - np.mean(VALUES[("base", "s1")]))
    # Holm family of 'sim' then has two members
    sel = t[(t["method"] == "sim") & (t["split"] != "s1")]
    assert np.allclose(sel["p_holm"], multipletests(sel["p_value"], method="holm")[1])


def test_summarize_values():
    s = S.summarize(make_df(), "novel_miou")
    r = s[(s["method"] == "near") & (s["split"] == "s3")].iloc[0]
    xs = VALUES[("near", "s3")]
    assert r["n"] == 5 and r["mean"] == pytest.approx(statistics.mean(xs))
    assert r["std"] == pytest.approx(statistics.stdev(xs))
    lo, hi = sps.t.interval(0.95, 4, loc=statistics.mean(xs), scale=statistics.stdev(xs) / math.sqrt(5))
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((lo, hi))


def test_writers_and_stats_csv_columns(tmp_path):
    t = S.compare(make_df(), metric="novel_miou", baseline="base", test="welch")
    paths = S.write_stats(t, str(tmp_path / "out"))
    back = pd.read_csv(paths["csv"])
    assert list(back.columns) == S.STATS_COLUMNS
    assert np.allclose(back["p_value"].dropna(), t["p_value"].dropna(), rtol=1e-9)
    md = open(paths["md"]).read()
    r = row(t, "sim", "s1")
    assert f"{r['mean']:.2f} ± {r['std']:.2f}" in md
    assert "Welch t-test, two-sided, unpaired, ddof=1" in md
    tex = open(paths["tex"]).read()
    assert r"\begin{tabular}" in tex and r"$\pm$" in tex and "Welch t-test" in tex
    assert "±" not in tex  # escaped for LaTeX
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".tmp-")]


def _cli(monkeypatch, argv):
    from simformer import cli

    monkeypatch.setattr(cli, "COMMANDS", {"stats": "stats", "plot": "plot"})
    return cli.main(argv)


def test_cli_hand_made_csv(tmp_path, monkeypatch, capsys):
    csv = tmp_path / "hand.csv"
    csv.write_text("method,split,seed,novel_miou\n"
                   "A,x,1,10\nA,x,2,11\nA,x,3,12\nB,x,1,13\nB,x,2,15\nB,x,3,14\n")
    out = tmp_path / "o"
    rc = _cli(monkeypatch, ["stats", str(csv), "--baseline", "A", "--test", "student", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    assert "Student t-test (pooled variance), two-sided, unpaired, ddof=1" in text
    assert "11.00 ± 1.00" in text and "14.00 ± 1.00" in text
    back = pd.read_csv(out / "stats.csv")
    assert list(back.columns) == S.STATS_COLUMNS
    b = back[back["method"] == "B"].iloc[0]
    assert b["p_value"] == pytest.approx(sps.ttest_ind([13, 15, 14], [10, 11, 12]).pvalue)
    assert (out / "stats.md").exists() and (out / "stats.tex").exists()


def test_cli_errors(tmp_path, monkeypatch, capsys):
    rc = _cli(monkeypatch, ["stats", str(tmp_path / "none.csv"), "--baseline", "A"])
    assert rc == 1 and "Results file not found" in capsys.readouterr().err  # data error
    csv = tmp_path / "r.csv"
    make_df().drop(columns="split").to_csv(csv, index=False)
    rc = _cli(monkeypatch, ["stats", str(csv), "--baseline", "base"])
    err = capsys.readouterr().err
    assert rc == 1 and "missing column(s) ['split']" in err and "'novel_miou'" in err  # data error
    make_df().to_csv(csv, index=False)
    rc = _cli(monkeypatch, ["stats", str(csv), "--baseline", "base", "--metric", "acc"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown metric 'acc'" in err and "hm" in err  # usage: a wrong option value
    rc = _cli(monkeypatch, ["stats", str(csv), "--baseline", "zzz"])
    assert rc == 2 and "methods available: ['base', 'sim', 'near']" in capsys.readouterr().err


def test_missing_values_split_without_baseline_and_zero_variance():
    df = make_df()
    df.loc[df["run"] == "sim-s1-3", "novel_miou"] = np.nan  # a failed run
    extra = pd.DataFrame([dict(run=f"sim-s9-{k}", method="sim", split="s9", seed=k,
                               novel_miou=1.0 + k) for k in (1, 2)])
    with pytest.warns(S.StatsWarning) as rec:
        t = S.compare(pd.concat([df, extra]), metric="novel_miou", baseline="base")
    msgs = " ".join(str(w.message) for w in rec)
    assert "sim-s1-3" in msgs and "split 's9': no baseline 'base' runs" in msgs
    r = row(t, "sim", "s1")
    xs = [v for i, v in enumerate(VALUES[("sim", "s1")]) if i != 2]
    assert r["n"] == 4 and r["mean"] == pytest.approx(statistics.mean(xs))
    assert r["p_value"] == pytest.approx(sps.ttest_ind(xs, arr("base", "s1"), equal_var=False).pvalue)
    assert math.isnan(row(t, "sim", "s9")["p_value"])
    flat = pd.DataFrame(dict(method=["a"] * 3 + ["b"] * 3, split="x", seed=[1, 2, 3] * 2,
                             novel_miou=[1.0] * 3 + [2.0] * 3))
    with pytest.warns(S.StatsWarning, match="zero variance"):
        r = row(S.compare(flat, metric="novel_miou", baseline="a"), "b", "x")
    assert r["diff"] == 1.0 and math.isnan(r["p_value"]) and math.isnan(r["hedges_g"])
