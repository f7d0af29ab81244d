"""One module per ``simformer`` verb (see simformer/cli.py) and the pieces they share."""
from __future__ import annotations

import argparse

from simformer.utils.cpu_isa import CHOICES as CPU_ISA_CHOICES

EXIT_CODES = """exit status:
  0    success
  1    data or runtime error (missing or broken files, a failed run); one line on stderr
  2    usage or config error (bad option, unknown or rejected config key); every problem listed
  130  interrupted (Ctrl-C)
Set SIMFORMER_DEBUG=1 (or pass -v) for a traceback."""


class UsageError(ValueError):
    """A wrong combination or value of command-line options (exit status 2)."""


def add_common_options(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    """-q/--quiet, -v/--verbose, --no-progress, --threads, --cpu-isa: accepted by every verb (and every sub-kind)."""
    d = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("output")
    group.add_argument("-q", "--quiet", action="store_true", default=d or False,
                       help="only warnings and errors (no info log lines, no progress bars)")
    group.add_argument("-v", "--verbose", action="store_true", default=d or False,
                       help="debug log lines, and a traceback with any error")
    group.add_argument("--no-progress", action="store_true", default=d or False,
                       help="no progress bars (same as SIMFORMER_PROGRESS=0)")
    group.add_argument("--threads", type=int, metavar="N", default=d,
                       help="CPU threads for torch/OpenMP (default: the cores this process may use minus "
                            "those busy now; same as SIMFORMER_THREADS=N; simformer/utils/threads.py)")
    group.add_argument("--cpu-isa", choices=CPU_ISA_CHOICES, default=d,
                       help="vector instruction set of the CPU kernels (ATen, MKL, oneDNN), for results that "
                            "repeat bit for bit on another CPU (default: the CPU's own; `demo`: avx2 where the "
                            "CPU has it; same as SIMFORMER_CPU_ISA; simformer/utils/cpu_isa.py)")


def add_config_argument(parser: argparse.ArgumentParser, required: bool = True, help: str = "YAML config file") -> None:
    """``--config`` (detectron2's ``--config-file`` is an alias)."""
    parser.add_argument("--config", "--config-file", dest="config", required=required, metavar="FILE",
                        help=help + " (simformer, detectron2 or MaskFormer YAML; alias --config-file)")


def add_output_argument(parser: argparse.ArgumentParser, dest: str, required: bool = False,
                        help: str = "output folder", metavar: str = "DIR", default=None) -> None:
    """``--output`` everywhere (``--out`` is an alias kept for old scripts)."""
    parser.add_argument("--output", "--out", dest=dest, required=required, metavar=metavar, default=default,
                        help=help + " (alias --out)")


def add_num_gpus_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-gpus", type=int, default=1, metavar="N",
                        help="processes on this machine, one per GPU (CPU: gloo processes), launched as torchrun "
                             "would (detectron2's --num-gpus); default 1")


def check_metric_option(df, metric: str, source: str) -> None:
    """--metric must name a known metric or a column of the results: else a usage error (2).
    A known metric missing from the file is a data error (1), raised later by the loader."""
    from simformer.stats import METRICS, check_metric

    if metric not in df.columns and metric not in METRICS:
        try:
            check_metric(df, metric, source=source)
        except ValueError as e:
            raise UsageError(str(e)) from None


def check_column_options(df, columns: dict) -> None:
    """Options that name a results column (--param, --group): a missing one is a usage error."""
    for option, name in columns.items():
        if name is not None and name not in df.columns:
            raise UsageError(f"{option} {name!r} is not a column of the results; columns: {list(df.columns)}")


def progress_enabled(args=None) -> bool:
    """Progress bars on unless --no-progress / --quiet / SIMFORMER_PROGRESS=0."""
    import os

    if args is not None and (getattr(args, "no_progress", False) or getattr(args, "quiet", False)):
        return False
    return os.environ.get("SIMFORMER_PROGRESS", "1") != "0"
