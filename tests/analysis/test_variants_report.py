"""analysis/variants_report.py: families, the same-decoder oracle, and the p-values of the generated
block against scipy's Welch test with a hand-applied Holm correction."""
import os
import sys

import numpy as np
import pandas as pd
from scipy import stats

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "analysis"))

import variants_report  # noqa: E402


def fmt_p(p: float) -> str:
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


def test_baselines_and_oracle():
    assert variants_report.baseline_of("SimFormer") == "SimFormer"
    assert variants_report.baseline_of("SimFormer+CMT+CrossRef") == "SimFormer"
    assert variants_report.baseline_of("SimFormer-res3") == "SimFormer"
    assert variants_report.baseline_of("FullyOracle+CMT") == "FullyOracle"
    assert variants_report.baseline_of("SimFormer*+CMT+GFSAM") == "SimFormer+CMT"
    assert variants_report.baseline_of("SimFormer*") == "SimFormer"
    assert variants_report.baseline_of("SimFormerX") == ""
    assert variants_report.oracle_of("SimFormer+CMT+CrossRef") == "FullyOracle+CMT"
    assert variants_report.oracle_of("SimFormer+CrossRef") == "FullyOracle"
    assert variants_report.oracle_of("SimFormer-dropout0", ["FullyOracle", "FullyOracle-dropout0"]) == \
        "FullyOracle-dropout0"
    assert variants_report.oracle_of("SimFormer-res3", ["FullyOracle", "FullyOracle-dropout0"]) == "FullyOracle"


def test_method_order_groups_families_baseline_first():
    got = variants_report.method_order(["FullyOracle+CMT", "SimFormer+CMT", "Other", "FullyOracle", "SimFormer*",
                                        "SimFormer", "SimFormer+CMT", "SimFormer-res3"])
    assert got == ["SimFormer", "SimFormer+CMT", "SimFormer*", "SimFormer-res3", "FullyOracle", "FullyOracle+CMT",
                   "Other"]


