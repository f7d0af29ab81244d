"""``simformer analyze``: diagnostics of a trained model (``proposals``: docs/proposals.md;
``simnet``: docs/simnet.md)."""
from __future__ import annotations

HELP = ("diagnose a trained model: its mask proposals vs its predictions (analyze proposals), SimNet on base vs "
        "novel pixel pairs (analyze simnet)")
DESCRIPTION = """\
Diagnostics of trained weights on a dataset (default: DATASETS.TEST[0] of the config).

  simformer analyze proposals --config configs/toyscenes/simformer.yaml \\
      --weights runs/x/model_final.pth --output runs/x/proposals [KEY VALUE ...]

Per class (base and novel): the achieved IoU of the prediction, the oracle IoU of the best single
query mask per image (I/U summed over images where the class is present) and the IoU of the greedy
union of query masks. Writes OUT/proposals.csv, OUT/metrics.json (base / novel / all means, the
oracle gap = oracle - achieved, and object_queries_per_image: queries whose most likely class is not
"no object"; 0 = the classifier predicts nothing) and OUT/proposals.png. Needs a model with mask proposals
(SimFormer / MaskFormer; not CAM).
"""
SIMNET_DESCRIPTION = """\
SimNet transferability, the paper's Table 3 (docs/simnet.md): on (image, reference) pairs of the
training loader (DATASETS.TRAIN[0], its augmentation, order fixed by --seed), J points drawn from
the base pixels and J from the novel pixels of each image, full ground truth, void left out. Per
group (base / novel pairs): F1 of "similar" and of "dissimilar", accuracy, the share of truly
similar pairs and the pair count. Writes OUT/metrics.json and OUT/simnet_transfer.csv.

  simformer analyze simnet --config configs/toyscenes/simformer.yaml \\
      --weights runs/x/model_final.pth --output runs/x/simnet [--pairs 100] [KEY VALUE ...]
"""


