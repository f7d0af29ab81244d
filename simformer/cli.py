"""The ``simformer`` command: one sub-command per verb, each in ``simformer/commands/<verb>.py``.

A command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``;
heavy imports happen inside ``run`` so that ``simformer --help`` stays fast. Every verb also takes
-q/--quiet, -v/--verbose and --no-progress; exit statuses are listed in ``commands.EXIT_CODES``.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from simformer.commands import EXIT_CODES, UsageError, add_common_options
from simformer.utils.cpu_isa import pin_cpu_isa
from simformer.utils.threads import configure_threads

# verb -> module under simformer.commands
COMMANDS = {
    "demo": "demo",
    "prepare": "prepare",
    "datasets": "datasets",
    "register": "register",
    "split": "split",
    "config": "config",
    "train": "train",
    "eval": "eval",
    "score": "score",
    "fewshot": "fewshot",
    "visualize": "visualize",
    "pseudo-label": "pseudo_label",
    "pipeline": "pipeline",
    "train-matcher": "train_matcher",
    "sweep": "sweep",
    "stats": "stats",
    "plot": "plot",
    "analyze": "analyze",
}


def build_parser() -> argparse.ArgumentParser:
    from simformer import __version__

    parser = argparse.ArgumentParser(
        prog="simformer",
        description="Weak-shot semantic segmentation suite (SimFormer). `simformer VERB --help` for details.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"simformer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="VERB")
    sub.required = True
    for verb, module in COMMANDS.items():
        mod = importlib.import_module(f"simformer.commands.{module}")
        p = sub.add_parser(verb, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        add_common_options(p)
        p.set_defaults(_run=mod.run)
    return parser


class _QuietFilter(logging.Filter):
    """-q: info lines go to the run's log.txt (file handlers) but not to the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        for h in logging.getLogger("simformer").handlers:
            if isinstance(h, logging.FileHandler) and record.levelno >= h.level:
                h.handle(record)
        return False


def _apply_output_options(args) -> None:
    """--no-progress / -q / -v for this process and every process it starts (environment)."""
    log = logging.getLogger("simformer")
    if args.no_progress or args.quiet:
        os.environ["SIMFORMER_PROGRESS"] = "0"
    if args.quiet:
        os.environ["SIMFORMER_LOG_LEVEL"] = "WARNING"
        if not any(isinstance(f, _QuietFilter) for f in log.filters):
            log.addFilter(_QuietFilter())  # survives the handler reset of the training log setup
    if args.verbose:
        os.environ["SIMFORMER_LOG_LEVEL"] = "DEBUG"
        os.environ["SIMFORMER_DEBUG"] = "1"
        log.setLevel(logging.DEBUG)


def exit_code_for(e: BaseException) -> int | None:
    """2 = usage / config, 1 = data / runtime, None = unexpected (a bug: keep the traceback)."""
    from simformer.config import ConfigError
    from simformer.config.checks import ConfigCheckError

    if isinstance(e, (UsageError, ConfigError, ConfigCheckError, KeyError)):
        return 2
    if type(e).__name__ == "SweepError":  # a sweep file or its options
        return 2
    import subprocess

    if isinstance(e, (OSError, ValueError, RuntimeError, ArithmeticError, ImportError, EOFError,
                      subprocess.SubprocessError)):
        return 1  # includes FileNotFoundError, pickle errors, torch / submitit job and submission failures
    try:
        import pickle

        if isinstance(e, pickle.UnpicklingError):
            return 1
    except ImportError:  # pragma: no cover
        pass
    return None


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    _apply_output_options(args)
    try:
        configure_threads(getattr(args, "threads", None))  # before torch starts: threads, passive OpenMP wait
        # before torch starts: its kernels' instruction set (--cpu-isa, else the verb's default if it has one)
        isa = getattr(args, "cpu_isa", None)
        pin_cpu_isa(isa if isa is not None or not hasattr(args, "default_cpu_isa") else args.default_cpu_isa())
        if getattr(args, "num_gpus", 1) != 1:
            if args.num_gpus < 1:
                raise UsageError(f"--num-gpus must be >= 1 (got {args.num_gpus})")
            from simformer.commands.launch import launch

            return launch(main, argv, args.num_gpus)
        return int(args._run(args) or 0)
    except KeyboardInterrupt as e:
        # A training stopped by a signal saved a checkpoint and says how to continue (exit 128 + signal).
        print(f"simformer: {e}" if str(e) else "simformer: interrupted", file=sys.stderr)
        return int(getattr(e, "exit_code", 130))
    except BrokenPipeError:  # `simformer config ... | head`: stop quietly, as other command-line tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as e:  # noqa: BLE001 - mapped to an exit status below
        code = exit_code_for(e)
        if code is None or os.environ.get("SIMFORMER_DEBUG"):
            raise
        print(f"simformer {args.command}: error: {_one_line(e, code)}", file=sys.stderr)
        return code


def _one_line(e: BaseException, code: int) -> str:
    """The error as one line; a wrapped remote traceback (submitit) is cut to its last line."""
    msg = str(e.args[0] if isinstance(e, KeyError) and e.args else e).strip()
    name = "" if code == 2 or isinstance(e, (ValueError, OSError)) else f"{type(e).__name__}: "
    if code == 1 and "Traceback (most recent call last)" in msg:
        lines = [line for line in msg.splitlines() if line.strip()]
        msg = f"{lines[0].strip()} ... {lines[-1].strip()} (full error: add -v)"
    return name + msg


if __name__ == "__main__":
    sys.exit(main())
