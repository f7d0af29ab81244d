"""Result tables that grow across machines: committed rows of absent runs stay, re-analysed ones replace theirs."""
import json
import os
import sys

import pandas as pd

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "analysis"))

import collect_runs  # noqa: E402
from kept_rows import merge_rows  # noqa: E402


def test_merge_rows_replaces_in_place_keeps_absent_and_appends_new():
    known = pd.DataFrame({"run": ["a", "b", "c"], "v": [1, 2, 3]})
    fresh = pd.DataFrame({"run": ["d", "b"], "v": [40, 20]})
    merged = merge_rows(known, fresh)
    assert list(merged["run"]) == ["a", "b", "c", "d"] and list(merged["v"]) == [1, 20, 3, 40]
    assert merge_rows(None, fresh).equals(fresh)


def sweep_with(tmp_path, name, runs):
    """A sweep folder holding ``runs``: {(method, seed): final mIoU}."""
    sweep, rows = tmp_path / name, []
    for (method, seed), final in runs.items():
        run = f"{method}/split1/seed{seed}"
        d = sweep / run
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"miou": final}))
        (d / "metrics.jsonl").write_text(json.dumps({"iteration": 10, "total_loss": final}) + "\n")
        rows.append({"run": run, "method": method, "split": "split1", "seed": seed, "miou": final, "run_dir": str(d)})
    pd.DataFrame(rows).to_csv(sweep / "results.csv", index=False)
    return str(sweep)


def test_collect_keep_adds_runs_of_a_new_machine_without_losing_the_committed_ones(tmp_path):
    dest = tmp_path / "docs"
    collect_runs.collect(sweep_with(tmp_path, "first", {("A", 1): 30.0, ("A", 2): 34.0}), str(dest))
    # a later session on a fresh machine holds only A/seed2 (re-run) and a new method B
    second = sweep_with(tmp_path, "second", {("A", 2): 36.0, ("B", 1): 20.0})
    collect_runs.collect(second, str(dest), keep=True)
    res = pd.read_csv(dest / "results.csv")
    assert list(res["run"]) == ["A/split1/seed1", "A/split1/seed2", "B/split1/seed1"]
    assert list(res["miou"]) == [30.0, 36.0, 20.0]
    curves = pd.read_csv(dest / "curves.csv")
    assert dict(zip(curves["run"], curves["value"])) == {"A/split1/seed1": 30.0, "A/split1/seed2": 36.0,
                                                         "B/split1/seed1": 20.0}
    assert len(curves) == 3
    # without --keep the destination is the sweep folder's runs only
    collect_runs.collect(second, str(dest))
    assert list(pd.read_csv(dest / "results.csv")["run"]) == ["A/split1/seed2", "B/split1/seed1"]


def test_collect_keep_adds_the_run_column_to_curves_written_without_it(tmp_path):
    dest = tmp_path / "docs"
    collect_runs.collect(sweep_with(tmp_path, "first", {("A", 1): 30.0}), str(dest))
    old = pd.read_csv(dest / "curves.csv").drop(columns="run")
    old.to_csv(dest / "curves.csv", index=False)
    collect_runs.collect(sweep_with(tmp_path, "second", {("B", 1): 20.0}), str(dest), keep=True)
    curves = pd.read_csv(dest / "curves.csv")
    assert list(curves["run"]) == ["A/split1/seed1", "B/split1/seed1"] and list(curves["value"]) == [30.0, 20.0]


def test_collect_cli_names_a_missing_sweep_in_one_line(tmp_path, capsys):
    assert collect_runs.main([str(tmp_path / "nowhere"), "--to", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert "nowhere" in err and "simformer sweep" in err and "\n" not in err
