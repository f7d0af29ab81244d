"""analysis/machine_blocks.py: runs grouped by the machine that trained them, against hand computations."""
import json
import os
import sys

import pandas as pd
import pytest
from scipy import stats

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "analysis"))

import machine_blocks  # noqa: E402

OLD, NEW = "Linux-old-kernel", "Linux-new-kernel"
# (method, machine, cpu recorded?, novel values by seed)
RUNS = [("SimFormer", OLD, False, [53.0, 55.0, 51.0]),
        ("CAM*", NEW, True, [60.0, 57.0, 62.0]),
        ("Pr", NEW, False, [10.0, 14.0]),
        ("Pr@900", OLD, False, [5.0, 7.0])]


def fmt_p(p: float) -> str:
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


def write_run(path, platform: str, cpu: bool, novel: float, metrics_name: str = "metrics.json") -> None:
    """A run folder; a run with its CPU recorded also has its data fingerprint (as since 2026-12-07)."""
    os.makedirs(path, exist_ok=True)
    info = {"versions": {"platform": platform}}
    if cpu:
        info.update(cpu="AMD EPYC", cpu_capability="AVX2",
                    datasets={"toy_train": {"sha256": "abcdef0123456789"}, "toy_val": {"sha256": "ffff"}})
    with open(os.path.join(path, "run_info.json"), "w") as f:
        json.dump(info, f)
    with open(os.path.join(path, metrics_name), "w") as f:
        json.dump({"novel_miou": novel, "base_miou": novel + 20, "hm": novel + 5}, f)


def results(tmp_path) -> pd.DataFrame:
    rows = []
    for method, platform, cpu, values in RUNS:
        for seed, v in enumerate(values, 1):
            run_dir = f"runs/{method}/split1/seed{seed}"
            write_run(tmp_path / run_dir, platform, cpu, v)
            rows.append(dict(method=method, split="split1", seed=seed, novel_miou=v, base_miou=v + 20, hm=v + 5,
                             run_dir=run_dir))
    return pd.DataFrame(rows)


def extra(tmp_path, values=(63.0, 59.0)) -> pd.DataFrame:
    for seed, v in enumerate(values, 1):
        write_run(tmp_path / f"probe/seed{seed}", NEW, True, v, "stage1_metrics.json")
    return machine_blocks.read_extra_runs([f"SimFormer={tmp_path}/probe/seed*/stage1_metrics.json"])


def cells(text: str, *first):
    """The cells of the table rows of ``text`` whose leading cells are ``first``."""
    rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in text.splitlines() if ln.startswith("| ")]
    return [r for r in rows if r[:len(first)] == list(first)]


def test_machine_of_reads_platform_and_cpu(tmp_path):
    write_run(tmp_path / "a", NEW, True, 1.0)
    write_run(tmp_path / "b", OLD, False, 1.0)
    assert machine_blocks.machine_of(str(tmp_path / "a")) == (NEW, "AMD EPYC (AVX2)", "abcdef012345")
    assert machine_blocks.machine_of(str(tmp_path / "b")) == (OLD,) + (machine_blocks.NOT_RECORDED,) * 2
    assert machine_blocks.machine_of(str(tmp_path / "none")) == (machine_blocks.NOT_RECORDED,) * 3


def test_extra_runs_need_matching_files(tmp_path):
    with pytest.raises(SystemExit, match="none found"):
        machine_blocks.read_extra_runs([f"SimFormer={tmp_path}/nothing/*.json"])
    (tmp_path / "bad.json").write_text(json.dumps({"novel_miou": 1.0}))
    with pytest.raises(SystemExit, match="bad.json"):
        machine_blocks.read_extra_runs([f"SimFormer={tmp_path}/bad.json"])


def test_block_groups_by_machine_and_leaves_out_other_budgets(tmp_path):
    text = machine_blocks.machine_block(results(tmp_path), str(tmp_path), extra(tmp_path))
    assert not cells(text, "Pr@900")
    (sim_old,) = cells(text, "SimFormer", OLD)
    assert sim_old[2:6] == ["not recorded (3)", "not recorded (3)", "3", "53.0 ± 2.0"]
    (sim_new,) = cells(text, "SimFormer", NEW)
    assert sim_new[2:6] == ["AMD EPYC (AVX2) (2)", "abcdef012345 (2)", "2", "61.0 ± 2.8"]


def test_same_method_on_two_machines_is_a_welch_test(tmp_path):
    text = machine_blocks.machine_block(results(tmp_path), str(tmp_path), extra(tmp_path))
    (row,) = cells(text, "SimFormer", "novel_miou", OLD, NEW)
    p = stats.ttest_ind([63.0, 59.0], [53.0, 55.0, 51.0], equal_var=False).pvalue
    assert row[4:8] == ["3 vs 2", "53.0", "61.0", "+8.0"] and row[9] == fmt_p(p)
    # seeds 1 and 2 ran on both machines (the probe's seedN folders): 63 - 53, 59 - 55
    assert row[10] == f"+7.0 (2, p = {fmt_p(stats.ttest_1samp([10.0, 4.0], 0.0).pvalue)})"


def test_comparisons_stay_within_one_machine_with_holm(tmp_path):
    text = machine_blocks.machine_block(results(tmp_path), str(tmp_path), extra(tmp_path))
    sim, cam, pr = [63.0, 59.0], [60.0, 57.0, 62.0], [10.0, 14.0]
    raw = {"CAM*": stats.ttest_ind(cam, sim, equal_var=False).pvalue,
           "Pr": stats.ttest_ind(pr, sim, equal_var=False).pvalue}
    lo, hi = sorted(raw, key=raw.get)
    holm = {lo: min(1.0, 2 * raw[lo])}
    holm[hi] = max(holm[lo], min(1.0, raw[hi]))
    for method, values in (("CAM*", cam), ("Pr", pr)):
        (row,) = cells(text, NEW, "novel_miou", method, "SimFormer")
        assert float(row[7]) == round(sum(values) / len(values) - 61.0, 1)
        assert row[9:11] == [fmt_p(raw[method]), fmt_p(holm[method])]
    # SimFormer on the old machine has no other method of the comparison there: no row.
    assert not cells(text, OLD, "novel_miou")


def test_no_block_when_every_run_is_on_one_machine(tmp_path):
    df = results(tmp_path)
    assert machine_blocks.machine_block(df[df["method"].isin(["CAM*", "Pr"])], str(tmp_path)) == ""
