"""The paper's Table 7 (appendix A7) p-values recomputed from its printed mean ± std.

Analysis only (docs/method.md section 9): it shows that the printed p-values are not Welch's or
Student's test on those numbers, which is why ``simformer stats`` names its test beside every
p-value. Run ``python analysis/paper_pvalues.py`` to print the check.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd


def paper_pvalue_check(n: int = 5) -> pd.DataFrame:
    """Recompute the Table 7 p-values (SimFormer* vs RETAB*) from the printed mean ± std, n runs.

    For every split: Welch and Student two-sided p (``scipy.stats.ttest_ind_from_stats``, the stds
    read as ddof=1), and the range of each p over the printing precision (means +- 0.05, stds
    +- 0.005; one-sided p is half the two-sided one). ``reachable_<test>_<side>`` tells whether the
    printed p lies in that range; ``printed_reachable`` = any of them. It is False for most splits,
    so the paper's test cannot be Welch's or Student's on these numbers (docs/method.md section 9).
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


if __name__ == "__main__":
    with pd.option_context("display.width", 200, "display.max_columns", 40):
        print(paper_pvalue_check())