def test_block_matches_scipy_welch_with_holm(tmp_path):
    values = {
        "SimFormer": [40.0, 43.0, 45.0],
        "SimFormer+CMT": [66.0, 64.0, 69.0, 65.0],
        "SimFormer+CrossRef": [44.0, 41.0, 47.0],
        "SimFormer+Single": [50.0],  # one seed: no test
        "FullyOracle": [50.0, 55.0, 53.0],
        "FullyOracle+CMT": [80.0, 78.0, 77.0],
        "SimFormer*+CMT": [70.0, 72.0],  # re-training: compared with its stage-1 model
    }
    rows = [dict(run=f"{m}/split1/seed{i}", method=m, split="split1", seed=i, novel_miou=v, base_miou=v + 1,
                 miou=v + 2, hm=v + 3) for m, vs in values.items() for i, v in enumerate(vs, 1)]
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- generated:variants-tests -->\nold\n<!-- /generated:variants-tests -->\nend\n")
    block = variants_report.build(str(tmp_path), str(doc))

    base = values["SimFormer"]
    raw = [stats.ttest_ind(values[m], base, equal_var=False).pvalue for m in ("SimFormer+CMT", "SimFormer+CrossRef")]
    order = np.argsort(raw)  # Holm over the two testable variants of the family
    holm = np.empty(2)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (2 - rank) * raw[i]))
        holm[i] = running
    line = {r.split("|")[1].strip(" *"): r for r in block.splitlines() if r.startswith("|")}
    cmt = [c.strip() for c in line["SimFormer+CMT"].split("|")]
    assert cmt[2] == "SimFormer" and cmt[3] == "4"
    assert float(cmt[5]) == round(np.mean(values["SimFormer+CMT"]) - np.mean(base), 1)
    assert cmt[6] == fmt_p(holm[0])
    crossref = [c.strip() for c in line["SimFormer+CrossRef"].split("|")]
    assert crossref[6] == fmt_p(holm[1])
    single = [c.strip() for c in line["SimFormer+Single"].split("|")]
    assert single[6] == "–"
    # novel relative to FullyOracle with the same decoder
    assert cmt[-2] == f"{100 * np.mean(values['SimFormer+CMT']) / np.mean(values['FullyOracle+CMT']):.0f} % of FullyOracle+CMT"
    fo = [c.strip() for c in line["FullyOracle+CMT"].split("|")]
    p_fo = stats.ttest_ind(values["FullyOracle+CMT"], values["FullyOracle"], equal_var=False).pvalue
    assert fo[6] == fmt_p(p_fo)
    star = [c.strip() for c in line["SimFormer*+CMT"].split("|")]
    p_star = stats.ttest_ind(values["SimFormer*+CMT"], values["SimFormer+CMT"], equal_var=False).pvalue
    assert star[2] == "SimFormer+CMT" and star[6] == fmt_p(p_star)  # the only variant of that baseline
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith("end\n") and "old" not in text
    assert (tmp_path / "points_novel_miou.png").stat().st_size > 0

    # with the proposal analysis beside the results, the oracle-gap block follows
    gap = pd.DataFrame([dict(method=m, split="split1", seed=1, run=f"{m}/split1/seed1", novel_achieved=a,
                             novel_oracle=o, novel_union=o + 1, oracle_gap=o - a, base_achieved=0, base_oracle=0,
                             base_union=0, num_images=4) for m, a, o in (("FullyOracle", 50.0, 70.0),
                                                                         ("SimFormer+CMT", 66.0, 70.0),
                                                                         ("SimFormer*+CMT", 70.0, 72.0),
                                                                         ("SimFormer", 40.0, 62.0))])
    gap.to_csv(tmp_path / "oracle_gap.csv", index=False)
    variants_report.build(str(tmp_path), str(doc))
    text = doc.read_text()
    assert "<!-- generated:variants-oracle-gap -->" in text
    assert "| SimFormer+CMT | 1 | 66.0 | 70.0 | 71.0 | 4.0 |" in text
    gap_rows = [r.split("|")[1].strip() for r in text.split("generated:variants-oracle-gap")[1].splitlines()
                if r.startswith("| ") and not r.startswith("| method")]
    # family order (method_order), not the order of results.csv or of the CSV
    assert gap_rows == ["SimFormer", "SimFormer+CMT", "SimFormer*+CMT", "FullyOracle"]


def test_named_block_leaves_the_other_sweeps_block_alone(tmp_path):
    rows = [dict(run=f"{m}/split1/seed{i}", method=m, split="split1", seed=i, novel_miou=v, base_miou=v,
                 miou=v, hm=v) for m, vs in {"SimFormer": [40.0, 44.0], "SimFormer+CMT": [60.0, 66.0]}.items()
            for i, v in enumerate(vs, 1)]
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- generated:variants-tests -->\nfirst sweep\n<!-- /generated:variants-tests -->\n"
                   "<!-- generated:variants-recipe-tests -->\nold\n<!-- /generated:variants-recipe-tests -->\n")
    variants_report.main([str(tmp_path), "--doc", str(doc), "--block", "variants-recipe"])
    text = doc.read_text()
    assert "first sweep" in text and "old" not in text
    recipe = text.split("<!-- generated:variants-recipe-tests -->")[1]
    p = stats.ttest_ind([60.0, 66.0], [40.0, 44.0], equal_var=False).pvalue
    cmt = [r for r in recipe.splitlines() if r.startswith("| SimFormer+CMT ")][0].split("|")
    assert cmt[5].strip() == "21.0" and cmt[6].strip() == fmt_p(p)


