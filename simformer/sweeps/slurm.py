"""The submitit / SLURM executor: :func:`run_submitit` submits one job per run as a SLURM job
array; a job requeued after a timeout or preemption resumes from its checkpoint."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from typing import Any, Callable, Dict, Optional, Sequence

from simformer.utils.run_dir import LOCK_FD_ENV

from .launch import LOG_FILE, finish_run, open_log, write_record, build_command, child_env
from .spec import Run, SweepError
from .state import FAILED_FILE, SweepReport, now, plan_and_log, has_checkpoint, is_done, try_lock, unlock


class SweepJob:
    """The callable submitit runs for one run (picklable; requeued with itself on timeout).

    It decides at start time, from the run folder, whether to skip (done), resume (checkpoint) or
    start fresh, so a requeued or re-submitted job continues where the last one stopped. On
    ``nodes > 1`` one task per node launches torchrun with the rendezvous on the first node.
    """

    def __init__(self, run: Run, *, runner: Optional[Sequence[str]] = None, gpus: int = 1, nodes: int = 1):
        self.run = run
        self.runner = list(runner) if runner is not None else None
        self.gpus = gpus
        self.nodes = nodes
        self._proc: Optional[subprocess.Popen] = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_proc"] = None
        return state

    def __call__(self) -> dict:
        run = self.run
        node_rank, master_addr, master_port = 0, "", 29500
        if self.nodes > 1:
            import submitit

            env = submitit.JobEnvironment()
            node_rank, master_addr = env.node, env.hostnames[0]
            master_port = 20000 + int(re.sub(r"\D", "", str(env.job_id)) or 0) % 20000
        resume = has_checkpoint(run.run_dir)
        command = build_command(run, resume=resume, runner=self.runner, gpus=self.gpus, nodes=self.nodes,
                                node_rank=node_rank, master_addr=master_addr, master_port=master_port)
        lock = None
        if node_rank == 0:
            lock = try_lock(run.run_dir, tries=5)
            if lock is None:
                return {"name": run.name, "status": "busy", "reason": None}
            if is_done(run.run_dir):
                unlock(lock)
                return {"name": run.name, "status": "skipped", "reason": None}
        elif is_done(run.run_dir):
            return {"name": run.name, "status": "skipped", "reason": None}
        log_name = LOG_FILE if node_rank == 0 else f"stdout.node{node_rank}.log"
        logf, offset = open_log(run, command, log_name)
        if node_rank == 0:
            write_record(run, command, resume)
        try:
            self._proc = subprocess.Popen(command, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env={**child_env(), **({LOCK_FD_ENV: str(lock)} if lock is not None else {})},
                                          pass_fds=(lock,) if lock is not None else ())
            returncode = self._proc.wait()
        except OSError as e:
            logf.write(f"cannot start: {e}\n".encode())
            returncode = 127
        finally:
            logf.close()
        if node_rank != 0:
            return {"name": run.name, "status": "completed" if returncode == 0 else "failed",
                    "reason": None if returncode == 0 else f"exit code {returncode} on node {node_rank}"}
        reason = finish_run(run, returncode, command, offset)
        unlock(lock)
        return {"name": run.name, "status": "completed" if reason is None else "failed", "reason": reason}

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Called by submitit on timeout/preemption: stop the child, requeue this job (it resumes)."""
        import submitit

        if self._proc is not None and self._proc.poll() is None:
            # The trainer saves a checkpoint after its step and exits. SIGUSR2, not SIGINT: on SLURM
            # the training process got SIGUSR2 itself already, and a SIGINT after another stop signal
            # means "stop now, without saving".
            self._proc.send_signal(signal.SIGUSR2)
            _wait_exited(self._proc, timeout=30)
        return submitit.helpers.DelayedSubmission(SweepJob(self.run, runner=self.runner, gpus=self.gpus,
                                                           nodes=self.nodes))


