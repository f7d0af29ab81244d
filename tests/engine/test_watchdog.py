"""A frozen rank: the waiting rank names it in the log and gives up after DIST_TIMEOUT_S with an
error naming it (2 gloo processes, rank 1 stops itself with SIGSTOP)."""
import os
import signal
import socket
import time

import torch.multiprocessing as mp

from simformer.engine.watchdog import lagging, warn_after

from tiny_config import TINY

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "toyscenes", "simformer.yaml")
TIMEOUT_S = 10


def test_lagging_names_silent_and_late_ranks():
    now = 100.0
    states = {0: (99.0, 5), 1: (80.0, 5), 2: (99.5, 4), 3: (99.9, 5)}
    assert lagging(0, 5, now, states, stale_s=3.0) == [
        "rank 1 (no sign of life for 20 s, last seen in iteration 5)", "rank 2 (alive, still in iteration 4)"]
    assert lagging(1, 5, now, {0: (99.0, 5), 1: (80.0, 5)}, stale_s=3.0) == []
    assert warn_after(600) == 60.0 and warn_after(10) == 2.5 and warn_after(1) == 0.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, out, env, result):
    os.environ.update(env)
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    import torch

    torch.set_num_threads(1)
    from simformer.config import load_cfg
    from simformer.engine.hooks import HookBase
    from simformer.engine.trainer import Trainer

    class FreezeAt(HookBase):
        def before_step(self):
            if self.trainer.iter == 2:
                os.kill(os.getpid(), signal.SIGSTOP)

    cfg = load_cfg(CONFIG, TINY + ["OUTPUT_DIR", out, "SOLVER.MAX_ITER", "50", "DATASETS.TEST", "[]",
                                   "DIST_TIMEOUT_S", str(TIMEOUT_S)])
    trainer = Trainer(cfg)
    if rank == 1:
        trainer.register_hooks([FreezeAt()])
    t0 = time.monotonic()
    try:
        trainer.train()
        result.put((rank, "finished", "", 0.0))
    except BaseException as e:
        result.put((rank, type(e).__name__, str(e), time.monotonic() - t0))
    result.close()
    result.join_thread()  # the queue's feeder thread must deliver before os._exit
    os._exit(0)


def test_frozen_rank_is_named_and_the_wait_is_bounded(toy_env, tmp_path):
    env = {k: os.environ[k] for k in ("SIMFORMER_DATASETS", "SIMFORMER_CACHE", "SIMFORMER_PROGRESS")}
    ctx = mp.get_context("spawn")
    result = ctx.Queue()
    out, port = str(tmp_path / "ddp"), _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, out, env, result)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        rank, kind, message, _ = result.get(timeout=240)
        assert (rank, kind) == (0, "TimeoutError"), message
        assert message.startswith(f"rank 0 gave up after DIST_TIMEOUT_S={TIMEOUT_S} s in iteration 2 waiting for "
                                  "rank 1 (no sign of life for ")
        log = open(os.path.join(out, "log.txt")).read()
        assert "rank 0 has waited" in log and "in iteration 2 for rank 1 (no sign of life for" in log
        assert "training stopped at iteration 2 while waiting for rank 1 (no sign of life" in log
    finally:
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
            p.join(timeout=30)