def test_per_class_block_means_by_hand(tmp_path):
    import json

    names = ["sky", "grass", "water", "ball", "star", "widget"]  # widget: not a ToyScenes class
    split = {"class_names": names, "base": [0, 2, 3, 5], "novel": [1, 4]}
    iou = {("SimFormer", 1): [90, 80, 70, 60, 40, 10], ("SimFormer", 2): [92, 84, 74, 62, 30, 20],
           ("SimFormer+CMT", 1): [94, 86, 90, 80, 50, 30]}
    rows = []
    for (method, seed), values in iou.items():
        run_dir = f"runs/{method}/split1/seed{seed}"
        os.makedirs(tmp_path / run_dir)
        (tmp_path / run_dir / "metrics.json").write_text(json.dumps({"per_class_iou": dict(zip(names, values))}))
        (tmp_path / run_dir / "run_info.json").write_text(json.dumps({"split": split}))
        rows.append(dict(method=method, seed=seed, run_dir=run_dir))
    rows.append(dict(method="FullyOracle", seed=1, run_dir="runs/elsewhere"))  # files not here: no column
    text = variants_report.per_class_block(pd.DataFrame(rows), str(tmp_path))
    cells = [[c.strip(" *") for c in r.split("|")[1:-1]] for r in text.splitlines() if r.startswith("| ")]
    line = {c[0]: c[1:] for c in cells if not c[0].startswith("mean of")}
    assert line["class"] == ["kind", "SimFormer (n = 2)", "SimFormer+CMT (n = 1)"]
    assert line["star"] == ["thing, novel", "35.0", "50.0"]
    assert line["widget"] == ["other, base", "15.0", "30.0"]
    # group rows: the mean of the class means of their members (sky + water; grass; ball; star; widget)
    groups = {c[1]: c[2:] for c in cells if c[0].startswith("mean of")}
    assert groups == {"stuff, base": ["81.5", "92.0"], "stuff, novel": ["82.0", "86.0"],
                      "thing, base": ["61.0", "80.0"], "thing, novel": ["35.0", "50.0"],
                      "other, base": ["15.0", "30.0"]}
    assert variants_report.per_class_block(pd.DataFrame(rows[-1:]), str(tmp_path)) == ""


def test_step_time_block_medians_by_hand(tmp_path):
    rows = [dict(run=f"{m}/split1/seed{i}", method=m, split="split1", seed=i, novel_miou=50.0, base_miou=50.0,
                 miou=50.0, hm=50.0) for m in ("SimFormer", "SimFormer+CMT", "FullyOracle") for i in (1, 2)]
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    # per run: the median of its logged periods; per method: the median of its runs
    logged = {("SimFormer", 1): [1.0, 1.2, 5.0], ("SimFormer", 2): [0.8, 0.9, 1.0],  # run medians 1.2, 0.9
              ("SimFormer+CMT", 1): [1.5, 1.4, 1.6], ("SimFormer+CMT", 2): [1.2, 1.1, 1.3]}  # 1.5, 1.2
    curves = [dict(method=m, split="split1", seed=s, iteration=20 * (k + 1), series="time_per_iter", value=v)
              for (m, s), vs in logged.items() for k, v in enumerate(vs)]
    curves.append(dict(method="FullyOracle", split="split1", seed=1, iteration=20, series="total_loss", value=3.0))
    pd.DataFrame(curves).to_csv(tmp_path / "curves.csv", index=False)
    text = variants_report.step_time_block(pd.read_csv(tmp_path / "results.csv"), str(tmp_path))
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]] for r in text.splitlines()
            if r.startswith("| ") and not r.startswith("| method")}
    assert rows["SimFormer"] == ["2", "not recorded (2)", "1.05", "0.90-1.20", ""]  # (1.2 + 0.9) / 2
    assert rows["SimFormer+CMT"] == ["2", "not recorded (2)", "1.35", "1.20-1.50", f"{1.35 / 1.05:.2f}x SimFormer"]
    assert "FullyOracle" not in rows  # it logged no step time
    only_one = pd.read_csv(tmp_path / "curves.csv")
    only_one[only_one["method"] != "SimFormer+CMT"].to_csv(tmp_path / "curves.csv", index=False)
    assert variants_report.step_time_block(pd.read_csv(tmp_path / "results.csv"), str(tmp_path)) == ""


