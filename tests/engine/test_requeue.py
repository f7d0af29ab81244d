"""SLURM-style preemption through submitit's local executor: the job gets SIGUSR2 mid-training,
SweepJob.checkpoint stops the training (which saves a checkpoint on the signal) and requeues; the
requeued job resumes from the signalled iteration and ends with the weights of an uninterrupted run."""
import os
import re
import signal
import time

import pytest
import torch

from simformer.config import load_cfg
from simformer.engine.trainer import Trainer
from simformer.sweeps import Run, SweepJob

from tiny_config import TINY

CONFIG = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "toyscenes", "simformer.yaml"))
OPTS = TINY + ["SOLVER.MAX_ITER", "8", "DATASETS.TEST", "['toyscenes_val']", "SOLVER.CHECKPOINT_PERIOD", "0"]


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _wait_for(predicate, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_submitit_requeue_resumes_from_the_signalled_iteration(toy_env, tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    torch.set_num_threads(1)
    # The job's trainer: the same arithmetic as this process. SIMFORMER_THREADS is explicit whatever an
    # earlier in-process CLI call left in the environment (an automatic OMP_NUM_THREADS is re-guessed).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("SIMFORMER_THREADS", "1")
    Trainer(load_cfg(CONFIG, OPTS + ["OUTPUT_DIR", str(tmp_path / "ref")])).train()

    run_dir = str(tmp_path / "run")
    run = Run(name="r", run_dir=run_dir, method="m", split="", seed=1, params={}, stage="train", config=CONFIG,
              opts=tuple(OPTS))
    executor = submitit.LocalExecutor(folder=str(tmp_path / "submitit"), max_num_timeout=2)
    executor.update_parameters(timeout_min=10)  # no timer signal: the test sends SIGUSR2 itself
    job = executor.submit(SweepJob(run))
    controller = job._process.pid
    log = os.path.join(run_dir, "log.txt")
    _wait_for(lambda: os.path.isfile(log) and "Training efficientnet_lite0" in open(log).read(), 180,
              "the training to start")
    (task,) = _wait_for(lambda: _children(controller), 10, "the job's task process")
    (training,) = _wait_for(lambda: _children(task), 10, "the training process")
    # SLURM sends SIGUSR2 before the time limit to every process of the job: the training gets it
    # itself and once more from SweepJob.checkpoint; it saves once and stops.
    os.kill(training, signal.SIGUSR2)
    os.kill(task, signal.SIGUSR2)
    _wait_for(job.done, 400, "the requeued job to finish")
    result = job.result()
    assert result["status"] == "completed", result

    text = open(log).read()
    stopped = re.search(r"stopped by SIGUSR2 after iteration (\d+) of 8: checkpoint (\S+) saved", text)
    assert stopped, text
    k = int(stopped.group(1))
    assert 1 <= k < 8 and stopped.group(2) == os.path.join(run_dir, f"model_{k:07d}.pth")
    assert f"Resumed from {stopped.group(2)} at iteration {k}" in text
    assert "Requeued job" in job.stdout()
    a = torch.load(tmp_path / "ref" / "model_final.pth", weights_only=True)["model"]
    b = torch.load(os.path.join(run_dir, "model_final.pth"), weights_only=True)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
