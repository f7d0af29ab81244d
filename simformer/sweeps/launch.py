"""Run commands and the local executor: :func:`run_local` starts N ``simformer`` subprocesses at a
time (optional GPU assignment; Ctrl-C stops the children cleanly), logs each to ``stdout.log`` and
records failures in ``FAILED``."""
from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from simformer.utils.env import checkout_root
from simformer.utils.run_dir import SWEEP_LOG_FILE
from simformer.utils.run_dir import LOCK_FD_ENV, stop_on_signals
from simformer.utils.threads import child_thread_env

from .spec import Run, SweepError
from .state import FAILED_FILE, RECORD_FILE, SweepReport, now, plan_and_log, is_done, read_record, try_lock, unlock


LOG_FILE = SWEEP_LOG_FILE
LOG_TAIL_LINES = 40
# Environment variable: a command prefix used instead of ``python -m simformer`` (tests, wrappers).
RUNNER_ENV = "SIMFORMER_SWEEP_RUNNER"
# Distributed variables a child must not inherit (torchrun sets its own for its workers).
_DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
              "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID")


def default_runner() -> List[str]:
    """Command prefix for one process: ``$SIMFORMER_SWEEP_RUNNER`` or ``python -m simformer``."""
    env = os.environ.get(RUNNER_ENV)
    return shlex.split(env) if env else [sys.executable, "-m", "simformer"]


def build_command(run: Run, *, resume: bool, runner: Optional[Sequence[str]] = None, gpus: int = 1,
                  nodes: int = 1, node_rank: int = 0, master_addr: str = "", master_port: int = 29500) -> List[str]:
    """argv of ``run``. ``gpus > 1`` or ``nodes > 1`` wraps ``simformer`` in torchrun
    (``python -m torch.distributed.run``): ``--standalone`` on one node, an explicit rendezvous
    (``master_addr:master_port``, ``node_rank``) across nodes. A custom ``runner`` (or
    ``$SIMFORMER_SWEEP_RUNNER``) replaces the whole prefix."""
    custom = runner is not None or os.environ.get(RUNNER_ENV)
    if custom:
        prefix = list(runner) if runner is not None else default_runner()
    elif gpus > 1 or nodes > 1:
        prefix = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(gpus)]
        if nodes > 1:
            prefix += ["--nnodes", str(nodes), "--node_rank", str(node_rank),
                       "--master_addr", master_addr, "--master_port", str(master_port)]
        else:
            prefix += ["--standalone"]
        prefix += ["-m", "simformer"]
    else:
        prefix = default_runner()
    return prefix + run.args(resume=resume)


def child_env(devices: Optional[Sequence[str]] = None, base: Optional[dict] = None) -> Dict[str, str]:
    """Environment of a run process: no inherited distributed variables, the simformer checkout on
    PYTHONPATH (works without ``pip install``), quiet progress bars, optional CUDA_VISIBLE_DEVICES."""
    env = dict(os.environ if base is None else base)
    for k in _DIST_VARS:
        env.pop(k, None)
    repo = checkout_root()
    paths = env.get("PYTHONPATH", "").split(os.pathsep) if env.get("PYTHONPATH") else []
    if repo not in paths:
        env["PYTHONPATH"] = os.pathsep.join([repo] + paths)
    env.setdefault("SIMFORMER_PROGRESS", "0")
    env.setdefault("PYTHONUNBUFFERED", "1")
    if devices:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in devices)
    return env


def write_record(run: Run, command: Sequence[str], resume: bool, adopted_from: Optional[str] = None) -> None:
    """sweep_run.json: the run's spec and this attempt (or, with ``adopted_from``, the folder copied)."""
    from simformer.utils.io import atomic_write_json

    old = read_record(run.run_dir) or {}
    record = {
        "name": run.name, "method": run.method, "split": run.split, "seed": run.seed, "params": run.params,
        "fingerprint": run.fingerprint, "command": list(command), "resume": resume,
        "attempts": int(old.get("attempts", 0)) + 1, "started": now(),
    }
    if adopted_from:
        record["adopted_from"] = adopted_from
    atomic_write_json(os.path.join(run.run_dir, RECORD_FILE), record)


def open_log(run: Run, command: Sequence[str], log_name: str = LOG_FILE):
    """Open the run's log for appending, write an attempt header; returns (file, offset of this attempt)."""
    os.makedirs(run.run_dir, exist_ok=True)
    f = open(os.path.join(run.run_dir, log_name), "ab")
    offset = f.tell()
    f.write(f"\n===== simformer sweep {now()}: {shlex.join(command)}\n".encode())
    f.flush()
    return f, offset