def test_step_time_ratio_only_over_runs_of_the_baselines_machine(tmp_path):
    """Runs name their machine in run_info.json: a variant's ratio uses its runs on the baseline's
    machines only, and a variant trained elsewhere gets none."""
    import json

    machines = {("SimFormer", 1): "A", ("SimFormer", 2): "A", ("SimFormer-res3", 1): "A", ("SimFormer-res3", 2): "B",
                ("SimFormer-res3", 3): "B", ("SimFormer+CMT", 1): "B"}
    rows = []
    for (m, s), host in machines.items():
        run_dir = os.path.join("runs", m, "split1", f"seed{s}")
        os.makedirs(tmp_path / run_dir)
        with open(tmp_path / run_dir / "run_info.json", "w") as f:
            json.dump({"versions": {"platform": f"Linux-6.18.44-fc-{'v1272' if host == 'A' else 'v1300'}-x86_64"}}, f)
        rows.append(dict(run=f"{m}/split1/seed{s}", method=m, split="split1", seed=s, novel_miou=50.0,
                         base_miou=50.0, miou=50.0, hm=50.0, run_dir=run_dir))
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    step = {("SimFormer", 1): 1.0, ("SimFormer", 2): 1.2, ("SimFormer-res3", 1): 0.88, ("SimFormer-res3", 2): 0.7,
            ("SimFormer-res3", 3): 0.72, ("SimFormer+CMT", 1): 0.5}
    pd.DataFrame([dict(method=m, split="split1", seed=s, iteration=20, series="time_per_iter", value=v)
                  for (m, s), v in step.items()]).to_csv(tmp_path / "curves.csv", index=False)
    text = variants_report.step_time_block(pd.read_csv(tmp_path / "results.csv"), str(tmp_path))
    got = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]] for r in text.splitlines()
           if r.startswith("| ") and not r.startswith("| method")}
    assert got["SimFormer"] == ["2", "v1272 (2)", "1.10", "1.00-1.20", ""]
    # all three runs in the median, only the v1272 one in the ratio: 0.88 / 1.10
    assert got["SimFormer-res3"] == ["3", "v1272 (1), v1300 (2)", "0.72", "0.70-0.88",
                                     "0.80x SimFormer (1 of 3 runs: same machine)"]
    assert got["SimFormer+CMT"][1:] == ["v1300 (1)", "0.50", "0.50-0.50", "– (other machine)"]
    assert variants_report.short_machine("Darwin-23.1.0-arm64") == "Darwin-23.1.0-arm64"


def test_stacked_variant_is_compared_with_the_variant_it_adds_to(tmp_path):
    values = {"SimFormer": [40.0, 43.0, 45.0], "SimFormer+CMT": [66.0, 64.0, 69.0],
              "SimFormer+CrossRef": [41.0, 44.0], "SimFormer+CMT+CrossRef": [60.0, 63.0, 61.0],
              "FullyOracle": [50.0, 55.0]}
    rows = [dict(run=f"{m}/split1/seed{i}", method=m, split="split1", seed=i, novel_miou=v, base_miou=v,
                 miou=v + 1, hm=v) for m, vs in values.items() for i, v in enumerate(vs, 1)]
    df = pd.DataFrame(rows)
    assert variants_report.parent_of("SimFormer+CMT+CrossRef", values) == "SimFormer+CMT"
    assert variants_report.parent_of("SimFormer+CMT", values) == ""  # its parent is its baseline
    assert variants_report.parent_of("SimFormer+PointLoss+CMT", values) == ""  # no SimFormer+PointLoss run
    text = variants_report.stacked_block(df)
    line = [r for r in text.splitlines() if r.startswith("| SimFormer+CMT+CrossRef ")][0]
    cells = [c.strip() for c in line.split("|")[1:-1]]
    p = stats.ttest_ind(values["SimFormer+CMT+CrossRef"], values["SimFormer+CMT"], equal_var=False).pvalue
    assert cells[:3] == ["SimFormer+CMT+CrossRef", "SimFormer+CMT", "3"]
    assert cells[3] == f"{np.mean(values['SimFormer+CMT+CrossRef']) - np.mean(values['SimFormer+CMT']):.1f}"
    assert cells[4] == fmt_p(p)  # the only stacked comparison: Holm leaves it as is
    assert variants_report.stacked_block(df[df["method"] != "SimFormer+CMT"]) == ""
