"""Sweeps: expansion against hand-written run lists, validation messages, and the skip / resume /
fail / parallel / interrupt logic of both executors, driven by a fake runner script that accepts
the same arguments as ``python -m simformer train`` and writes metrics from a known formula."""
import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from simformer.config import load_cfg
from simformer import sweeps as S

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPLIT1 = os.path.join(REPO, "splits", "toyscenes", "split1.json")
SPLIT2 = os.path.join(REPO, "splits", "toyscenes", "split2.json")

FAKE = r'''
import json, os, signal, sys, time


def _lock_fd_ok(out):
    """The inherited descriptor named by SIMFORMER_RUN_LOCK_FD is the run's .lock file."""
    fd = os.environ.get("SIMFORMER_RUN_LOCK_FD")
    if fd is None:
        return None
    try:
        a, b = os.fstat(int(fd)), os.stat(os.path.join(out, ".lock"))
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


args = sys.argv[1:]
stage = args[0]
config = args[args.index("--config") + 1]
out = args[args.index("--output") + 1]
resume = "--resume" in args
rest = [a for a in args[args.index("--output") + 2:] if a != "--resume"]
pairs = dict(zip(rest[0::2], rest[1::2]))
os.makedirs(out, exist_ok=True)
call = {"stage": stage, "config": os.path.basename(config), "resume": resume, "opts": pairs,
        "start": time.time(), "pythonpath": os.environ.get("PYTHONPATH", ""),
        "progress": os.environ.get("SIMFORMER_PROGRESS"), "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "rank_env": os.environ.get("RANK"), "omp": os.environ.get("OMP_NUM_THREADS"),
        "threads": os.environ.get("SIMFORMER_THREADS"), "wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "lock_fd_ok": _lock_fd_ok(out)}
print("fake run", out, flush=True)
if os.environ.get("FAKE_HANG"):
    def stopped(signum, frame):  # the sweep stops children with SIGINT: leave a trace of a clean exit
        open(os.path.join(out, "interrupted"), "w").close()
        sys.exit(130)

    signal.signal(signal.SIGINT, stopped)  # before announcing readiness through the pid file
    with open(os.path.join(out, "pid.tmp"), "w") as f:
        f.write(str(os.getpid()))
    os.replace(os.path.join(out, "pid.tmp"), os.path.join(out, "pid"))
    time.sleep(60)
time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
seed = int(pairs["SEED"])
if os.path.basename(config).startswith("bad") or str(seed) in os.environ.get("FAKE_FAIL_SEEDS", "").split(","):
    print("line before the error\nboom: this run fails", flush=True)
    sys.exit(3)
if os.path.exists(os.path.join(out, "last_checkpoint")) and not resume:
    print("checkpoint present but --resume missing", flush=True)
    sys.exit(4)
k = int(os.path.splitext(os.path.basename(pairs["WEAKSHOT.SPLIT"]))[0][-1])
a = float(pairs.get("WEAKSHOT.DISTILL.LOSS_WEIGHT", 0.0))
novel, base = 10.0 * seed + k + a, 50.0 + seed + 0.5 * k
metrics = {"miou": (18 * base + 6 * novel) / 24, "base_miou": base, "novel_miou": novel,
           "hm": 2 * base * novel / (base + novel), "fwiou": 70.0 + seed, "macc": 60.0 + k, "pacc": 90.0,
           "per_class_iou": {"sky": 1.0}}
with open(os.path.join(out, "model_final.pth"), "w") as f:
    f.write("weights")
with open(os.path.join(out, "run_info.json"), "w") as f:
    json.dump({"git_commit": "fake%d" % seed}, f)
with open(os.path.join(out, "metrics.json"), "w") as f:
    json.dump(metrics, f)
call["end"] = time.time()
with open(os.path.join(out, "calls.jsonl"), "a") as f:
    f.write(json.dumps(call) + "\n")
'''


def expected_metrics(seed, k, a=0.0):
    novel, base = 10.0 * seed + k + a, 50.0 + seed + 0.5 * k
    return {"novel_miou": novel, "base_miou": base, "miou": (18 * base + 6 * novel) / 24,
            "hm": 2 * base * novel / (base + novel), "fwiou": 70.0 + seed, "macc": 60.0 + k, "pacc": 90.0}


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Configs, the fake runner and a sweep writer in tmp_path; cwd = tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(S.RUNNER_ENV, raising=False)
    for k in ("FAKE_HANG", "FAKE_SLEEP", "FAKE_FAIL_SEEDS"):
        monkeypatch.delenv(k, raising=False)
    (tmp_path / "base.yaml").write_text("SOLVER:\n  MAX_ITER: 10\n")
    (tmp_path / "pr.yaml").write_text("_BASE_: base.yaml\nWEAKSHOT:\n  SIMNET:\n    ENABLED: False\n"
                                      "  DISTILL:\n    ENABLED: False\n")
    (tmp_path / "bad.yaml").write_text("_BASE_: base.yaml\n")
    (tmp_path / "fake.py").write_text(FAKE)

    def write(text, name="sweep.yaml"):
        p = tmp_path / name
        p.write_text(textwrap.dedent(text))
        return str(p)

    return argparse.Namespace(tmp=tmp_path, write=write, runner=[sys.executable, str(tmp_path / "fake.py")])


SWEEP = f"""
name: t
output: runs
base_config: base.yaml
opts: {{SOLVER.MAX_ITER: 600, SOLVER.BASE_LR: 0.001}}
methods:
  Pr: {{config: pr.yaml, opts: {{SOLVER.BASE_LR: 0.002}}}}
  SimFormer: {{}}
splits: [{SPLIT1}, {SPLIT2}]
seeds: [1, 2]
grid:
  alpha: {{key: WEAKSHOT.DISTILL.LOSS_WEIGHT, values: [0.05, 0.5], methods: [SimFormer]}}
"""


