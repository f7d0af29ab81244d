"""``simformer config``: print the resolved config, or every problem of a config at once."""
from __future__ import annotations

from . import add_config_argument

HELP = "print the resolved config of a YAML file (simformer, detectron2, MaskFormer, release) or all its problems"
DESCRIPTION = """\
Load FILE (with its _BASE_ chain) and the KEY VALUE overrides exactly as `simformer train` would,
and print the resolved simformer config as YAML (exit 0). Foreign keys are listed first as YAML
comments: what each detectron2 / MaskFormer / SimFormer-release key became (translated), which
were accepted because their value is what simformer implements, and which were ignored because
they change nothing in MaskFormer's semantic model either. If anything cannot be honoured, every
problem is printed on stderr, one per line, naming the key, the file and the reason (exit 2).
The key-by-key table: docs/detectron2.md.

  simformer config --config configs/ade20k-150/maskformer_R50_bs16_160k.yaml
  simformer config --config-file my.yaml SOLVER.MAX_ITER 1000 --output resolved.yaml"""


def add_arguments(parser) -> None:
    add_config_argument(parser)
    parser.add_argument("--output", "--out", dest="out", metavar="FILE",
                        help="also write the resolved config to FILE (alias --out)")
    parser.add_argument("--no-notes", action="store_true", help="print only the resolved YAML")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides")


def run(args) -> int:
    import sys

    from simformer.config import ConfigError, dump_cfg, load_cfg_report

    try:
        cfg, notes = load_cfg_report(args.config, list(args.opts))
    except ConfigError as e:
        problems = getattr(e, "problems", None) or [str(e)]
        print(f"simformer config: {len(problems)} problem(s) in {args.config}:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 2
    if notes and not args.no_notes:
        print(f"# {args.config}: {len(notes)} detectron2 / MaskFormer / release key(s) translated, accepted "
              "or ignored:")
        for n in notes:
            print("#   " + n.replace("\n", " "))
    print(cfg.dump(), end="")
    if args.out:
        dump_cfg(cfg, args.out)
        print(f"# written to {args.out}", file=sys.stderr)
    return 0
