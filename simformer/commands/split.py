"""``simformer split``: make, validate and inspect base/novel class split files."""
from __future__ import annotations

import argparse
import os
import sys

from . import UsageError, progress_enabled

HELP = "make, validate or show a base/novel class split file"
DESCRIPTION = """\
Make, validate or show a base/novel class split (JSON, see simformer/data/class_split.py).

  random:  simformer split --dataset NAME --novel-ratio 0.25 --seed S --output FILE.json [--min-images N]
  paper:   simformer split --paper coco_stuff_10k/split1 --output FILE.json
           simformer split --paper all --output DIR      (DIR/<family>/split<i>.json, all 13)
  nested:  simformer split --dataset NAME --nested 6,8,10 --seed S --output DIR   (DIR/novel<n>.json)
  folds:   simformer split --fewshot-folds toyscenes --output DIR  (DIR/fewshot_fold<i>.json; coco_stuff_10k:
           DIR/coco20i_fold<i>.json, the COCO-20i classes; docs/fewshot.md)
  check:   simformer split --validate FILE       (exit 1 if invalid)
  inspect: simformer split --show FILE

NAME is a dataset family (coco_stuff_10k, ade20k, toyscenes, or one you registered) or a dataset
name. Statistics (novel pixel share, images per novel class) come from the family's training set
when its files exist, and are skipped otherwise; pixel counts are cached (see
simformer/data/presence.py). A different split already at an output path is only replaced with
--force.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--dataset", metavar="NAME", help="family or dataset name for a random / nested split")
    mode.add_argument("--paper", metavar="KEY", help="paper split, e.g. coco_stuff_10k/split1 or ade20k/split4, or 'all'")
    mode.add_argument("--validate", metavar="FILE", help="check a split file; exit 1 if invalid")
    mode.add_argument("--show", metavar="FILE", help="print a split file's summary")
    mode.add_argument("--fewshot-folds", metavar="FAMILY",
                      help="the named few-shot folds of toyscenes (4 x 6 classes) or coco_stuff_10k (COCO-20i)")
    parser.add_argument("--novel-ratio", type=float, default=0.25, help="share of novel classes (default 0.25)")
    parser.add_argument("--seed", type=int, help="random seed (required with --dataset)")
    parser.add_argument("--nested", metavar="N1,N2,...",
                        help="nested splits with these numbers of novel classes (one permutation)")
    parser.add_argument("--min-images", type=int, default=0,
                        help="each novel class must occur in >= N training images (needs the training data)")
    parser.add_argument("--output", metavar="FILE|DIR",
                        help="where to write: a FILE.json for one split, a DIR for --paper all / --nested")
    parser.add_argument("--out", metavar="FILE", help="alias of --output for one split file")
    parser.add_argument("--out-dir", metavar="DIR", help="alias of --output for a folder (--paper all, --nested)")
    parser.add_argument("--force", action="store_true", help="replace an existing, different split file")
    parser.add_argument("--no-stats", action="store_true", help="do not read the training labels for statistics")
    parser.add_argument("--cache-dir", help="pixel-count cache folder (default $SIMFORMER_CACHE or <datasets>/.simformer_cache)")
    parser.add_argument("--workers", "--jobs", "-j", dest="workers", type=int, default=None,
                        help="processes reading label files (default: automatic); aliases --jobs, -j")


def _resolve_family(name: str) -> str:
    """Family of ``name``: a built-in family, a dataset name, or a user-registered family."""
    from simformer.data import catalog

    try:
        catalog.builtin_class_names(name)
        return name
    except KeyError:
        pass
    try:
        return catalog.get_dataset(name).family
    except KeyError:
        pass
    if catalog.family_datasets(name):
        return name
    raise KeyError(
        f"Unknown dataset or family '{name}'. Built-in datasets: {', '.join(catalog.list_datasets())}; "
        "families: coco_stuff_10k, ade20k, toyscenes. Register your own with `simformer register`."
    )


def _train_counts(family: str, args, name_hint: str | None = None):
    """(counts [N, K] of the family's training set, dataset name) or (None, reason)."""
    from simformer.data import catalog
    from simformer.data.presence import class_pixel_counts

    info = None
    if name_hint:
        try:
            cand = catalog.get_dataset(name_hint)
            if cand.is_train and cand.family == family:
                info = cand
        except KeyError:
            pass
    if info is None:
        try:
            info = catalog.family_train_dataset(family)
        except KeyError as e:
            return None, str(e.args[0] if e.args else e)
    try:
        counts = class_pixel_counts(info.name, cache_dir=args.cache_dir, workers=args.workers,
                                    progress=progress_enabled(args))
    except FileNotFoundError as e:
        return None, str(e)
    return counts, info.name


def _print_summary(split, args, name_hint: str | None = None, stats: bool = True) -> None:
    from simformer.data.class_split_gen import format_summary, split_summary

    counts = None
    if stats and not args.no_stats:
        counts, what = _train_counts(split.dataset, args, name_hint)
        if counts is None:
            print(f"(training-set statistics skipped: {what})")
        elif counts.shape[1] != split.num_classes:
            print(f"(training-set statistics skipped: {what} has {counts.shape[1]} classes, the split {split.num_classes})")
            counts = None
    print(format_summary(split_summary(split, counts)))


def _write(split, path: str, force: bool) -> None:
    """Save ``split`` at ``path``; refuse to silently replace a different split."""
    from simformer.data.class_split import SplitError, load_split, save_split

    if os.path.exists(path) and not force:
        try:
            old = load_split(path)
            same = old.novel == split.novel and old.class_names == split.class_names and old.dataset == split.dataset
        except SplitError:
            same = False
        if not same:
            raise ValueError(f"{path} already holds a different (or invalid) split; pass --force to replace it")
    save_split(split, path)
    print(f"wrote {path}")


def _parse_sizes(text: str):
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--nested expects comma-separated integers like 6,8,10, got '{text}'") from None
    if not sizes:
        raise UsageError("--nested expects at least one number of novel classes")
    return sizes


def _resolve_output(args) -> None:
    """--output is a FILE.json (one split) or a DIR (--paper all, --nested); --out / --out-dir are its aliases."""
    if not args.output:
        return
    if args.out or args.out_dir:
        raise UsageError("give --output, or its alias --out / --out-dir, not both")
    multi = args.paper == "all" or bool(args.nested) or bool(args.fewshot_folds)
    if multi or not args.output.endswith(".json"):
        args.out_dir = args.output
    else:
        args.out = args.output


def run(args) -> int:
    from simformer.data.class_split import SplitError, load_split

    _resolve_output(args)

    if args.validate:
        try:
            split = load_split(args.validate)
        except SplitError as e:
            print(f"simformer split: INVALID: {e}", file=sys.stderr)
            return 1
        print(f"OK: {args.validate} is a valid split")
        _print_summary(split, args, stats=False)
        return 0

    if args.show:
        split = load_split(args.show)  # SplitError is a ValueError: clean one-line error, exit 2
        _print_summary(split, args)
        return 0

    if args.paper:
        return _run_paper(args)
    if args.fewshot_folds:
        return _run_fewshot_folds(args)
    return _run_seeded(args)


def _run_fewshot_folds(args) -> int:
    from simformer.fewshot.folds import fewshot_folds

    if not args.out_dir:
        raise UsageError("--fewshot-folds needs --output DIR (writes DIR/fewshot_fold<i>.json or DIR/coco20i_fold<i>.json)")
    for stem, split in fewshot_folds(args.fewshot_folds):
        _write(split, os.path.join(args.out_dir, stem + ".json"), args.force)
        _print_summary(split, args)
    return 0


def _run_paper(args) -> int:
    from simformer.data.class_split_gen import paper_split, paper_split_keys

    keys = paper_split_keys() if args.paper == "all" else [args.paper]
    if args.paper == "all" and not args.out_dir:
        raise UsageError("--paper all needs --output DIR (writes DIR/<family>/split<i>.json)")
    if args.paper != "all" and not (args.out or args.out_dir):
        raise UsageError("--paper KEY needs --output FILE.json or --output DIR")
    if args.paper == "all" and args.out:
        raise UsageError("--paper all writes several files: --output must be a folder, not --out FILE")
    for key in keys:
        split = paper_split(key)
        path = args.out or os.path.join(args.out_dir, key + ".json")
        _write(split, path, args.force)
        _print_summary(split, args)
    return 0


def _run_seeded(args) -> int:
    from simformer.data import catalog
    from simformer.data.class_split_gen import nested_splits, random_split

    if args.seed is None:
        raise UsageError("--dataset needs --seed S (splits must be reproducible)")
    family = _resolve_family(args.dataset)
    names = catalog.class_names(family)
    presence = None
    if args.min_images > 0:
        counts, what = _train_counts(family, args, args.dataset)
        if counts is None:
            raise FileNotFoundError(f"--min-images needs the training labels of '{family}': {what}")
        presence = counts > 0

    if args.nested:
        if not args.out_dir:
            raise UsageError("--nested needs --output DIR (writes DIR/novel<n>.json)")
        splits = nested_splits(family, names, seed=args.seed, num_novel=_parse_sizes(args.nested),
                               presence=presence, min_images=args.min_images)
        for split in splits:
            _write(split, os.path.join(args.out_dir, f"novel{split.source['num_novel']}.json"), args.force)
            _print_summary(split, args, args.dataset)
        return 0

    if not args.out:
        raise UsageError("--dataset needs --output FILE.json (or --nested with --output DIR)")
    split = random_split(family, names, novel_ratio=args.novel_ratio, seed=args.seed,
                         presence=presence, min_images=args.min_images)
    _write(split, args.out, args.force)
    _print_summary(split, args, args.dataset)
    return 0