def calls(run):
    path = os.path.join(run.run_dir, "calls.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


def quiet(_):
    pass


# ---------------------------------------------------------------------------------------------
# Expansion
# ---------------------------------------------------------------------------------------------
def test_expansion_matches_hand_written_list(env):
    sweep = S.load_sweep(env.write(SWEEP))
    names = [r.name for r in sweep.runs]
    assert names == [
        "Pr/split1/seed1", "Pr/split1/seed2", "Pr/split2/seed1", "Pr/split2/seed2",
        "SimFormer/split1/seed1/alpha=0.05", "SimFormer/split1/seed1/alpha=0.5",
        "SimFormer/split1/seed2/alpha=0.05", "SimFormer/split1/seed2/alpha=0.5",
        "SimFormer/split2/seed1/alpha=0.05", "SimFormer/split2/seed1/alpha=0.5",
        "SimFormer/split2/seed2/alpha=0.05", "SimFormer/split2/seed2/alpha=0.5",
    ]
    assert sweep.grid_columns == ["alpha"]
    out = str(env.tmp / "runs")
    assert sweep.output == out
    pr = sweep.runs[2]
    assert (pr.method, pr.split, pr.seed, pr.params, pr.stage) == ("Pr", "split2", 1, {}, "train")
    assert pr.run_dir == os.path.join(out, "Pr", "split2", "seed1")
    # method opts replace the sweep's value of the same key; split, seed follow
    assert pr.args() == ["train", "--config", str(env.tmp / "pr.yaml"), "--output", pr.run_dir,
                         "SOLVER.MAX_ITER", "600", "SOLVER.BASE_LR", "0.002",
                         "WEAKSHOT.SPLIT", SPLIT2, "SEED", "1"]
    sf = sweep.runs[7]
    assert sf.name == "SimFormer/split1/seed2/alpha=0.5" and sf.params == {"alpha": 0.5}
    assert sf.run_dir == os.path.join(out, "SimFormer", "split1", "seed2", "alpha=0.5")
    assert sf.args(resume=True) == ["train", "--config", str(env.tmp / "base.yaml"), "--output", sf.run_dir,
                                    "--resume", "SOLVER.MAX_ITER", "600", "SOLVER.BASE_LR", "0.001",
                                    "WEAKSHOT.SPLIT", SPLIT1, "SEED", "2", "WEAKSHOT.DISTILL.LOSS_WEIGHT", "0.5"]
    # the overrides really produce the intended config
    cfg = load_cfg(sf.config, list(sf.opts))
    assert (cfg.SEED, cfg.WEAKSHOT.DISTILL.LOSS_WEIGHT, cfg.SOLVER.MAX_ITER, cfg.WEAKSHOT.SPLIT) == (2, 0.5, 600, SPLIT1)
    assert load_cfg(pr.config, list(pr.opts)).WEAKSHOT.SIMNET.ENABLED is False
    # deterministic: a second expansion is identical
    assert [(r.name, r.args()) for r in S.load_sweep(env.write(SWEEP)).runs] == [(r.name, r.args()) for r in sweep.runs]
    assert S.build_command(pr, resume=False, runner=["X"]) == ["X"] + pr.args()


def test_defaults_stage_pipeline_and_split_names(env, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "split1.json").write_text(open(SPLIT2).read())
    path = env.write(f"""
        base_config: base.yaml
        methods:
          "SimFormer*": {{stage: pipeline, retrain_config: base.yaml}}
        splits: [{SPLIT1}, other/split1.json]
    """, name="mini.yaml")
    sweep = S.load_sweep(path)
    # name = file stem; output runs/<name>; seed from the config (SEED default 1, no override)
    assert sweep.name == "mini" and sweep.output == str(tmp_path / "runs" / "mini")
    assert [r.name for r in sweep.runs] == ["SimFormer*/toyscenes/split1/seed1", "SimFormer*/other/split1/seed1"]
    r = sweep.runs[1]
    assert r.run_dir == os.path.join(sweep.output, "SimFormer_", "other_split1", "seed1")
    assert r.args() == ["pipeline", "--config", str(tmp_path / "base.yaml"), "--output", r.run_dir,
                        "--retrain-config", str(tmp_path / "base.yaml"), "WEAKSHOT.SPLIT", str(other / "split1.json")]
    # mapping form names splits explicitly
    path = env.write(f"base_config: base.yaml\nsplits: {{a: {SPLIT1}, b: {SPLIT2}}}\nseeds: [3]\n", name="m.yaml")
    assert [r.name for r in S.load_sweep(path).runs] == ["base/a/seed3", "base/b/seed3"]


def test_select_only(env):
    sweep = S.load_sweep(env.write(SWEEP))
    assert [r.name for r in sweep.select(["Pr/*/seed2"])] == ["Pr/split1/seed2", "Pr/split2/seed2"]
    assert len(sweep.select(["Pr/*", "*alpha=0.5"])) == 4 + 4
    with pytest.raises(S.SweepError, match="matches none"):
        sweep.select(["Nope/*"])


@pytest.mark.parametrize("text, needles", [
    ("base_config: base.yaml\nseed: [1]\n", ["unknown key 'seed'", "Did you mean 'seeds'"]),
    ("base_config: base.yaml\nmethods:\n  Pr: {conifg: pr.yaml}\n", ["methods.Pr", "unknown key 'conifg'"]),
    ("base_config: base.yaml\nmethods:\n  Pr: {config: missing.yaml}\n", ["methods.Pr.config", "file not found: missing.yaml"]),
    ("base_config: nothere.yaml\n", ["base_config", "file not found: nothere.yaml"]),
    ("base_config: base.yaml\nopts: {SOLVER.MAX_ITR: 5}\n", ["run base/<config split>/seed*", "SOLVER.MAX_ITR", "SOLVER.MAX_ITER"]),
    ("base_config: base.yaml\nmethods:\n  Pr: {opts: {WEAKSHOT.NOPE: 1}}\n", ["method 'Pr'", "WEAKSHOT.NOPE"]),
    ("base_config: base.yaml\ngrid:\n  a: {key: SOLVER.LRR, values: [1]}\n", ["a=1", "SOLVER.LRR"]),
    ("base_config: base.yaml\ngrid:\n  a: {key: SOLVER.BASE_LR, values: [0.1], methods: [X]}\n", ["grid.a", "['X']"]),
    ("base_config: base.yaml\ngrid:\n  seed: {key: SOLVER.BASE_LR, values: [0.1]}\n", ["grid.seed", "reserved"]),
    ("base_config: base.yaml\nseeds: [1, 1]\n", ["seeds has duplicates"]),
    ("base_config: base.yaml\nmethods:\n  Pr: {stage: eval}\n", ["methods.Pr", "stage"]),
    ("base_config: base.yaml\nsplits: [nosuch.json]\n", ["splits[0]", "nosuch.json"]),
    ("base_config: base.yaml\nsplits: [" + SPLIT1 + ", " + SPLIT1 + "]\n", ["splits", "both named"]),
    ("base_config: base.yaml\nsplits: [" + os.path.join(REPO, "splits", "ade20k", "split1.json") + "]\n",
     ["is for dataset 'ade20k'", "toyscenes"]),
    ("base_config: base.yaml\nopts: {OUTPUT_DIR: x}\n", ["OUTPUT_DIR"]),
    ("base_config: base.yaml\ncpu_isa: sse4\n", ["cpu_isa must be one of avx2, avx512, native", "'sse4'"]),
])
def test_validation_errors_name_file_and_entry(env, text, needles):
    path = env.write(text, name="bad_sweep.yaml")
    with pytest.raises(S.SweepError) as e:
        S.load_sweep(path)
    msg = str(e.value)
    assert path in msg
    for n in needles:
        assert n in msg, msg


def test_folder_collision_is_an_error(env):
    path = env.write("base_config: base.yaml\nmethods:\n  'A*': {}\n  'A?': {}\n", name="c.yaml")
    with pytest.raises(S.SweepError, match=r"A\*/all-base/seed1 and A\?/all-base/seed1 would share"):
        S.load_sweep(path)


def test_torchrun_commands(env):
    run = S.load_sweep(env.write(SWEEP)).runs[0]
    py = sys.executable
    assert S.build_command(run, resume=False, gpus=2) == [
        py, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", "-m", "simformer"] + run.args()
    assert S.build_command(run, resume=True, gpus=4, nodes=2, node_rank=1, master_addr="n01", master_port=23456) == [
        py, "-m", "torch.distributed.run", "--nproc_per_node", "4", "--nnodes", "2", "--node_rank", "1",
        "--master_addr", "n01", "--master_port", "23456", "-m", "simformer"] + run.args(resume=True)
    assert S.build_command(run, resume=False) == [py, "-m", "simformer"] + run.args()


# ---------------------------------------------------------------------------------------------
# Local executor
# ---------------------------------------------------------------------------------------------
SMALL = f"""
name: small
output: runs
base_config: base.yaml
methods:
  Good: {{}}
  Bad: {{config: bad.yaml}}
splits: [{SPLIT1}]
seeds: [1, 2]
"""


def test_failure_does_not_stop_others_then_skip_and_results(env):
    sweep = S.load_sweep(env.write(SMALL))
    good1, good2, bad1, bad2 = sweep.runs
    report = S.run_local(sweep.runs, jobs=1, runner=env.runner, log=quiet)
    # Bad runs come after the good ones in order and still all four ran
    assert report.completed == [good1.name, good2.name]
    assert set(report.failed) == {bad1.name, bad2.name}
    assert report.failed[bad1.name] == "exit code 3"
    failed = open(os.path.join(bad2.run_dir, "FAILED")).read()
    assert failed.startswith("exit code 3\n") and "boom: this run fails" in failed and "--config" in failed
    assert "boom" in open(os.path.join(bad2.run_dir, "stdout.log")).read()
    assert [S.run_state(r) for r in sweep.runs] == ["done", "done", "failed", "failed"]
    # children see the checkout on PYTHONPATH and quiet progress bars
    c = calls(good1)[0]
    assert c["pythonpath"].split(os.pathsep)[0] == REPO and c["progress"] == "0" and c["resume"] is False
    # second invocation: done runs skipped (not re-executed), failed ones reported, not rerun
    report2 = S.run_local(sweep.runs, jobs=2, runner=env.runner, log=quiet)
    assert report2.skipped == [good1.name, good2.name] and report2.completed == []
    assert set(report2.failed) == {bad1.name, bad2.name}
    assert len(calls(good1)) == 1 and len(calls(good2)) == 1
    assert open(os.path.join(bad1.run_dir, "stdout.log")).read().count("===== simformer sweep") == 1
    # results: one row per finished run with the fake's values; failed runs listed, not rows
    table, unfinished = S.collect(sweep)
    assert list(table.columns) == ["run", "method", "split", "seed", "novel_miou", "base_miou", "miou", "hm",
                                   "fwiou", "macc", "pacc", "run_dir", "git_commit"]
    assert list(table["run"]) == [good1.name, good2.name]
    for _, row in table.iterrows():
        exp = expected_metrics(row["seed"], 1)
        for k, v in exp.items():
            assert row[k] == pytest.approx(v, abs=1e-12), k
        assert row["git_commit"] == f"fake{row['seed']}"
    assert [(r.name, s) for r, s in unfinished] == [(bad1.name, "failed"), (bad2.name, "failed")]


def test_retry_failed_reruns_and_clears_marker(env, monkeypatch):
    sweep = S.load_sweep(env.write(SMALL))
    good = [r for r in sweep.runs if r.method == "Good"]
    monkeypatch.setenv("FAKE_FAIL_SEEDS", "2")
    report = S.run_local(good, runner=env.runner, log=quiet)
    assert list(report.failed) == [good[1].name]
    monkeypatch.setenv("FAKE_FAIL_SEEDS", "")
    assert list(S.run_local(good, runner=env.runner, log=quiet).failed) == [good[1].name]  # not retried
    assert calls(good[1]) == []
    report = S.run_local(good, runner=env.runner, retry_failed=True, log=quiet)
    assert report.completed == [good[1].name] and report.skipped == [good[0].name] and report.ok
    assert not os.path.exists(os.path.join(good[1].run_dir, "FAILED"))
    assert S.run_state(good[1]) == "done"


def test_partial_run_gets_resume(env):
    sweep = S.load_sweep(env.write(SMALL))
    good1, good2 = sweep.runs[:2]
    os.makedirs(good2.run_dir)
    open(os.path.join(good2.run_dir, "last_checkpoint"), "w").write("model_0000005.pth")
    assert S.run_state(good2) == "partial" and S.run_state(good1) == "new"
    report = S.run_local([good1, good2], runner=env.runner, log=quiet)
    assert report.completed == [good1.name, good2.name]  # the fake exits 4 if --resume is missing
    assert calls(good1)[0]["resume"] is False and calls(good2)[0]["resume"] is True


@pytest.mark.parametrize("jobs", [1, 2])
def test_jobs_run_in_parallel(env, monkeypatch, jobs):
    monkeypatch.setenv("FAKE_SLEEP", "0.6")
    sweep = S.load_sweep(env.write(SMALL))
    good1, good2 = sweep.runs[:2]
    S.run_local([good1, good2], jobs=jobs, runner=env.runner, log=quiet)
    a, b = calls(good1)[0], calls(good2)[0]
    overlap = min(a["end"], b["end"]) - max(a["start"], b["start"])
    if jobs == 2:
        assert overlap > 0.3, (a, b)
    else:
        assert overlap < 0, (a, b)


def test_devices_are_split_between_concurrent_runs(env, monkeypatch):
    monkeypatch.setenv("FAKE_SLEEP", "0.3")
    monkeypatch.setenv("RANK", "3")  # a distributed variable of the sweep's own environment is not inherited
    sweep = S.load_sweep(env.write(SWEEP))
    runs = sweep.runs[:4]
    report = S.run_local(runs, jobs=2, runner=env.runner, gpus=2, devices=["4", "5", "6", "7"], log=quiet)
    assert report.completed and report.ok
    got = [calls(r)[0] for r in runs]
    assert all(c["rank_env"] is None for c in got)
    assert {c["cuda"] for c in got} == {"4,5", "6,7"}
    # the two runs started together (slots 0 and 1) got different GPU groups
    assert {got[0]["cuda"], got[1]["cuda"]} == {"4,5", "6,7"}
    with pytest.raises(S.SweepError, match="groups of --gpus-per-node 2"):
        S.run_local(runs, runner=env.runner, gpus=2, devices=["0", "1", "2"], log=quiet)


def test_cpu_isa_reaches_every_command_and_does_not_change_a_finished_run(env):
    path = env.write(SMALL)
    finished = S.load_sweep(path).runs[0]
    S.run_local([finished], runner=env.runner, log=quiet)
    pinned = S.load_sweep(env.write(SMALL + "cpu_isa: avx2\n"))
    assert all(r.args()[5:7] == ["--cpu-isa", "avx2"] for r in pinned.runs)
    assert pinned.runs[0].args()[:5] == finished.args()[:5] and pinned.runs[0].args()[7:] == finished.args()[5:]
    assert pinned.runs[0].fingerprint == finished.fingerprint  # how it runs, not what it is
    assert S.run_state(pinned.runs[0]) == "done" and S.run_state(pinned.runs[1]) == "new"


def test_changed_spec_is_refused(env):
    path = env.write(SMALL)
    sweep = S.load_sweep(path)
    S.run_local(sweep.runs[:1], runner=env.runner, log=quiet)
    env.write(SMALL.replace("seeds: [1, 2]", "seeds: [1, 2]\nopts: {SOLVER.MAX_ITER: 7}"))
    changed = S.load_sweep(path)
    assert S.run_state(changed.runs[0]) == "changed" and S.run_state(changed.runs[1]) == "new"
    with pytest.raises(S.SweepError, match="Good/split1/seed1"):
        S.run_local(changed.runs, runner=env.runner, log=quiet)
    assert calls(changed.runs[1]) == []  # nothing ran
    os.unlink(os.path.join(changed.runs[0].run_dir, S.RECORD_FILE))  # adopt the run as it is
    assert S.run_state(changed.runs[0]) == "done"


def _save_config(run, stage_dir=None):
    """What the trainer writes into its folder: the resolved config.yaml."""
    folder = run.run_dir if stage_dir is None else os.path.join(run.run_dir, stage_dir)
    config = run.config if stage_dir != "stage2_retrain" else run.retrain_config
    extra = []
    if stage_dir == "stage2_retrain":
        extra = ["WEAKSHOT.PSEUDO_LABEL_DIR", os.path.join(run.run_dir, "pseudo_labels")]
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.yaml"), "w") as f:
        f.write(load_cfg(config, list(run.opts) + ["OUTPUT_DIR", folder] + extra).dump())


def test_edited_base_config_marks_finished_runs_changed_and_a_pin_keeps_them(env):
    path = env.write(SMALL)
    sweep = S.load_sweep(path)
    S.run_local(sweep.runs[:1], runner=env.runner, log=quiet)
    _save_config(sweep.runs[0])
    assert S.run_state(sweep.runs[0]) == "done"
    # The shared base config changes under the finished run: same sweep file, another resolved config.
    (env.tmp / "base.yaml").write_text("SOLVER:\n  MAX_ITER: 12\n")
    edited = S.load_sweep(path)
    assert S.run_state(edited.runs[0]) == "changed"
    assert S.change_reason(edited.runs[0]) == "SOLVER.MAX_ITER: 10 -> 12"
    with pytest.raises(S.SweepError, match="SOLVER.MAX_ITER: 10 -> 12"):
        S.run_local(edited.runs, runner=env.runner, log=quiet)
    # Pinning the run's value in the sweep's opts changes the sweep file's text but not the config.
    env.write(SMALL.replace("seeds: [1, 2]", "seeds: [1, 2]\nopts: {SOLVER.MAX_ITER: 10}"))
    pinned = S.load_sweep(path)
    assert S.change_reason(pinned.runs[0]) is None and S.run_state(pinned.runs[0]) == "done"


def test_pipeline_runs_compare_both_stage_configs(env):
    (env.tmp / "retrain.yaml").write_text("_BASE_: base.yaml\nSOLVER:\n  BASE_LR: 0.002\n")
    path = env.write(f"""
        name: p
        output: runs
        base_config: base.yaml
        methods:
          "SimFormer*": {{stage: pipeline, retrain_config: retrain.yaml}}
        splits: [{SPLIT1}]
        seeds: [1]
        """)
    run = S.load_sweep(path).runs[0]
    for stage in ("stage1_train", "stage2_retrain"):
        _save_config(run, stage)
    assert S.change_reason(run) is None
    (env.tmp / "retrain.yaml").write_text("_BASE_: base.yaml\nSOLVER:\n  BASE_LR: 0.003\n")
    assert S.change_reason(S.load_sweep(path).runs[0]) == "SOLVER.BASE_LR: 0.002 -> 0.003"


def test_adoption_sources_include_a_pipelines_stage_folders_not_the_pipeline(tmp_path):
    from simformer.sweeps.adopt import finished_runs_under

    def finished(folder):
        os.makedirs(folder)
        for name in ("metrics.json", "model_final.pth", "config.yaml"):
            open(os.path.join(folder, name), "w").close()

    pipeline = tmp_path / "SimFormer_" / "seed1"
    for folder in (pipeline, pipeline / "stage1_train", pipeline / "stage2_retrain", tmp_path / "plain",
                   tmp_path / "plain.old-1"):
        finished(str(folder))
    os.makedirs(tmp_path / "unfinished")
    assert finished_runs_under(str(tmp_path)) == [str(pipeline / "stage1_train"), str(pipeline / "stage2_retrain"),
                                                  str(tmp_path / "plain")]


def test_adopt_copies_a_finished_run_with_the_same_config_only(env):
    from simformer.sweeps.adopt import adopt_finished

    other = S.load_sweep(env.write(SMALL.replace("output: runs", "output: other"), "other.yaml"))
    S.run_local(other.runs[:1], runner=env.runner, log=quiet)  # Good seed 1, finished elsewhere
    _save_config(other.runs[0])
    mine = S.load_sweep(env.write(SMALL.replace("Good: {}", "Renamed: {}").replace(
        "Bad: {config: bad.yaml}", "Longer: {opts: {SOLVER.MAX_ITER: 11}}")))
    seed1, seed2, longer1, _ = mine.runs
    assert (seed1.name, seed2.name, longer1.name) == ("Renamed/split1/seed1", "Renamed/split1/seed2",
                                                      "Longer/split1/seed1")
    logged = []
    adopted = adopt_finished(mine.runs, [str(env.tmp / "other")], log=logged.append)
    assert adopted == {seed1.name: other.runs[0].run_dir}  # another seed or budget is another config
    assert S.run_state(seed1) == "done" and S.run_state(seed2) == "new" and S.run_state(longer1) == "new"
    assert logged == [f"[adopt] {seed1.name} <- {other.runs[0].run_dir} (same config)"]
    assert calls(seed1) == calls(other.runs[0])  # the copy, not a new training
    with open(os.path.join(seed1.run_dir, "metrics.json")) as f, \
            open(os.path.join(other.runs[0].run_dir, "metrics.json")) as g:
        assert json.load(f) == json.load(g)
    record = S.read_record(seed1.run_dir)
    assert record["adopted_from"] == other.runs[0].run_dir and record["fingerprint"] == seed1.fingerprint
    assert not os.path.exists(os.path.join(seed1.run_dir, "stdout.log"))  # the sweep's log is not copied
    assert S.change_reason(seed1) is None
    assert adopt_finished(mine.runs, [str(env.tmp / "other")]) == {}  # done now: nothing more to adopt
    with pytest.raises(S.SweepError, match=r"--adopt .*othr: no such folder"):
        adopt_finished(mine.runs, [str(env.tmp / "othr")])


GRACE_S = 10


def _hanging_sweep(env, extra=""):
    """Start a driver running two hanging fake runs; return (driver, runs, child pids) once both
    children have installed their SIGINT handler (they write ``pid`` after that)."""
    script = env.tmp / "driver.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from simformer import sweeps as S
        sw = S.load_sweep({str(env.tmp / 'sweep.yaml')!r})
    """) + textwrap.dedent(extra) + textwrap.dedent(f"""
        try:
            S.run_local(sw.runs[:2], jobs=2, runner={env.runner!r}, grace_s={GRACE_S})
        except KeyboardInterrupt:
            sys.exit(130)
    """))
    env.write(SMALL)
    runs = S.load_sweep(str(env.tmp / "sweep.yaml")).runs[:2]
    proc = subprocess.Popen([sys.executable, str(script)], cwd=env.tmp, start_new_session=True,
                            env=dict(os.environ, FAKE_HANG="1", PYTHONPATH=REPO),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pid_files = [os.path.join(r.run_dir, "pid") for r in runs]
    deadline = time.time() + 120  # two Python start-ups on a loaded machine
    while not all(os.path.exists(p) for p in pid_files):
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail(f"children did not start: {proc.communicate()[0].decode()}")
        time.sleep(0.05)
    return proc, runs, [int(open(p).read()) for p in pid_files]


def _check_stopped_cleanly(proc, runs, child_pids):
    # The driver needs at most GRACE_S to stop its children, plus its own exit: the timeout covers
    # the grace period with room for a loaded machine.
    try:
        out = proc.communicate(timeout=GRACE_S + 50)[0].decode()
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        for pid in child_pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        pytest.fail(f"the sweep did not exit after SIGINT: {proc.communicate()[0].decode()}")
    assert proc.returncode == 130, out
    assert "[interrupted] stopping 2 running run(s)" in out
    for r, pid in zip(runs, child_pids):
        assert os.path.exists(os.path.join(r.run_dir, "interrupted"))  # got SIGINT, exited through its handler
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert not os.path.exists(os.path.join(r.run_dir, "FAILED"))  # interrupted != failed
        assert S.run_state(r) == "new"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_children_cleanly(env, sig):
    proc, runs, child_pids = _hanging_sweep(env)
    os.kill(proc.pid, sig)
    _check_stopped_cleanly(proc, runs, child_pids)


def test_interrupt_inside_popen_poll_does_not_hang(env):
    """The race behind a flaky hang: a KeyboardInterrupt raised while the sweep's loop is inside
    ``Popen.poll()`` can leave the Popen's internal wait lock held (CPython checks for signals right
    after the lock is taken, before the ``try`` that releases it), and then ``Popen.wait()`` after
    SIGKILL blocks forever. Here the signal is delivered deterministically at that point: the
    patched poll takes the lock, signals its own process and runs bytecode with the lock held (a
    handler that raises leaks the lock exactly as CPython's window does). The sweep's handlers only
    set a flag, so poll finishes, releases the lock and the loop stops the children."""
    extra = f"""
        import os, signal, subprocess
        _poll = subprocess.Popen.poll
        trigger = {str(env.tmp / 'trigger')!r}
        fired = []

        def poll(self):
            if not fired and os.path.exists(trigger):
                fired.append(1)
                self._waitpid_lock.acquire()
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(100000):  # a raising handler fires here, with the lock held
                    pass
                self._waitpid_lock.release()
            return _poll(self)

        subprocess.Popen.poll = poll
    """
    proc, runs, child_pids = _hanging_sweep(env, extra)
    (env.tmp / "trigger").write_text("")
    _check_stopped_cleanly(proc, runs, child_pids)


def test_children_get_threads_per_job_and_the_lock(env, monkeypatch):
    for k in ("SIMFORMER_THREADS", "OMP_WAIT_POLICY", "SIMFORMER_THREADS_AUTO"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's count is per run
    sweep = S.load_sweep(env.write(SMALL))
    good1, good2 = sweep.runs[:2]
    S.run_local([good1, good2], jobs=2, runner=env.runner, log=quiet)
    for r in (good1, good2):
        c = calls(r)[0]
        assert (c["omp"], c["threads"], c["wait_policy"], c["lock_fd_ok"]) == ("3", "3", "PASSIVE", True)
    monkeypatch.delenv("OMP_NUM_THREADS")  # automatic: available cores minus load, split between jobs
    from simformer.utils import threads as T

    monkeypatch.setattr(T, "available_cores", lambda *a, **k: 8)
    monkeypatch.setattr(T, "load_average", lambda *a, **k: 2.2)
    sweep = S.load_sweep(env.write(SMALL.replace("output: runs", "output: runs2")))
    S.run_local(sweep.runs[:2], jobs=2, runner=env.runner, log=quiet)
    assert [calls(r)[0]["omp"] for r in sweep.runs[:2]] == ["3", "3"]  # (8 - 2) // 2


# ---------------------------------------------------------------------------------------------
# CLI and results
# ---------------------------------------------------------------------------------------------
def _cli(argv):
    from simformer.commands import sweep as cmd

    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    return cmd.run(parser.parse_args(argv))


def test_cli_runs_collects_and_stats_reads(env, monkeypatch, capsys):
    monkeypatch.setenv(S.RUNNER_ENV, " ".join(env.runner))
    path = env.write(SWEEP.replace("Pr: {config: pr.yaml", "Pr: {config: bad.yaml"))
    assert _cli([path, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "sweep t: 12 runs (12 selected)" in out and "states: new 12" in out
    assert f"{env.runner[1]} train --config {env.tmp / 'bad.yaml'}" in out  # the runner prefix is used
    assert _cli([path, "--jobs", "2"]) == 1  # the 4 Pr runs fail
    out = capsys.readouterr().out
    assert "8 completed, 0 already done, 4 failed" in out and "Pr/split2/seed2: exit code 3" in out
    csv = env.tmp / "runs" / "results.csv"
    table = pd.read_csv(csv)
    assert len(table) == 8 and list(table.columns)[-3:] == ["alpha", "run_dir", "git_commit"]
    for _, row in table.iterrows():
        exp = expected_metrics(row["seed"], int(row["split"][-1]), row["alpha"])
        assert row["novel_miou"] == pytest.approx(exp["novel_miou"]) and row["hm"] == pytest.approx(exp["hm"])
    # the printed summary: mean ± std over the two seeds of SimFormer split2 alpha=0.5
    novel = [expected_metrics(s, 2, 0.5)["novel_miou"] for s in (1, 2)]
    line = next(l for l in out.splitlines() if l.startswith("SimFormer split2 alpha=0.5"))
    assert f"{np.mean(novel):.2f} ± {np.std(novel, ddof=1):.2f}" in line and " 2 " in line
    # --collect rewrites the same table; stats reads it
    os.unlink(csv)
    assert _cli([path, "--collect"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(csv), table)
    from simformer.stats import load_results

    df = load_results(str(csv), metric="novel_miou", required=("run", "method", "split", "seed"))
    assert len(df) == 8
    # dry-run shows states after the run
    assert _cli([path, "--dry-run", "--only", "Pr/split1/*", "--only", "SimFormer/split1/seed1/*"]) == 0
    out = capsys.readouterr().out
    assert "[failed] Pr/split1/seed1" in out and "[done] SimFormer/split1/seed1/alpha=0.05" in out
    assert "(4 selected)" in out and "states: failed 2, done 2" in out


def test_summary_table_values():
    table = pd.DataFrame({"method": ["A", "A", "A", "B", "A"], "split": ["s"] * 5,
                          "novel_miou": [10.0, 12.0, 17.0, 5.0, 1.0], "base_miou": [1.0, 2.0, 3.0, np.nan, 1.0],
                          "miou": [1.0] * 5, "hm": [np.nan] * 5, "alpha": [0.1, 0.1, 0.1, np.nan, 0.5]})
    text = S.summary_table(table, ["alpha"])
    a = next(l for l in text.splitlines() if l.startswith("A s alpha=0.1 "))
    assert f"{np.mean([10, 12, 17]):.2f} ± {np.std([10, 12, 17], ddof=1):.2f}" in a and "2.00 ± 1.00" in a
    assert a.split()[3] == "3" and a.rstrip().endswith("n/a")
    assert next(l for l in text.splitlines() if l.startswith("A s alpha=0.5 ")).split()[3] == "1"
    b = next(l for l in text.splitlines() if l.startswith("B s "))
    assert "5.00" in b and "±" not in b and "nan" not in b  # no alpha for B: no "alpha=nan"


# ---------------------------------------------------------------------------------------------
# submitit
# ---------------------------------------------------------------------------------------------
def test_submitit_local_executor(env):
    sweep = S.load_sweep(env.write(SMALL))
    good1, good2, bad1, bad2 = sweep.runs
    S.run_local([good1], runner=env.runner, log=quiet)  # already done -> not submitted
    os.makedirs(good2.run_dir)
    open(os.path.join(good2.run_dir, "last_checkpoint"), "w").write("model_0000005.pth")
    logs = []
    report = S.run_submitit([good1, good2, bad1], folder=str(env.tmp / "runs" / ".submitit"), cluster="local",
                            runner=env.runner, gpus_per_node=0, poll_s=0.1, log=logs.append)
    assert report.skipped == [good1.name] and report.submitted == [good2.name, bad1.name]
    assert report.completed == [good2.name] and list(report.failed) == [bad1.name]
    assert report.failed[bad1.name] == "exit code 3"
    assert calls(good2)[0]["resume"] is True and len(calls(good1)) == 1
    assert open(os.path.join(bad1.run_dir, "FAILED")).readline() == "exit code 3\n"
    assert any(l.startswith(f"[submitted] {bad1.name}: job ") for l in logs)
    table, _ = S.collect(sweep)
    assert list(table["run"]) == [good1.name, good2.name]
    assert table["novel_miou"].tolist() == [expected_metrics(1, 1)["novel_miou"], expected_metrics(2, 1)["novel_miou"]]


def test_slurm_needs_timeout(env):
    with pytest.raises(S.SweepError, match="--timeout-min"):
        S.make_executor(str(env.tmp / "x"), cluster="slurm")


def test_slurm_executor_parameters(env, monkeypatch, capsys):
    """--max-requeue goes to SlurmExecutor's constructor (max_num_timeout), the rest to the
    sbatch parameters; a fake `srun` on PATH lets submitit build a SLURM executor here."""
    bindir = env.tmp / "bin"
    bindir.mkdir()
    (bindir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bindir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    ex = S.make_executor(str(env.tmp / "sub"), cluster="slurm", timeout_min=90, partition="gpu", max_requeue=5,
                         array_parallelism=4, setup=["module load cuda"], gpus_per_node=2, job_name="sweep-t")
    assert type(ex._executor).__name__ == "SlurmExecutor" and ex._executor.max_num_timeout == 5
    p = ex._executor.parameters
    assert (p["partition"], p["time"], p["gpus_per_node"], p["array_parallelism"], p["setup"], p["job_name"]) == \
        ("gpu", 90, 2, 4, ["module load cuda"], "sweep-t")
    assert S.make_executor(str(env.tmp / "sub2"), cluster="slurm", timeout_min=5)._executor.max_num_timeout == 3
    local = S.make_executor(str(env.tmp / "sub3"), cluster="local", max_requeue=5)  # ignored locally, no error
    assert type(local._executor).__name__ == "LocalExecutor"
    path = env.write(SMALL)
    assert _cli([path, "--dry-run", "--executor", "slurm", "--partition", "gpu", "--timeout-min", "90",
                 "--max-requeue", "5"]) == 0
    out = capsys.readouterr().out
    assert ("slurm job parameters: job_name=sweep-small, gpus_per_node=1, nodes=1, timeout_min=90, "
            "partition=gpu, max_requeue=5\n") in out


def test_locked_run_is_running_and_not_started_twice(env):
    sweep = S.load_sweep(env.write(SMALL))
    good1, good2 = sweep.runs[:2]
    fd = S.try_lock(good1.run_dir)  # as if another sweep process were running it
    try:
        assert fd is not None and S.try_lock(good1.run_dir) is None
        assert S.run_state(good1) == "running" and S.run_state(good2) == "new"
        report = S.run_local([good1, good2], runner=env.runner, log=quiet)
        assert report.busy == [good1.name] and report.completed == [good2.name]
        assert calls(good1) == []
    finally:
        S.unlock(fd)
    assert S.run_state(good1) == "new"  # lock released -> runnable again
    assert S.run_local([good1, good2], runner=env.runner, log=quiet).completed == [good1.name]
    assert not S.is_running(good1.run_dir)  # the sweep released its own lock


def test_missing_runner_is_a_failed_run(env):
    sweep = S.load_sweep(env.write(SMALL))
    report = S.run_local(sweep.runs[:2], runner=[str(env.tmp / "no-such-program")], log=quiet)
    assert list(report.failed) == [r.name for r in sweep.runs[:2]]
    assert "cannot start" in open(os.path.join(sweep.runs[0].run_dir, "FAILED")).read()


def test_stage1_from_points_at_the_same_seed_of_the_other_method(tmp_path):
    import yaml

    from simformer.sweeps import SweepError, load_sweep

    root = os.path.join(os.path.dirname(__file__), "..", "..")
    spec = {
        "name": "s1", "output": str(tmp_path / "out"),
        "base_config": os.path.join(root, "configs", "toyscenes", "simformer.yaml"),
        "methods": {"SimFormer": {}, "SimFormer*": {"stage": "pipeline", "stage1_from": "SimFormer"}},
        "seeds": [1, 2],
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    sweep = load_sweep(str(path))
    star = [r for r in sweep.runs if r.method == "SimFormer*"]
    plain = {r.seed: r.run_dir for r in sweep.runs if r.method == "SimFormer"}
    for r in star:
        args = r.args()
        assert args[args.index("--stage1-from") + 1] == plain[r.seed]
    # a pipeline's stage 1 is its stage1_train folder
    spec["methods"]["SimFormer*+GFSAM"] = {"stage": "pipeline", "stage1_from": "SimFormer*", "refine": "gfsam"}
    path.write_text(yaml.safe_dump(spec))
    sweep = load_sweep(str(path))
    star = {r.seed: r.run_dir for r in sweep.runs if r.method == "SimFormer*"}
    for r in (r for r in sweep.runs if r.method == "SimFormer*+GFSAM"):
        args = r.args()
        assert args[args.index("--stage1-from") + 1] == os.path.join(star[r.seed], "stage1_train")
    for bad in ("Missing", "SimFormer*+GFSAM"):  # unknown, or itself
        spec["methods"]["SimFormer*+GFSAM"]["stage1_from"] = bad
        path.write_text(yaml.safe_dump(spec))
        with pytest.raises(SweepError, match="stage1_from must name another method"):
            load_sweep(str(path))


def test_refine_key_reaches_the_pipeline_and_only_pipelines(tmp_path):
    import yaml

    from simformer.sweeps import SweepError, load_sweep

    root = os.path.join(os.path.dirname(__file__), "..", "..")
    spec = {
        "name": "r", "output": str(tmp_path / "out"),
        "base_config": os.path.join(root, "configs", "toyscenes", "simformer.yaml"),
        "methods": {"SimFormer*": {"stage": "pipeline"}, "SimFormer*+GFSAM": {"stage": "pipeline", "refine": "gfsam"}},
        "seeds": [1],
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    runs = {r.method: r for r in load_sweep(str(path)).runs}
    args = runs["SimFormer*+GFSAM"].args()
    assert args[args.index("--refine") + 1] == "gfsam"
    assert runs["SimFormer*+GFSAM"].fingerprint["refine"] == "gfsam"
    # unset: no flag, and the fingerprint of runs made before the key existed is unchanged
    assert "--refine" not in runs["SimFormer*"].args() and "refine" not in runs["SimFormer*"].fingerprint
    for bad, match in (({"refine": "gfsam"}, "refine needs stage: pipeline"),
                       ({"stage": "pipeline", "refine": "sam"}, "refine must be one of none, gfsam")):
        spec["methods"] = {"X": bad}
        path.write_text(yaml.safe_dump(spec))
        with pytest.raises(SweepError, match=match):
            load_sweep(str(path))


def test_every_sweep_file_of_the_repo_expands_to_configs_that_load(tmp_path, monkeypatch):
    """A sweep file with a wrong config path or key fails here, not hours into a sweep."""
    import glob

    from simformer.data import catalog

    root = os.path.join(os.path.dirname(__file__), "..", "..")
    # experiments/photos/camvid.yaml trains on a dataset its user registers (docs/photos.md): stand
    # it in with its class names, in a registry copy that the test leaves behind
    monkeypatch.setattr(catalog, "_REGISTRY", dict(catalog._REGISTRY))
    with open(os.path.join(root, "splits", "camvid", "split1.json")) as f:
        (tmp_path / "classes.json").write_text(json.dumps(json.load(f)["class_names"]))
    for split in ("train", "test"):
        catalog.register_folder(f"camvid_{split}", str(tmp_path), split, family="camvid")
    files = sorted(glob.glob(os.path.join(root, "experiments", "**", "*.yaml"), recursive=True))
    assert len(files) >= 15
    for path in files:
        sweep = S.load_sweep(path, output="/nonexistent/sweep-check")
        assert sweep.runs, path
        for run in sweep.runs:
            load_cfg(run.config, list(run.opts))