def add_arguments(parser) -> None:
    import argparse

    from . import EXIT_CODES, add_common_options, add_config_argument, add_output_argument

    sub = parser.add_subparsers(dest="kind", metavar="KIND")
    sub.required = True

    def analysis(kind: str, help: str, description: str, config_help: str, out_help: str, extra):
        """One analysis of trained weights: --config, --weights, --output, its own options, overrides."""
        p = sub.add_parser(kind, help=help, description=description, epilog=EXIT_CODES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        add_config_argument(p, help=config_help)
        p.add_argument("--weights", required=True, help="checkpoint (.pth) written by `simformer train`")
        add_output_argument(p, "out", required=True, help=out_help)
        extra(p)
        add_common_options(p, suppress=True)
        p.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides")

    def proposal_options(p):
        p.add_argument("--dataset", default=None, metavar="NAME", help="dataset to analyse (default DATASETS.TEST[0])")
        p.add_argument("--threshold", type=float, default=0.5,
                       help="a pixel belongs to a proposal when its mask probability is above this (default 0.5)")

    def simnet_options(p):
        p.add_argument("--pairs", type=int, default=100, help="training image pairs to score (default 100, the paper's)")
        p.add_argument("--points", type=int, default=None,
                       help="points per image and group, J (default WEAKSHOT.SIMNET.NUM_POINTS)")
        p.add_argument("--seed", type=int, default=0,
                       help="fixes the loader's pairs, augmentation and the points (default 0)")

    analysis("proposals", "achieved vs oracle vs greedy-union IoU of the query masks, per class", DESCRIPTION,
             "YAML config file the weights were trained with", "folder for proposals.csv, metrics.json, proposals.png",
             proposal_options)
    analysis("simnet", "F1 of SimNet's similar / dissimilar decision on base vs novel pixel pairs", SIMNET_DESCRIPTION,
             "YAML config file the weights were trained with (SimNet on, pairs on)",
             "folder for metrics.json and simnet_transfer.csv", simnet_options)


def run(args) -> int:
    if args.kind == "simnet":
        return run_simnet(args)
    return run_proposals(args)


def run_simnet(args) -> int:
    from . import UsageError

    if args.pairs < 1 or (args.points is not None and args.points < 1):
        raise UsageError(f"--pairs and --points must be >= 1, got {args.pairs} and {args.points}")
    from simformer.engine.defaults import load_trained_model
    from simformer.evaluation.simnet_transfer import GROUPS, simnet_transfer_on_training_pairs, summary_csv
    from simformer.utils.io import atomic_write_json, atomic_write_text

    cfg, model, split, name = load_trained_model(args.config, args.weights, list(args.opts) + ["SEED", str(args.seed)],
                                                 default_dataset="train", log_dir=args.out)
    try:
        acc = simnet_transfer_on_training_pairs(model, cfg, split, num_image_pairs=args.pairs, num_points=args.points,
                                                seed=args.seed)
    except ValueError as e:
        raise UsageError(f"{args.config}: {e}") from e
    summary, points = acc.summary(), acc.num_points
    atomic_write_text(f"{args.out}/simnet_transfer.csv", summary_csv(summary))
    atomic_write_json(f"{args.out}/metrics.json", {
        **summary, "image_pairs": acc.image_pairs, "num_points": points, "dataset": name, "seed": args.seed,
        "config": args.config, "weights": args.weights})
    for g in GROUPS:
        s = summary[g]
        print(f"{g:>5} pairs: F1 similar {s['f1_similar']:.1f}  F1 dissimilar {s['f1_dissimilar']:.1f}  "
              f"accuracy {s['accuracy']:.1f}  similar share {s['similar_share']:.1f} %  ({s['pairs']} pairs)")
    print(f"{acc.image_pairs} image pairs of {name}, J = {points}; wrote {args.out}/metrics.json, simnet_transfer.csv")
    return 0


def run_proposals(args) -> int:
    from . import UsageError

    if not 0.0 < args.threshold < 1.0:
        raise UsageError(f"--threshold must be in (0, 1), got {args.threshold}")
    from simformer.config import load_cfg
    from simformer.utils import comm

    # Refuse a model without proposals before building and loading it.
    arch = load_cfg(args.config, list(args.opts)).MODEL.META_ARCHITECTURE
    if arch == "CAM":
        raise UsageError(f"{args.config}: MODEL.META_ARCHITECTURE CAM has no mask proposals; "
                         "`simformer analyze proposals` needs a SimFormer / MaskFormer model")
    from simformer.engine.defaults import load_trained_model
    from simformer.evaluation.proposal_report import analyze_proposals, has_proposals, write_proposal_report

    cfg, model, split, name = load_trained_model(args.config, args.weights, args.opts, dataset=args.dataset,
                                                 log_dir=args.out)
    if not has_proposals(model):
        raise UsageError(f"{args.config}: MODEL.META_ARCHITECTURE {arch} has no mask proposals")
    acc = analyze_proposals(model, cfg, name, split, threshold=args.threshold)
    if comm.is_main_process():
        extra = {"dataset": name, "config": args.config, "weights": args.weights,
                 "tta": bool(cfg.TEST.AUG.ENABLED)}
        s = write_proposal_report(acc, args.out, title=f"{name}, {arch}", extra=extra)
        fmt = lambda v: "n/a" if v is None else f"{v:.1f}"  # noqa: E731
        for group in ("base", "novel", "all"):
            print(f"{group:>5} mIoU: achieved {fmt(s['achieved'][group])}  oracle {fmt(s['oracle'][group])}  "
                  f"union {fmt(s['union'][group])}")
        print(f"oracle gap (novel): {fmt(s['oracle_gap_novel'])}; {acc.num_images} images, "
              f"{acc.num_proposals} proposals each, {fmt(s['object_queries_per_image'])} predicting a class per image; "
              f"wrote {args.out}/proposals.csv, metrics.json, proposals.png")
    return 0
