HELP = "evaluate trained weights on the config's test set (base / novel / all mIoU, HM, fwIoU, accuracies)"
DESCRIPTION = """Evaluate a checkpoint on DATASETS.TEST of a config.

  simformer eval --config configs/toyscenes/simformer.yaml --weights runs/x/model_final.pth --output runs/x/eval

Writes OUT/metrics.json (miou, base_miou, novel_miou, hm, fwiou, macc, pacc, per_class_iou)
and OUT/per_class_iou.csv. Use TEST.AUG.ENABLED True for multi-scale + flip, and
TEST.MIOU_CONVENTION v0.6 for detectron2 <= v0.6 numbers. Runs under torchrun too, or in N local processes with --num-gpus N."""


def add_arguments(parser):
    from . import add_config_argument, add_num_gpus_argument, add_output_argument

    add_config_argument(parser, help="YAML config file the weights were trained with")
    parser.add_argument("--weights", required=True, help="checkpoint (.pth) written by `simformer train`")
    add_output_argument(parser, "out", help="folder for metrics.json and per_class_iou.csv")
    add_num_gpus_argument(parser)
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides")


def run(args) -> int:
    from simformer.engine.defaults import load_trained_model
    from simformer.evaluation.evaluator import evaluate_model

    cfg, model, split, name = load_trained_model(args.config, args.weights, args.opts, log_dir=args.out)
    evaluate_model(model, cfg, name, split, out_dir=args.out)
    return 0