def _log_tail(run_dir: str, offset: int, lines: int = LOG_TAIL_LINES, log_name: str = LOG_FILE) -> str:
    try:
        with open(os.path.join(run_dir, log_name), "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def finish_run(run: Run, returncode: int, command: Sequence[str], offset: int) -> Optional[str]:
    """Record the outcome of an attempt; None on success, else the one-line failure reason
    (also written as the first line of RUN_DIR/FAILED, followed by the command and the log tail)."""
    from simformer.utils.io import atomic_write_text

    failed_path = os.path.join(run.run_dir, FAILED_FILE)
    if returncode == 0 and is_done(run.run_dir):
        if os.path.exists(failed_path):
            os.unlink(failed_path)
        return None
    if returncode == 0:
        reason = "exit code 0 but no metrics.json + model_final.pth were written (is DATASETS.TEST empty?)"
    elif returncode < 0:
        reason = f"exit code {returncode} (killed by signal {-returncode})"
    else:
        reason = f"exit code {returncode}"
    tail = _log_tail(run.run_dir, offset)
    atomic_write_text(failed_path, f"{reason}\nrun: {run.name}\nfinished: {now()}\ncommand: "
                                   f"{shlex.join(command)}\n--- last {LOG_TAIL_LINES} lines of "
                                   f"{os.path.join(run.run_dir, LOG_FILE)} ---\n{tail}\n")
    return reason


def _device_groups(devices: Optional[Sequence[str]], gpus: int) -> List[Optional[List[str]]]:
    if not devices:
        return [None]
    devices = [str(d) for d in devices]
    if len(devices) % gpus:
        raise SweepError(f"--devices {','.join(devices)}: {len(devices)} devices cannot be cut into groups of "
                         f"--gpus-per-node {gpus}")
    return [devices[i:i + gpus] for i in range(0, len(devices), gpus)]


def _stop(procs: Sequence[subprocess.Popen], grace_s: float) -> None:
    """SIGINT each child's process group (the trainer exits through its finally blocks), SIGKILL
    whatever is still alive after ``grace_s``."""
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGINT)
    deadline = time.monotonic() + grace_s
    try:
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
    except KeyboardInterrupt:
        pass  # a second Ctrl-C: stop waiting
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def run_local(runs: Sequence[Run], *, jobs: int = 1, runner: Optional[Sequence[str]] = None, gpus: int = 1,
              devices: Optional[Sequence[str]] = None, retry_failed: bool = False,
              log: Callable[[str], None] = print, poll_s: float = 0.05, grace_s: float = 15.0) -> SweepReport:
    """Execute ``runs`` as subprocesses, at most ``jobs`` at a time; done runs are skipped, partial
    ones resumed, failures recorded in RUN_DIR/FAILED and reported (the others go on).

    ``devices`` (GPU ids) are cut into groups of ``gpus``; concurrent run slot ``i`` gets group
    ``i % len(groups)`` as CUDA_VISIBLE_DEVICES. ``gpus > 1`` launches through torchrun.
    Ctrl-C (or SIGTERM) stops the children (SIGINT, then SIGKILL after ``grace_s``), leaves them
    resumable and re-raises KeyboardInterrupt.
    """
    if jobs < 1:
        raise SweepError(f"--jobs must be >= 1, got {jobs}")
    groups = _device_groups(devices, gpus)
    todo, report = plan_and_log(runs, retry_failed, log)
    total = len(todo)
    queue = list(todo)
    # slot -> (run, process, log file, log offset, command, start time, lock fd)
    running: Dict[int, Tuple[Run, subprocess.Popen, Any, int, List[str], float, int]] = {}
    started = 0
    thread_env = child_thread_env(min(jobs, max(1, total)))  # OMP_NUM_THREADS etc. per concurrent run
    # SIGINT / SIGTERM only set a flag, checked at the top of the loop: a KeyboardInterrupt raised
    # inside Popen.poll() could leave its internal lock held and hang _stop's final wait.
    with stop_on_signals((signal.SIGINT, signal.SIGTERM)) as stop:
        try:
            while queue or running:
                if stop:
                    raise KeyboardInterrupt
                while queue and len(running) < jobs and not stop:
                    slot = min(set(range(jobs)) - set(running))
                    run, resume = queue.pop(0)
                    started += 1
                    lock = try_lock(run.run_dir, tries=5)
                    if lock is None:  # taken since plan(): someone else is running it
                        report.busy.append(run.name)
                        log(f"[{started}/{total}] skip {run.name}: running in another sweep process or job")
                        continue
                    if is_done(run.run_dir):  # finished by someone else since plan()
                        unlock(lock)
                        report.skipped.append(run.name)
                        log(f"[{started}/{total}] skip {run.name}: done")
                        continue
                    command = build_command(run, resume=resume, runner=runner, gpus=gpus)
                    logf, offset = open_log(run, command)
                    write_record(run, command, resume)
                    try:
                        # The child inherits the lock descriptor: the run stays locked while it lives.
                        proc = subprocess.Popen(command, stdout=logf, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, env={**child_env(groups[slot % len(groups)]), **thread_env,
                                                     LOCK_FD_ENV: str(lock)},
                                                start_new_session=True, pass_fds=(lock,))
                    except OSError as e:
                        logf.write(f"cannot start: {e}\n".encode())
                        logf.close()
                        report.failed[run.name] = finish_run(run, 127, command, offset)
                        unlock(lock)
                        log(f"[FAILED] {run.name}: cannot start {command[0]}: {e}")
                        continue
                    running[slot] = (run, proc, logf, offset, command, time.monotonic(), lock)
                    gpu = f" on GPU {','.join(groups[slot % len(groups)])}" if groups[0] else ""
                    log(f"[{started}/{total}] start {run.name}{' (resume)' if resume else ''}{gpu}")
                finished = [s for s, (_, p, *_rest) in running.items() if p.poll() is not None]
                for slot in finished:
                    run, proc, logf, offset, command, t0, lock = running.pop(slot)
                    logf.close()
                    reason = finish_run(run, proc.returncode, command, offset)
                    unlock(lock)
                    if reason is None:
                        report.completed.append(run.name)
                        log(f"[done] {run.name} in {time.monotonic() - t0:.1f} s")
                    else:
                        report.failed[run.name] = reason
                        log(f"[FAILED] {run.name}: {reason}; see {os.path.join(run.run_dir, FAILED_FILE)}")
                if running and not finished:
                    time.sleep(poll_s)
        except KeyboardInterrupt:
            procs = [p for (_, p, *_rest) in running.values()]
            log(f"[interrupted] stopping {len(procs)} running run(s); run the sweep again to resume them")
            _stop(procs, grace_s)
            for (_, _, logf, *_rest) in running.values():
                logf.close()
            for (*_rest, lock) in running.values():
                unlock(lock)
            raise
    return report
