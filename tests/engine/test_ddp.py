"""A 2-process gloo DDP run equals the single-process run with the same global batch."""
import os
import socket

import torch
import torch.multiprocessing as mp

from tiny_config import TINY

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "toyscenes", "simformer.yaml")
# Deterministic MaskFormer-with-novel-targets setting: no random point sampling, no dropout.
DETERMINISTIC = ["WEAKSHOT.PAIR_MODE", "none", "WEAKSHOT.SIMNET.ENABLED", "False", "WEAKSHOT.DISTILL.ENABLED", "False",
                 "WEAKSHOT.COMPLEMENTARY.ENABLED", "False", "MODEL.MASK_FORMER.DROPOUT", "0.0",
                 "SOLVER.MAX_ITER", "3", "DATASETS.TEST", "[]", "SOLVER.IMS_PER_BATCH", "4"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out, env):
    os.environ.update(env)
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    from simformer.config import load_cfg
    from simformer.engine.trainer import Trainer

    cfg = load_cfg(CONFIG, TINY + DETERMINISTIC + ["OUTPUT_DIR", out])
    Trainer(cfg).train()
    torch.distributed.destroy_process_group()


def test_two_rank_gloo_matches_single_process(toy_env, tmp_path):
    env = {k: os.environ[k] for k in ("SIMFORMER_DATASETS", "SIMFORMER_CACHE", "SIMFORMER_PROGRESS")}
    single = str(tmp_path / "single")
    _worker_single(single, env)
    ddp = str(tmp_path / "ddp")
    mp.spawn(_worker, args=(2, _free_port(), ddp, env), nprocs=2, join=True)
    a = torch.load(os.path.join(single, "model_final.pth"), weights_only=True)["model"]
    b = torch.load(os.path.join(ddp, "model_final.pth"), weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    # the logged (rank-averaged) losses agree too
    import json

    la = [json.loads(x) for x in open(os.path.join(single, "metrics.jsonl"))][-1]
    lb = [json.loads(x) for x in open(os.path.join(ddp, "metrics.jsonl"))][-1]
    assert abs(la["total_loss"] - lb["total_loss"]) < 1e-3 * max(1.0, abs(la["total_loss"]))


def _worker_single(out, env):
    os.environ.update(env)
    torch.set_num_threads(1)
    from simformer.config import load_cfg
    from simformer.engine.trainer import Trainer

    cfg = load_cfg(CONFIG, TINY + DETERMINISTIC + ["OUTPUT_DIR", out])
    Trainer(cfg).train()
