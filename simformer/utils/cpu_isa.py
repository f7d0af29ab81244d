"""Pin the vector instruction set of the CPU kernels (``--cpu-isa``), so that a run repeats bit for
bit on another CPU.

With the same seed, config and thread count a CPU run is bit-identical on one machine, but another
CPU can pick other kernels: three libraries choose theirs from the CPU when they start, ATen
(``ATEN_CPU_CAPABILITY``), MKL (``MKL_ENABLE_INSTRUCTIONS``) and oneDNN (``DNNL_MAX_CPU_ISA``).
Measured (README, "What a run depends on"): the same SimFormer command, seed 1, one thread, gave
total loss 13.6544 at iteration 20 on an AVX512 machine and 13.6919 on an AVX2 one; on the AVX512
machine with all three pinned to AVX2 it gave the AVX2 machine's 13.691895671188831 exactly, and
with ATen alone pinned a third value (14.5364). So all three are set together.

Each library reads its variable once, when it starts: :func:`pin_cpu_isa` must run before torch
is imported (the command line does it first) and the variables reach every child process (sweeps)
through the environment. A value is a ceiling: a CPU without the instruction set runs something
else, which :func:`check_cpu_isa` turns into an error at the start of a run.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

ISA_ENV = "SIMFORMER_CPU_ISA"
# per choice: the variables to set, and what torch.backends.cpu.get_cpu_capability() then reports
ISA_SETTINGS = {
    "avx2": ({"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2"}, "AVX2"),
    "avx512": ({"ATEN_CPU_CAPABILITY": "avx512", "MKL_ENABLE_INSTRUCTIONS": "AVX512",
                "DNNL_MAX_CPU_ISA": "AVX512_CORE"}, "AVX512"),
}
CHOICES = (*ISA_SETTINGS, "native")  # what --cpu-isa and a sweep's cpu_isa accept


def cpuinfo_field(name: str, cpuinfo: str = "/proc/cpuinfo") -> Optional[str]:
    """The first ``name : value`` line of /proc/cpuinfo (e.g. ``model name``, ``flags``), stripped;
    None where the file or the field is missing."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_has(flag: str, cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU lists ``flag`` (e.g. ``avx2``) in /proc/cpuinfo, read without starting torch
    (False where there is no /proc/cpuinfo)."""
    return flag in (cpuinfo_field("flags", cpuinfo) or "").split()


def requested_cpu_isa(isa: Optional[str] = None) -> Optional[str]:
    """The choice: ``isa`` (``--cpu-isa``), else ``$SIMFORMER_CPU_ISA``, else None (the CPU's own)."""
    value = isa if isa is not None else os.environ.get(ISA_ENV) or None
    if value is None or value == "native":
        return None
    if value not in ISA_SETTINGS:
        raise ValueError(f"--cpu-isa / {ISA_ENV}: unknown instruction set {value!r}; "
                         f"choose one of {', '.join(CHOICES)}")
    return value


def pin_cpu_isa(isa: Optional[str] = None) -> Optional[str]:
    """Set the three libraries' variables (and ``$SIMFORMER_CPU_ISA``) for this process and its
    children; returns the pinned choice or None. Raises RuntimeError if torch is already imported
    with another instruction set (the variables would only reach child processes)."""
    choice = requested_cpu_isa(isa)
    if choice is None:
        return None
    variables, expected = ISA_SETTINGS[choice]
    torch = sys.modules.get("torch")
    if torch is not None and torch.backends.cpu.get_cpu_capability() != expected:
        raise RuntimeError(f"--cpu-isa {choice}: torch was imported before the instruction set was pinned "
                           f"(it runs {torch.backends.cpu.get_cpu_capability()}); set {ISA_ENV}={choice} "
                           "before starting Python instead")
    os.environ.update(variables)
    os.environ[ISA_ENV] = choice
    return choice


def check_cpu_isa() -> Optional[str]:
    """At the start of a run: the pinned choice (None if none), after checking that torch runs it.
    Raises RuntimeError when the CPU lacks the pinned instruction set."""
    choice = requested_cpu_isa()
    if choice is None:
        return None
    import torch

    actual = torch.backends.cpu.get_cpu_capability()
    if actual != ISA_SETTINGS[choice][1]:
        raise RuntimeError(f"{ISA_ENV}={choice}: this CPU runs {actual} kernels (it lacks {choice.upper()}); "
                           "pin an instruction set it has (--cpu-isa avx2), or leave it unset")
    return choice
