"""The ``simformer`` command: one sub-command per verb, each in ``simformer/commands/<verb>.py``.

A command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``;
heavy imports happen inside ``run`` so that ``simformer --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from simformer.utils.threads import configure_threads

# verb -> module under simformer.commands
COMMANDS = {
    "demo": "demo",
    "prepare": "prepare",
    "datasets": "datasets",
    "register": "register",
    "split": "split",
    "train": "train",
    "eval": "eval",
    "score": "score",
    "visualize": "visualize",
    "pseudo-label": "pseudo_label",
    "pipeline": "pipeline",
    "sweep": "sweep",
    "stats": "stats",
    "plot": "plot",
}


def build_parser() -> argparse.ArgumentParser:
    from simformer import __version__

    parser = argparse.ArgumentParser(
        prog="simformer",
        description="Weak-shot semantic segmentation suite (SimFormer). `simformer VERB --help` for details.",
    )
    parser.add_argument("--version", action="version", version=f"simformer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="VERB")
    sub.required = True
    for verb, module in COMMANDS.items():
        mod = importlib.import_module(f"simformer.commands.{module}")
        p = sub.add_parser(verb, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        configure_threads(getattr(args, "threads", None))  # before torch starts: threads, passive OpenMP wait
        return int(args._run(args) or 0)
    except KeyboardInterrupt as e:
        # A training stopped by a signal saved a checkpoint and says how to continue (exit 128 + signal).
        print(f"simformer: {e}" if str(e) else "simformer: interrupted", file=sys.stderr)
        return int(getattr(e, "exit_code", 130))
    except (FileNotFoundError, ValueError, KeyError) as e:
        # Bad input: a clear one-line error, no traceback (set SIMFORMER_DEBUG=1 for one).
        import os

        if os.environ.get("SIMFORMER_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"simformer {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except (FloatingPointError, OSError) as e:
        # Runtime failures with a message of their own (non-finite loss, disk full, a rank that stopped
        # answering): one line, already in log.txt; SIMFORMER_DEBUG=1 for the traceback.
        import os

        if os.environ.get("SIMFORMER_DEBUG"):
            raise
        print(f"simformer {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
