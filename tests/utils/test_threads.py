"""Thread choice: cgroup v1/v2 quotas and affinity read from fake files, the documented rule, and
what configure_threads / child_thread_env put into the environment."""
import os
import sys

import pytest

from simformer.utils import threads as T


def _fake_v2(tmp_path, cpu_max_by_level, rel="/user.slice/job"):
    root = tmp_path / "cg"
    root.mkdir()
    levels = [root] + [root.joinpath(*rel.strip("/").split("/")[:i + 1]) for i in range(len(rel.strip("/").split("/")))]
    for level, text in zip(levels, cpu_max_by_level):
        level.mkdir(parents=True, exist_ok=True)
        if text is not None:
            (level / "cpu.max").write_text(text + "\n")
    proc = tmp_path / "self_cgroup"
    proc.write_text(f"0::{rel}\n")
    return str(root), str(proc)


def test_cgroup_v2_quota_smallest_of_ancestors(tmp_path):
    # root: no limit, user.slice: 3 CPUs, job: 1.5 CPUs -> 1.5
    root, proc = _fake_v2(tmp_path, ["max 100000", "300000 100000", "150000 100000"])
    assert T.cgroup_cpu_limit(root, proc) == pytest.approx(1.5)


def test_cgroup_v2_no_quota(tmp_path):
    root, proc = _fake_v2(tmp_path, ["max 100000", None, "max 100000"])
    assert T.cgroup_cpu_limit(root, proc) is None


def test_cgroup_v1_quota(tmp_path):
    root = tmp_path / "cg"
    d = root / "cpu,cpuacct" / "docker" / "abc"
    d.mkdir(parents=True)
    (d / "cpu.cfs_quota_us").write_text("250000\n")
    (d / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "self_cgroup"
    proc.write_text("12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n")
    assert T.cgroup_cpu_limit(str(root), str(proc)) == pytest.approx(2.5)
    (d / "cpu.cfs_quota_us").write_text("-1\n")  # unlimited
    assert T.cgroup_cpu_limit(str(root), str(proc)) is None


def test_available_cores_min_of_affinity_and_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7}, raising=False)
    root, proc = _fake_v2(tmp_path, ["max 100000", None, "250000 100000"])
    assert T.available_cores(root, proc) == 2  # 2.5 CPUs rounded down
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert T.available_cores(root, proc) == 1  # taskset to one core
    (tmp_path / "b").mkdir()
    root2, proc2 = _fake_v2(tmp_path / "b", ["max 100000", None, "50000 100000"])
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert T.available_cores(root2, proc2) == 1  # half a CPU still gets one thread


@pytest.mark.parametrize("cores,load,jobs,expected", [
    (2, 0.0, 1, 2),    # quiet
    (2, 2.1, 1, 1),    # two busy processes on 2 cores: one thread
    (8, 2.6, 1, 5),    # 8 - round(2.6)
    (8, 0.4, 2, 4),    # per job
    (8, 7.0, 4, 1),    # never below 1
    (16, 0.0, 3, 5),
])
def test_auto_rule(cores, load, jobs, expected):
    assert T.auto_threads(jobs, cores=cores, load=load) == expected


def test_explicit_wins_in_order():
    env = {"SIMFORMER_THREADS": "3", "OMP_NUM_THREADS": "5"}
    assert T.choose_threads(7, env=env, cores=2, load=0) == 7          # --threads
    assert T.choose_threads(None, env=env, cores=2, load=0) == 3       # SIMFORMER_THREADS
    assert T.choose_threads(None, env={"OMP_NUM_THREADS": "5"}, cores=2, load=0) == 5
    # our own automatic OMP_NUM_THREADS is not the user's
    assert T.choose_threads(None, env={"OMP_NUM_THREADS": "5", T.AUTO_MARK_ENV: "1"}, cores=2, load=0) == 2


def test_bad_values_name_the_variable():
    with pytest.raises(ValueError, match=r"SIMFORMER_THREADS='two' is not a whole number"):
        T.choose_threads(None, env={"SIMFORMER_THREADS": "two"})
    with pytest.raises(ValueError, match=r"OMP_NUM_THREADS='0': the thread count must be >= 1"):
        T.choose_threads(None, env={"OMP_NUM_THREADS": "0"})
    with pytest.raises(ValueError, match=r"--threads must be >= 1, got 0"):
        T.choose_threads(0)


def test_configure_threads_sets_env_and_torch(monkeypatch):
    import torch

    old = torch.get_num_threads()
    for k in ("SIMFORMER_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", T.AUTO_MARK_ENV):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(T, "available_cores", lambda *a, **k: 3)
    monkeypatch.setattr(T, "load_average", lambda: 1.2)
    try:
        assert T.configure_threads() == 2  # 3 - round(1.2)
        assert os.environ["OMP_NUM_THREADS"] == "2" and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
        assert os.environ[T.AUTO_MARK_ENV] == "1" and torch.get_num_threads() == 2
        # a sweep's children: the automatic value is recomputed per job, not inherited
        child = T.child_thread_env(2)
        assert child["OMP_NUM_THREADS"] == "1" and child["SIMFORMER_THREADS"] == "1"
        assert T.configure_threads(1) == 1 and T.AUTO_MARK_ENV not in os.environ
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's policy is kept
        T.configure_threads(1)
        assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
        monkeypatch.setenv("SIMFORMER_THREADS", "3")  # explicit: the same count for every job
        assert T.child_thread_env(4)["OMP_NUM_THREADS"] == "3"
    finally:
        torch.set_num_threads(old)


def test_real_machine_is_sane():
    n = T.available_cores()
    assert 1 <= n <= (os.cpu_count() or 1)


def test_load_from_procs_running(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3\nprocs_running 4\nprocs_blocked 0\n")
    # 4 runnable threads, one of them this process -> 3 others
    assert T.load_average(samples=3, interval_s=0.0, stat=str(stat)) == pytest.approx(3.0)
    readings = iter(["procs_running 1\n", "procs_running 3\n"])
    monkeypatch.setattr(T, "_read", lambda path: next(readings))
    assert T.load_average(samples=2, interval_s=0.0, stat="x") == pytest.approx(1.0)  # mean(1, 3) - 1
    monkeypatch.setattr(T, "_read", lambda path: None)  # no /proc/stat: the 1-minute load average
    monkeypatch.setattr(os, "getloadavg", lambda: (1.5, 1.0, 0.5))
    assert T.load_average(stat="x") == 1.5


def test_busy_process_is_seen_at_once():
    """A CPU-bound process started just now is runnable at every reading, so the load is >= 1 at
    once (the 1-minute load average would need a minute)."""
    import subprocess
    import time

    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        during = T.load_average(samples=10, interval_s=0.01)
    finally:
        hog.kill()
        hog.wait()
    assert during >= 1.0, during
