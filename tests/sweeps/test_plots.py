"""Plots: the drawn bars / points equal the means and t-CIs computed independently; files are PNGs."""
import math
import statistics

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats as sps

from simformer.sweeps import plots as P
from simformer.stats import StatsWarning

SPLITS = ["coco/split1", "coco/split2"]
METHODS = ["retab", "simformer"]


def results():
    rng = np.random.default_rng(7)
    rows = []
    for mi, m in enumerate(METHODS):
        for si, s in enumerate(SPLITS):
            for seed in range(1, 6):
                rows.append(dict(run=f"{m}-{s}-{seed}", method=m, split=s, seed=seed,
                                 novel_miou=25 + 5 * mi + si + rng.normal(), base_miou=40.0,
                                 miou=38.0, hm=30.0))
    return pd.DataFrame(rows)


def sweep(methods=("simformer",)):
    rng = np.random.default_rng(1)
    rows = []
    for m in methods:
        for s in SPLITS:
            for alpha in (0.5, 0.1, 1.0):  # deliberately unsorted
                for seed in (1, 2, 3):
                    rows.append(dict(run=f"{m}-{s}-{alpha}-{seed}", method=m, split=s, seed=seed,
                                     alpha=alpha, novel_miou=30 + 4 * alpha + rng.normal(),
                                     base_miou=40.0, miou=38.0, hm=30.0))
    return pd.DataFrame(rows)


def t_ci(xs, conf=0.95):
    m, s, n = statistics.mean(xs), statistics.stdev(xs), len(xs)
    h = sps.t.ppf(0.5 + conf / 2, n - 1) * s / math.sqrt(n)
    return m, m - h, m + h


def assert_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100


def test_bars_heights_and_errors_equal_means_and_t_ci(tmp_path):
    df = results()
    res = P.plot_bars(df, metric="novel_miou")
    ax = res.axes
    assert [c.get_label() for c in ax.containers if hasattr(c, "patches")] == METHODS
    bars = [c for c in ax.containers if hasattr(c, "patches")]
    for mi, m in enumerate(METHODS):
        for si, s in enumerate(SPLITS):
            xs = df[(df.method == m) & (df.split == s)]["novel_miou"].tolist()
            mean, lo, hi = t_ci(xs)
            patch = bars[mi].patches[si]
            assert patch.get_height() == pytest.approx(mean, rel=1e-12)
            # error bar segment drawn for this bar spans the CI
            seg = bars[mi].errorbar.lines[2][0].get_segments()[si]
            assert (seg[0][1], seg[1][1]) == pytest.approx((lo, hi), rel=1e-12)
            x_center = patch.get_x() + patch.get_width() / 2
            assert seg[0][0] == pytest.approx(x_center)
    # grouping: bars of one split are next to each other
    assert bars[0].patches[0].get_x() < bars[1].patches[0].get_x() < bars[0].patches[1].get_x()
    out = tmp_path / "figs" / "bars.png"
    P.save_figure(res.figure, str(out))
    assert_png(out)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp-")]


def test_bars_selection_and_single_run():
    df = results()
    df = df[~((df.method == "retab") & (df.split == SPLITS[1]) & (df.seed > 1))]
    res = P.plot_bars(df, metric="novel_miou", methods=["simformer", "retab"])
    bars = [c for c in res.axes.containers if hasattr(c, "patches")]
    assert [b.get_label() for b in bars] == ["simformer", "retab"]
    r = res.summary[(res.summary.method == "retab") & (res.summary.split == SPLITS[1])].iloc[0]
    assert r["n"] == 1 and math.isnan(r["ci_low"])
    assert bars[1].patches[1].get_height() == pytest.approx(r["mean"])
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['nope'\]"):
        P.plot_bars(df, metric="novel_miou", methods=["nope"])


def test_curve_points_equal_means_sorted_by_param(tmp_path):
    df = sweep()
    res = P.plot_curve(df, param="alpha", metric="novel_miou")
    lines = res.axes.containers
    assert [c.get_label() for c in lines] == SPLITS
    for c, s in zip(lines, SPLITS):
        data_line = c.lines[0]
        assert list(data_line.get_xdata()) == [0.1, 0.5, 1.0]
        for x, y in zip(data_line.get_xdata(), data_line.get_ydata()):
            xs = df[(df.split == s) & np.isclose(df.alpha, x)]["novel_miou"].tolist()
            mean, lo, hi = t_ci(xs)
            assert y == pytest.approx(mean, rel=1e-12)
            pt = res.summary[(res.summary.split == s) & np.isclose(res.summary.alpha, x)].iloc[0]
            assert (pt.ci_low, pt.ci_high) == pytest.approx((lo, hi), rel=1e-12)
        segs = c.lines[2][0].get_segments()
        assert segs[0][0][1] == pytest.approx(res.summary[(res.summary.split == s)]
                                              .sort_values("x").iloc[0].ci_low)
    # every run is drawn as a dot at its own (alpha, value), one scatter per line
    from matplotlib.collections import PathCollection

    dots = [sorted(map(tuple, col.get_offsets().tolist())) for col in res.axes.collections
            if isinstance(col, PathCollection)]
    assert dots == [sorted(zip(df[df.split == s]["alpha"], df[df.split == s]["novel_miou"])) for s in SPLITS]
    assert "dots = runs" in res.axes.get_ylabel()
    out = tmp_path / "alpha.png"
    P.save_figure(res.figure, str(out))
    assert_png(out)


