HELP = "draw prediction grids and the top novel proposals for test images"
DESCRIPTION = """For each chosen test image: input | GT | base/novel map | prediction, and for each novel
class in the image the proposals with the highest score for it (their masks and class scores).

  simformer visualize --config configs/toyscenes/simformer.yaml --weights runs/x/model_final.pth --output runs/x/figures"""


def add_arguments(parser):
    from . import add_config_argument, add_output_argument

    add_config_argument(parser)
    parser.add_argument("--weights", required=True)
    add_output_argument(parser, "out", required=True, help="folder for the PNG figures")
    parser.add_argument("--num", type=int, default=6, help="number of images (spread over the test set)")
    parser.add_argument("--dataset", help="dataset to draw from (default: DATASETS.TEST[0])")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides")


def run(args) -> int:
    from simformer.engine.defaults import load_trained_model
    from simformer.evaluation.visualize import visualize_dataset

    cfg, model, split, name = load_trained_model(args.config, args.weights, args.opts, args.dataset)
    files = visualize_dataset(model, cfg, name, split, args.out, num_images=args.num)
    print(f"wrote {len(files)} figures to {args.out}")
    return 0
