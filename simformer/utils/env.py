"""Run provenance (git commit, package versions) and seeding."""
from __future__ import annotations

import contextlib
import os
import platform
import random
import subprocess
import sys

import numpy as np

from .cpu_isa import check_cpu_isa, cpuinfo_field


def checkout_root() -> str:
    """The folder that holds the ``simformer`` package (the checkout: configs/, splits/, ...).

    The one place that knows it; relative paths in shipped configs and sweeps resolve from here."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def git_commit(path: str | None = None) -> str:
    """The git commit of the simformer checkout ('unknown' outside git), '+dirty' if modified."""
    path = path or checkout_root()
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        if not sha:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict:
    import importlib.metadata as md

    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in ["simformer", "torch", "numpy", "scipy", "fvcore", "pandas", "Pillow", "h5py"]:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    try:
        import torch

        versions["cuda"] = torch.version.cuda
        versions["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except ImportError:
        pass
    return versions


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The CPU's model name as the kernel reports it (None where there is no /proc/cpuinfo)."""
    return cpuinfo_field("model name", cpuinfo) or platform.processor() or None


def run_info() -> dict:
    """Provenance of a run. ``torch_threads`` and ``cpu_capability`` matter: CPU results are
    bit-identical for the same thread count on the same kernel path, and differ (reduction order)
    for another thread count or another vector instruction set (AVX2 vs AVX512), unless it is
    pinned (``cpu_isa``, utils/cpu_isa.py; raises RuntimeError if the CPU lacks the pinned one)."""
    import torch

    return {"git_commit": git_commit(), "versions": package_versions(), "argv": sys.argv,
            "torch_threads": torch.get_num_threads(), "cpu": cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_isa": check_cpu_isa()}


@contextlib.contextmanager
def preserved_rng():
    """Restore python's, numpy's and torch's global generators (CPU and every CUDA device) on exit:
    work inside the block (a periodic evaluation) then draws nothing from the training's streams,
    so that the training is the same with it or without it."""
    import torch

    states = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
              torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if states[3] is not None:
            torch.cuda.set_rng_state_all(states[3])


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch global generators."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
