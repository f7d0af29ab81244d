"""`simformer score`: mIoU of a folder of predicted label PNGs against a folder of GT PNGs."""
from __future__ import annotations

import argparse

HELP = "score a folder of predicted label PNGs against ground truth (mIoU, base/novel/HM)"
DESCRIPTION = """\
Score predictions saved as single-channel PNGs (pixel value = class id, 255 = no prediction),
one per ground-truth PNG with the same file stem, e.g. pred/ADE_val_00000001.png for
gt/ADE_val_00000001.png. GT pixels equal to 255 are void and not counted.

  simformer score --pred out/preds --gt datasets/ADEChallengeData2016/annotations_detectron2/validation \\
      --dataset ade20k --split splits/ade20k_paper.json --output out/score

Without --split only all-class metrics are reported (base/novel mIoU and HM are empty).
With --output, metrics.json and per_class_iou.csv are written there.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, metavar="DIR", help="folder of predicted label PNGs")
    parser.add_argument("--gt", required=True, metavar="DIR", help="folder of ground-truth label PNGs")
    parser.add_argument("--dataset", required=True, metavar="NAME",
                        help="dataset name or family that gives the class names (e.g. ade20k, ade20k_val)")
    parser.add_argument("--split", metavar="FILE", help="split file (base/novel classes) from `simformer split`")
    from . import add_output_argument

    add_output_argument(parser, "out", help="write metrics.json and per_class_iou.csv here")
    parser.add_argument("--convention", choices=["current", "v0.6"], default="current",
                        help="mIoU convention for classes absent from the GT (default: current)")


def _png_stems(folder: str, what: str) -> dict:
    import os

    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{what} folder {folder} does not exist")
    return {os.path.splitext(f)[0]: os.path.join(folder, f) for f in sorted(os.listdir(folder))
            if f.lower().endswith(".png") and not f.startswith(".")}


def _list_names(names, limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def run(args) -> int:
    import sys

    from tqdm import tqdm

    from simformer.data.catalog import class_names as catalog_class_names
    from simformer.data.class_split import load_split
    from simformer.evaluation.evaluator import sem_seg_evaluator
    from simformer.evaluation.sem_seg import format_table, write_results
    from simformer.utils.io import read_label

    names = catalog_class_names(args.dataset)
    split = load_split(args.split, expected_names=names) if args.split else None

    gts = _png_stems(args.gt, "Ground-truth")
    if not gts:
        raise FileNotFoundError(f"No ground-truth PNGs in {args.gt}")
    preds = _png_stems(args.pred, "Prediction")
    missing = [s for s in gts if s not in preds]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(gts)} ground-truth files have no prediction in {args.pred}: "
            f"{_list_names([gts[s] for s in missing])}. Write one single-channel PNG per ground-truth file with "
            "the same name (255 where nothing is predicted), or point --gt at the subset you predicted."
        )
    extra = sorted(s for s in preds if s not in gts)
    if extra:
        print(f"simformer score: note: {len(extra)} predictions have no ground truth and are ignored: "
              f"{_list_names([s + '.png' for s in extra])}", file=sys.stderr)

    evaluator = sem_seg_evaluator(names, split, convention=args.convention)
    novel_mask = evaluator.novel_mask
    from . import progress_enabled

    for stem in tqdm(gts, desc="scoring", unit="img", disable=None if progress_enabled(args) else True):
        pred_path, gt_path = preds[stem], gts[stem]
        try:
            evaluator.process(read_label(pred_path), read_label(gt_path), name=pred_path)
        except ValueError as e:
            raise ValueError(f"{e} (ground truth: {gt_path})") from e
    results = evaluator.evaluate()
    print(f"{len(gts)} images, dataset '{args.dataset}' ({len(names)} classes)")
    print(format_table(results, names, novel_mask))
    if args.out:
        paths = write_results(results, args.out, names, novel_mask)
        print(f"wrote {paths['metrics']} and {paths['per_class_iou']}")
    return 0
