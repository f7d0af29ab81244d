HELP = "evaluate trained weights on the config's test set (base / novel / all mIoU, HM, fwIoU, accuracies)"
DESCRIPTION = """Evaluate a checkpoint on DATASETS.TEST of a config.

  simformer eval --config configs/toyscenes/simformer.yaml --weights runs/x/model_final.pth --out runs/x/eval

Writes OUT/metrics.json (miou, base_miou, novel_miou, hm, fwiou, macc, pacc, per_class_iou)
and OUT/per_class_iou.csv. Use TEST.AUG.ENABLED True for multi-scale + flip, and
TEST.MIOU_CONVENTION v0.6 for detectron2 <= v0.6 numbers. Runs under torchrun too."""


def add_arguments(parser):
    parser.add_argument("--config", required=True, help="YAML config file the weights were trained with")
    parser.add_argument("--weights", required=True, help="checkpoint (.pth) written by `simformer train`")
    parser.add_argument("--out", help="folder for metrics.json and per_class_iou.csv")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides")


def run(args) -> int:
    import os

    from simformer.config import load_cfg
    from simformer.engine import comm
    from simformer.engine.checkpoint import Checkpointer
    from simformer.engine.evaluate import evaluate_model
    from simformer.engine.trainer import resolve_split, setup_logging
    from simformer.data.catalog import get_dataset
    from simformer.modeling.simformer import build_model

    if not os.path.isfile(args.weights):
        raise FileNotFoundError(f"--weights {args.weights} does not exist")
    cfg = load_cfg(args.config, list(args.opts) + ["MODEL.BACKBONE.WEIGHTS", ""])
    device = comm.init_distributed(cfg.MODEL.DEVICE)
    setup_logging(args.out, comm.get_rank())
    if not cfg.DATASETS.TEST:
        raise ValueError(f"{args.config} names no DATASETS.TEST")
    test_name = cfg.DATASETS.TEST[0]
    split = resolve_split(cfg, test_name)
    model = build_model(cfg, get_dataset(test_name).num_classes, split).to(device)
    Checkpointer.load(args.weights, model=model)
    evaluate_model(model, cfg, test_name, split, out_dir=args.out)
    return 0