def _wait_exited(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait until ``proc`` has exited, without reaping it. Called from submitit's signal handler
    while ``__call__`` is inside ``proc.wait()``, which holds Popen's wait lock: a nested
    ``proc.wait(timeout)`` could not reap the child and would always sleep the whole timeout."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.returncode is not None:
            return True
        try:
            if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:  # reaped meanwhile
            return True
        time.sleep(0.05)
    return False


@contextlib.contextmanager
def _checkout_on_pythonpath():
    """Jobs unpickle SweepJob, so the simformer checkout must be importable there (sbatch and the
    local controller copy this process's environment at submission)."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = child_env(base={"PYTHONPATH": old} if old else {})["PYTHONPATH"]
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def make_executor(folder: str, *, cluster: str = "slurm", job_name: str = "simformer-sweep", gpus_per_node: int = 1,
                  nodes: int = 1, cpus_per_task: Optional[int] = None, timeout_min: Optional[int] = None,
                  mem_gb: Optional[float] = None, partition: Optional[str] = None,
                  array_parallelism: Optional[int] = None, account: Optional[str] = None, qos: Optional[str] = None,
                  constraint: Optional[str] = None, setup: Optional[Sequence[str]] = None,
                  max_requeue: Optional[int] = None):
    """A ``submitit.AutoExecutor`` for ``cluster`` ("slurm", "local" or "debug"); one task per node."""
    try:
        import submitit
    except ImportError as e:
        raise SweepError("--executor slurm needs submitit: pip install submitit") from e
    if timeout_min is None:
        if cluster == "slurm":  # submitit would silently ask SLURM for 5 minutes
            raise SweepError("--executor slurm needs --timeout-min (the time limit of each job; a job that "
                             "reaches it is requeued and resumes from its last checkpoint)")
        timeout_min = 7 * 24 * 60  # submitit's local executor would otherwise stop a job after 2 minutes
    # max_num_timeout belongs to the executor's constructor (AutoExecutor: slurm_max_num_timeout),
    # update_parameters rejects it.
    ctor = {"slurm_max_num_timeout": int(max_requeue)} if max_requeue is not None else {}
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster, **ctor)
    params: Dict[str, Any] = {"name": job_name, "nodes": nodes, "tasks_per_node": 1, "gpus_per_node": gpus_per_node,
                              "cpus_per_task": cpus_per_task, "timeout_min": timeout_min, "mem_gb": mem_gb}
    slurm = {"partition": partition, "array_parallelism": array_parallelism, "account": account, "qos": qos,
             "constraint": constraint, "setup": list(setup) if setup else None}
    params.update({f"slurm_{k}": v for k, v in slurm.items() if v is not None})
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor


def run_submitit(runs: Sequence[Run], *, folder: str, cluster: str = "slurm", runner: Optional[Sequence[str]] = None,
                 retry_failed: bool = False, wait: bool = True, log: Callable[[str], None] = print,
                 poll_s: float = 10.0, executor=None, **executor_options) -> SweepReport:
    """Submit one submitit job per run that is not done (a job array on SLURM) and, with ``wait``,
    follow them to the end. ``executor_options`` go to :func:`make_executor` (gpus_per_node, nodes,
    partition, ...). A job that dies without writing FAILED (out of memory, node failure) is
    recorded as failed from its submitit error."""
    todo, report = plan_and_log(runs, retry_failed, log)
    if not todo:
        return report
    gpus = int(executor_options.get("gpus_per_node", 1) or 1)
    nodes = int(executor_options.get("nodes", 1) or 1)
    if executor is None:
        executor = make_executor(folder, cluster=cluster, **executor_options)
    import submitit

    with submitit.helpers.clean_env(), _checkout_on_pythonpath():
        with executor.batch():
            pending = [(run, executor.submit(SweepJob(run, runner=runner, gpus=max(gpus, 1), nodes=nodes)))
                       for run, _ in todo]
    for run, job in pending:
        report.submitted.append(run.name)
        log(f"[submitted] {run.name}: job {job.job_id}")
    if not wait:
        return report
    try:
        while pending:
            still = []
            for run, job in pending:
                if not job.done():
                    still.append((run, job))
                    continue
                try:
                    result = job.result()
                except Exception as e:  # the job itself died (not the training): record why
                    reason = f"submitit job {job.job_id} failed: {str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}"
                    if not os.path.isfile(os.path.join(run.run_dir, FAILED_FILE)):
                        from simformer.utils.io import atomic_write_text

                        os.makedirs(run.run_dir, exist_ok=True)
                        atomic_write_text(os.path.join(run.run_dir, FAILED_FILE),
                                          f"{reason}\nrun: {run.name}\nfinished: {now()}\n--- submitit error ---\n{e}\n")
                    result = {"status": "failed", "reason": reason}
                if result["status"] == "failed":
                    report.failed[run.name] = result["reason"]
                    log(f"[FAILED] {run.name}: {result['reason']}; see {os.path.join(run.run_dir, FAILED_FILE)}")
                elif result["status"] == "skipped":
                    report.skipped.append(run.name)
                    log(f"[skip] {run.name}: done")
                elif result["status"] == "busy":
                    report.busy.append(run.name)
                    log(f"[skip] {run.name}: was running elsewhere when its job started")
                else:
                    report.completed.append(run.name)
                    log(f"[done] {run.name}")
            pending = still
            if pending:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        ids = " ".join(str(job.job_id) for _, job in pending)
        log(f"[interrupted] stopped waiting; {len(pending)} job(s) keep running ({ids}). "
            "Collect later with `simformer sweep FILE --collect`.")
        raise
    return report
