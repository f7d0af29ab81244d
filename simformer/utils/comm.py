"""Process-group helpers. Launch multi-GPU / multi-node runs with torchrun; every rank reads its
place from the RANK / WORLD_SIZE / LOCAL_RANK environment variables that torchrun sets."""
from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    if get_world_size() > 1:
        dist.barrier()


def init_distributed(device_pref: str = "auto", timeout_s: float = 600.0) -> torch.device:
    """Initialise the default process group when launched by torchrun; return this rank's device.

    NCCL on GPUs, gloo on CPU. A single process (no WORLD_SIZE) runs without a process group.
    ``timeout_s`` (config DIST_TIMEOUT_S) bounds how long a collective waits for a missing rank.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda")
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("MODEL.DEVICE is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'.")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    return device


def all_reduce_mean(values: dict) -> dict:
    """Average a dict of floats over ranks (for logging)."""
    if get_world_size() == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    t /= get_world_size()
    return {k: float(v) for k, v in zip(keys, t.cpu())}


def all_reduce_sum(counts: dict) -> dict:
    """Sum a dict of integer counts over ranks (a copy; unchanged in a single process)."""
    if get_world_size() == 1 or not counts:
        return dict(counts)
    keys = sorted(counts)
    t = torch.tensor([float(counts[k]) for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return {k: int(v) for k, v in zip(keys, t.cpu().tolist())}
