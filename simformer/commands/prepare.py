"""``simformer prepare``: convert ADE20K / COCO-Stuff-10K, or generate ToyScenes."""
from __future__ import annotations

import argparse
import os

HELP = "convert ADE20K / COCO-Stuff-10K to the training layout, or generate ToyScenes"
DESCRIPTION = """\
Prepare a dataset in the layout the catalog reads (see `simformer datasets`).

  simformer prepare ade20k --root DATASETS/ADEChallengeData2016
      annotations/{training,validation}/*.png (0 = other, 1..150)
      -> annotations_detectron2/<split>/*.png (label = raw - 1, 0 -> 255); images stay in place.
  simformer prepare coco-stuff-10k --root DATASETS/coco/coco_stuff_10k
      images/*.jpg, annotations/*.mat (v1.0, field S), imageLists/{train,test}.txt
      -> images_detectron2/<split>/*.jpg (hard links) + annotations_detectron2/<split>/*.png (S - 2, 1 -> 255).
  simformer prepare toyscenes [--root DIR] [--num-train 1000 --num-val 200 --size 128 --seed 0]
      generates the embedded procedural dataset (docs/toyscenes.md).

--root defaults to the catalog location under the datasets root ($SIMFORMER_DATASETS, else
$DETECTRON2_DATASETS, else ./datasets). Re-running skips finished files, so an interrupted run is
resumed by running the same command again.
"""

DATASETS = ("ade20k", "coco-stuff-10k", "toyscenes")
_TOY_DEFAULTS = {"num_train": 1000, "num_val": 200, "size": 128, "seed": 0}


def default_root(dataset: str) -> str:
    from simformer.data.catalog import datasets_root

    sub = {"ade20k": "ADEChallengeData2016", "coco-stuff-10k": os.path.join("coco", "coco_stuff_10k"),
           "toyscenes": "toyscenes"}[dataset]
    return os.path.join(datasets_root(), sub)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", choices=DATASETS, help="which dataset to prepare")
    parser.add_argument("--root", metavar="DIR", help="dataset folder (default: its place under the datasets root)")
    parser.add_argument("--workers", "--jobs", "-j", dest="workers", type=int, default=None,
                        help="worker processes (default: serial for conversion, automatic for toyscenes)")
    toy = parser.add_argument_group("toyscenes only")
    toy.add_argument("--num-train", type=int, help=f"training images (default {_TOY_DEFAULTS['num_train']})")
    toy.add_argument("--num-val", type=int, help=f"validation images (default {_TOY_DEFAULTS['num_val']})")
    toy.add_argument("--size", type=int, help=f"image side in pixels (default {_TOY_DEFAULTS['size']})")
    toy.add_argument("--seed", type=int, help=f"generation seed (default {_TOY_DEFAULTS['seed']})")


def run(args: argparse.Namespace) -> int:
    root = os.path.expanduser(args.root) if args.root else default_root(args.dataset)
    from . import UsageError, progress_enabled

    progress = progress_enabled(args)
    toy_opts = {k: getattr(args, k, None) for k in _TOY_DEFAULTS}
    if args.dataset != "toyscenes":
        given = [f"--{k.replace('_', '-')}" for k, v in toy_opts.items() if v is not None]
        if given:
            raise UsageError(f"{', '.join(given)} only apply to `simformer prepare toyscenes`")
    if args.workers is not None and args.workers < 0:
        raise UsageError(f"--workers must be >= 0 (got {args.workers})")

    if args.dataset == "ade20k":
        from simformer.data.datasets.prepare import prepare_ade20k

        prepare_ade20k(root, workers=args.workers, progress=progress)
    elif args.dataset == "coco-stuff-10k":
        from simformer.data.datasets.prepare import prepare_coco_stuff_10k

        prepare_coco_stuff_10k(root, workers=args.workers, progress=progress)
    else:
        from simformer.data.datasets.toyscenes import generate_toyscenes

        opts = {k: (_TOY_DEFAULTS[k] if v is None else v) for k, v in toy_opts.items()}
        generate_toyscenes(root, workers=args.workers, progress=progress, **opts)
    return 0
