HELP = "draw prediction grids and the top novel proposals for test images"
DESCRIPTION = """For each chosen test image: input | GT | base/novel map | prediction, and for each novel
class in the image the proposals with the highest score for it (their masks and class scores).

  simformer visualize --config configs/toyscenes/simformer.yaml --weights runs/x/model_final.pth --out runs/x/figures"""


def add_arguments(parser):
    parser.add_argument("--config", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--out", required=True, help="folder for the PNG figures")
    parser.add_argument("--num", type=int, default=6, help="number of images (spread over the test set)")
    parser.add_argument("--dataset", help="dataset to draw from (default: DATASETS.TEST[0])")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides")


def run(args) -> int:
    import os

    from simformer.config import load_cfg
    from simformer.data.catalog import get_dataset
    from simformer.engine.checkpoint import Checkpointer
    from simformer.engine.trainer import resolve_split
    from simformer.evaluation.visualize import visualize_dataset
    from simformer.modeling.simformer import build_model

    if not os.path.isfile(args.weights):
        raise FileNotFoundError(f"--weights {args.weights} does not exist")
    cfg = load_cfg(args.config, list(args.opts) + ["MODEL.BACKBONE.WEIGHTS", ""])
    name = args.dataset or cfg.DATASETS.TEST[0]
    split = resolve_split(cfg, name)
    model = build_model(cfg, get_dataset(name).num_classes, split)
    Checkpointer.load(args.weights, model=model)
    files = visualize_dataset(model, cfg, name, split, args.out, num_images=args.num)
    print(f"wrote {len(files)} figures to {args.out}")
    return 0
