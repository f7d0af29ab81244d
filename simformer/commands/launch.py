"""``--num-gpus N``: run the same verb in N local processes with the environment torchrun sets.

Each process gets RANK = LOCAL_RANK = i, WORLD_SIZE = N, LOCAL_WORLD_SIZE = N, MASTER_ADDR
127.0.0.1 and a free MASTER_PORT, then runs ``simformer VERB ...`` (without ``--num-gpus``);
simformer's process-group setup reads those variables exactly as under torchrun (NCCL on GPUs,
gloo on CPU). The exit status is 0 when every process succeeded, else that of the first failure.
"""
from __future__ import annotations

import os
import socket
import sys
from typing import Callable, List


def strip_num_gpus(argv: List[str]) -> List[str]:
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a == "--num-gpus":
            skip = True
            continue
        if a.startswith("--num-gpus="):
            continue
        out.append(a)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, entry: Callable[[List[str]], int], argv: List[str], world: int, port: int) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "LOCAL_WORLD_SIZE": str(world), "GROUP_RANK": "0", "ROLE_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    code = entry(argv)
    if code:
        sys.exit(code)


def launch(entry: Callable[[List[str]], int], argv: List[str], num_gpus: int) -> int:
    """Run ``entry(argv)`` (the ``simformer`` main, passed in so that this module does not import
    the CLI above it) in ``num_gpus`` processes; returns the exit status."""
    import torch
    import torch.multiprocessing as mp

    from . import UsageError

    if torch.cuda.is_available() and num_gpus > torch.cuda.device_count():
        raise UsageError(f"--num-gpus {num_gpus} but this machine has {torch.cuda.device_count()} GPU(s)")
    if "RANK" in os.environ or "WORLD_SIZE" in os.environ:
        raise UsageError("--num-gpus inside a torchrun / distributed launch: use one or the other")
    argv = strip_num_gpus(argv)
    try:
        mp.start_processes(_worker, args=(entry, argv, num_gpus, _free_port()), nprocs=num_gpus, join=True,
                           start_method="spawn")
    except mp.ProcessExitedException as e:
        return int(e.exit_code) if e.exit_code and e.exit_code > 0 else 1
    except mp.ProcessRaisedException as e:
        print(f"simformer: a process of the --num-gpus {num_gpus} run failed:\n{e}", file=sys.stderr)
        return 1
    return 0
