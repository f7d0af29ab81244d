"""CPU thread count for torch / OpenMP chosen from the cores this process may really use.

On a shared machine the default (one thread per core, OpenMP threads spinning while they wait)
collapses as soon as other processes are busy: the threads of one step wait for each other, and a
descheduled thread holds up all the others. Measured on a busy 2-core machine, a ToyScenes
training step ran 16x slower with torch's defaults than with this module's choice
(docs/benchmarks.md, section 0).

The rule (:func:`choose_threads`), first match wins:

1. an explicit value: the ``threads`` argument (``--threads N``), else ``$SIMFORMER_THREADS``, else
   a user-set ``$OMP_NUM_THREADS``;
2. otherwise ``available_cores() - round(load)``, at least 1, divided by the number of processes
   started together (``jobs``, a sweep's ``--jobs N``), at least 1. ``load`` = the threads of
   other processes that are runnable now (:func:`load_average`: ``procs_running`` of
   ``/proc/stat``, 5 readings over 0.1 s, minus this process).

``available_cores`` is the smallest of the CPU affinity mask (``os.sched_getaffinity``, which
``taskset`` / ``--cpuset-cpus`` shrink) and the cgroup CPU quota (cgroup v2 ``cpu.max``, v1
``cpu.cfs_quota_us / cpu.cfs_period_us``; docker ``--cpus``, SLURM, Kubernetes limits), the quota
rounded down (a thread beyond the quota only gets the process throttled).

The load is a hint: it is system-wide (it also counts processes of other containers, whose
cores the quota may not give us) and a snapshot (a process that runs in short bursts may be
missed). The 1-minute load average is not used because it lags: it still counts a process that
stopped a minute ago and misses one that just started. An explicit value always wins.

:func:`configure_threads` applies the choice: ``OMP_WAIT_POLICY=PASSIVE`` (waiting OpenMP threads
sleep instead of spinning; read when the OpenMP runtime starts, i.e. when torch is imported, so it
takes effect in this process only if torch is not imported yet, and always in child processes),
``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` in the environment, and ``torch.set_num_threads`` when
torch is already imported.
"""
from __future__ import annotations

import math
import os
import sys
from typing import Mapping, Optional

CGROUP_ROOT = "/sys/fs/cgroup"
PROC_SELF_CGROUP = "/proc/self/cgroup"
PROC_STAT = "/proc/stat"
THREADS_ENV = "SIMFORMER_THREADS"
# Set by configure_threads when OMP_NUM_THREADS holds its own automatic choice (not the user's).
AUTO_MARK_ENV = "SIMFORMER_THREADS_AUTO"


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def affinity_cores() -> int:
    """CPUs this process may run on (``os.sched_getaffinity``; ``os.cpu_count`` where missing)."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is not None:
        try:
            return max(1, len(getaffinity(0)))
        except OSError:
            pass
    return max(1, os.cpu_count() or 1)


def _quota_v2(text: str) -> Optional[float]:
    """CPUs allowed by one cgroup v2 ``cpu.max`` (``"max 100000"`` or ``"QUOTA PERIOD"``)."""
    parts = text.split()
    if len(parts) < 1 or parts[0] == "max":
        return None
    try:
        quota = int(parts[0])
        period = int(parts[1]) if len(parts) > 1 else 100000
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _cgroup_paths(proc_cgroup: str) -> dict:
    """controller -> cgroup path from ``/proc/self/cgroup`` (``""`` is the v2 unified hierarchy)."""
    out = {}
    for line in (_read(proc_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for c in (controllers.split(",") if controllers else [""]):
            out[c] = path
    return out


def _ancestors(root: str, rel: str):
    """``root/rel``, its parent, ... up to ``root`` (a limit anywhere above applies too)."""
    rel = rel.strip("/")
    parts = rel.split("/") if rel else []
    for i in range(len(parts), -1, -1):
        yield os.path.join(root, *parts[:i])


def cgroup_cpu_limit(root: str = CGROUP_ROOT, proc_cgroup: str = PROC_SELF_CGROUP) -> Optional[float]:
    """CPUs the cgroup quota allows (fractional), or None when there is no quota.

    cgroup v2: the smallest ``cpu.max`` of this process's cgroup and its ancestors. cgroup v1:
    ``cpu.cfs_quota_us / cpu.cfs_period_us`` of the ``cpu`` controller's cgroup (quota -1 = none).
    Inside a container the cgroup file often names a path that is mounted as the root itself,
    so the root is checked as well.
    """
    paths = _cgroup_paths(proc_cgroup)
    limits = []
    if "" in paths:  # v2
        for d in _ancestors(root, paths[""]):
            text = _read(os.path.join(d, "cpu.max"))
            if text is not None:
                q = _quota_v2(text)
                if q is not None:
                    limits.append(q)
    v1 = next((paths[c] for c in ("cpu", "cpu,cpuacct", "cpuacct,cpu") if c in paths), None)
    if v1 is not None:
        for mount in ("cpu,cpuacct", "cpu", "cpuacct,cpu"):
            base = os.path.join(root, mount)
            if not os.path.isdir(base):
                continue
            for d in _ancestors(base, v1):
                quota, period = _read(os.path.join(d, "cpu.cfs_quota_us")), _read(os.path.join(d, "cpu.cfs_period_us"))
                try:
                    q, p = int(quota), int(period)
                except (TypeError, ValueError):
                    continue
                if q > 0 and p > 0:
                    limits.append(q / p)
            break
    return min(limits) if limits else None


def available_cores(root: str = CGROUP_ROOT, proc_cgroup: str = PROC_SELF_CGROUP) -> int:
    """min(affinity mask, cgroup quota rounded down), at least 1."""
    cores = affinity_cores()
    limit = cgroup_cpu_limit(root, proc_cgroup)
    if limit is not None:
        cores = min(cores, max(1, int(math.floor(limit + 1e-9))))
    return max(1, cores)


def _positive_int(value: Optional[str], name: str) -> Optional[int]:
    if value is None or not str(value).strip():
        return None
    try:
        n = int(str(value).strip())
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a whole number of threads (e.g. {name}=2)") from None
    if n < 1:
        raise ValueError(f"{name}={value!r}: the thread count must be >= 1")
    return n


def explicit_threads(env: Optional[Mapping[str, str]] = None) -> Optional[int]:
    """The user's thread count from ``$SIMFORMER_THREADS`` or a user-set ``$OMP_NUM_THREADS``."""
    env = os.environ if env is None else env
    n = _positive_int(env.get(THREADS_ENV), THREADS_ENV)
    if n is not None:
        return n
    if env.get(AUTO_MARK_ENV) == "1":  # our own automatic value, not the user's
        return None
    return _positive_int(env.get("OMP_NUM_THREADS"), "OMP_NUM_THREADS")


