HELP = "train -> pseudo-label -> retrain -> eval in one resumable run directory (the '*' rows)"
DESCRIPTION = """The full SimFormer* protocol in one command:

  simformer pipeline --config configs/toyscenes/simformer.yaml --output runs/simformer_star SOLVER.MAX_ITER 600

OUTPUT/stage1_train (SimFormer), OUTPUT/pseudo_labels (mixed labels + quality report),
OUTPUT/stage2_retrain (plain MaskFormer on the mixed labels, config --retrain-config, default
retrain.yaml beside --config; --refine gfsam refines the pseudo labels with GF-SAM first, keeping
the unrefined ones in OUTPUT/pseudo_labels/mixed). OUTPUT/metrics.json holds the final metrics plus the stage-1
metrics and the pseudo-label quality. Finished stages are skipped on a second call and an
interrupted stage resumes from its checkpoint, so re-running the same command continues.
KEY VALUE overrides apply to both training stages."""


def add_arguments(parser):
    from simformer.retrain import REFINE_METHODS

    from . import add_config_argument, add_output_argument

    add_config_argument(parser, help="stage-1 config (SimFormer or an ablation, or CAM)")
    add_output_argument(parser, "output", required=True, help="run directory")
    parser.add_argument("--retrain-config", help="stage-2 config (default: retrain.yaml next to --config)")
    parser.add_argument("--stage1-from", metavar="RUN_DIR",
                        help="a finished `simformer train` run with the same config: reuse it as stage 1")
    parser.add_argument("--refine", choices=REFINE_METHODS, default="none",
                        help="refine the pseudo labels with GF-SAM before re-training (docs/gfsam.md)")
    parser.add_argument("--resume", action="store_true", help="accepted for symmetry with train; stages always resume")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides for both stages")


def run(args) -> int:
    from simformer.utils.logger import setup_logging
    from simformer.retrain.pipeline import run_pipeline

    setup_logging(args.output)
    run_pipeline(args.config, args.output, args.opts, retrain_config=args.retrain_config, resume=args.resume,
                 stage1_from=args.stage1_from, refine=args.refine)
    return 0