def test_curve_group_and_errors():
    df = sweep(methods=("simformer", "nopairs"))
    with pytest.raises(ValueError, match="several methods"):
        P.plot_curve(df, param="alpha", metric="novel_miou")
    res = P.plot_curve(df, param="alpha", metric="novel_miou", group="method")
    assert len(res.axes.containers) == 4
    assert "coco/split1 / nopairs" in [c.get_label() for c in res.axes.containers]
    with pytest.raises(ValueError, match="missing column.*'beta'"):
        P.plot_curve(df, param="beta", metric="novel_miou", group="method")
    # baseline rows without alpha are dropped with a warning
    extra = pd.DataFrame([dict(run="b", method="simformer", split=SPLITS[0], seed=1,
                               alpha=np.nan, novel_miou=1.0)])
    with pytest.warns(StatsWarning, match="without a value for 'alpha'"):
        r2 = P.plot_curve(pd.concat([sweep(), extra]), param="alpha", metric="novel_miou")
    assert r2.summary["mean"].min() > 20


def test_curve_categorical_param():
    df = sweep()
    df["pairing"] = df["alpha"].map({0.1: "random", 0.5: "hard", 1.0: "all"})
    res = P.plot_curve(df, param="pairing", metric="novel_miou")
    labels = [t.get_text() for t in res.axes.get_xticklabels()]
    assert labels == ["hard", "random", "all"]  # CSV order
    assert list(res.axes.containers[0].lines[0].get_xdata()) == [0.0, 1.0, 2.0]


def test_cli_plot(tmp_path, monkeypatch, capsys):
    from simformer import cli

    monkeypatch.setattr(cli, "COMMANDS", {"stats": "stats", "plot": "plot"})
    csv = tmp_path / "r.csv"
    results().to_csv(csv, index=False)
    out = tmp_path / "b.png"
    assert cli.main(["plot", "bars", str(csv), "--metric", "novel_miou", "--out", str(out)]) == 0
    assert_png(out)
    sw = tmp_path / "s.csv"
    sweep().to_csv(sw, index=False)
    out2 = tmp_path / "c.png"
    assert cli.main(["plot", "curve", str(sw), "--param", "alpha", "--out", str(out2)]) == 0
    assert_png(out2)
    assert "wrote" in capsys.readouterr().out
    assert cli.main(["plot", "bars", str(csv), "--out", str(tmp_path / "x.bogus")]) == 2
    assert "unknown extension" in capsys.readouterr().err
    assert cli.main(["plot", "curve", str(sw), "--param", "gamma", "--out", str(out2)]) == 2
    assert "gamma" in capsys.readouterr().err


def test_bars_show_every_run_n_and_percent_label():
    """One split: methods on the x axis with n in the tick label; every run is a dot at its value;
    the axis names the CI only when a bar has n >= 2."""
    df = results()
    one = df[df.split == SPLITS[0]]
    res = P.plot_bars(one, metric="novel_miou")
    ticks = [t.get_text() for t in res.axes.get_xticklabels()]
    assert ticks == [f"{m}\nn={len(one[one.method == m])}" for m in METHODS]
    from matplotlib.collections import PathCollection

    dots = sorted(float(y) for c in res.axes.collections if isinstance(c, PathCollection)
                  for y in c.get_offsets()[:, 1])
    assert dots == pytest.approx(sorted(one["novel_miou"].tolist()))
    assert "(%)" in res.axes.get_ylabel() and "CI" in res.axes.get_ylabel()
    single = one.groupby("method").head(1)
    res1 = P.plot_bars(single, metric="novel_miou")
    assert "CI" not in res1.axes.get_ylabel() and "one run" in res1.axes.get_ylabel()


def test_bars_with_long_method_names_slant_one_line_labels():
    df = results()
    one = df[df.split == SPLITS[0]].replace({"method": {"retab": "SimFormer*@1800"}})
    res = P.plot_bars(one, metric="novel_miou")
    labels = res.axes.get_xticklabels()
    assert [t.get_text() for t in labels] == [f"{m} (n={len(one[one.method == m])})"
                                              for m in ["SimFormer*@1800", "simformer"]]
    assert {t.get_rotation() for t in labels} == {40.0}