def _procs_running(stat: str = PROC_STAT) -> Optional[int]:
    for line in (_read(stat) or "").splitlines():
        if line.startswith("procs_running "):
            try:
                return int(line.split()[1])
            except (IndexError, ValueError):
                return None
    return None


def load_average(samples: int = 5, interval_s: float = 0.02, stat: str = PROC_STAT) -> float:
    """Runnable threads of other processes now: the mean of ``samples`` readings of
    ``procs_running`` in ``/proc/stat`` minus this process. Unlike the 1-minute load average it
    does not lag (a process that just started or ended counts at once); where ``/proc/stat`` is
    missing, the 1-minute load average (0 where the platform has none)."""
    import time

    counts = []
    for i in range(max(1, samples)):
        n = _procs_running(stat)
        if n is None:
            break
        counts.append(n)
        if i + 1 < samples:
            time.sleep(interval_s)
    if counts:
        return max(0.0, sum(counts) / len(counts) - 1.0)
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return 0.0


def auto_threads(jobs: int = 1, *, cores: Optional[int] = None, load: Optional[float] = None) -> int:
    """``max(1, (cores - round(load)) // jobs)`` with at least 1 core free for ``jobs``."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    cores = available_cores() if cores is None else cores
    load = load_average() if load is None else load
    free = max(1, cores - int(math.floor(max(0.0, load) + 0.5)))
    return max(1, free // jobs)


def choose_threads(threads: Optional[int] = None, *, jobs: int = 1, env: Optional[Mapping[str, str]] = None,
                   cores: Optional[int] = None, load: Optional[float] = None) -> int:
    """Threads per process (see the module docstring for the rule). ``threads`` is ``--threads``."""
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        return int(threads)
    n = explicit_threads(env)
    if n is not None:
        return n
    return auto_threads(jobs, cores=cores, load=load)


def configure_threads(threads: Optional[int] = None, *, jobs: int = 1) -> int:
    """Choose the thread count and apply it to this process and its future children; returns it.

    Sets ``OMP_WAIT_POLICY=PASSIVE`` unless the user set a policy, ``OMP_NUM_THREADS`` and
    ``MKL_NUM_THREADS``, and calls ``torch.set_num_threads`` if torch is already imported
    (otherwise torch reads ``OMP_NUM_THREADS`` when it starts).
    """
    user = threads is not None or explicit_threads() is not None
    n = choose_threads(threads, jobs=jobs)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ["OMP_NUM_THREADS"] = str(n)
    os.environ["MKL_NUM_THREADS"] = str(n)
    if user:
        os.environ.pop(AUTO_MARK_ENV, None)
    else:
        os.environ[AUTO_MARK_ENV] = "1"
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(n)
    return n


def child_thread_env(jobs: int, env: Optional[Mapping[str, str]] = None, threads: Optional[int] = None) -> dict:
    """Variables for one of ``jobs`` processes started together (a sweep's children): an explicit
    count is per process and kept; otherwise each gets ``auto_threads(jobs)``. The value is given
    to the child as explicit (``SIMFORMER_THREADS``), so the child does not re-guess it from a load
    average its siblings are raising."""
    n = choose_threads(threads, jobs=jobs, env=env)
    return {"OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n), THREADS_ENV: str(n),
            "OMP_WAIT_POLICY": (env if env is not None else os.environ).get("OMP_WAIT_POLICY", "PASSIVE")}
