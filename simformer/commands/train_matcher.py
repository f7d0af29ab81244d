HELP = "train MM-Former's mask matching module episodically on a fold's base classes (method mm-former)"
DESCRIPTION = """Train the learnable matching module of MM-Former (docs/mm_former.md) on episodes of the
fold's BASE classes drawn from DATASETS.TRAIN[0], with proposals and features from a frozen model.
Train that model with the fold's novel classes dropped (WEAKSHOT.DROP_NOVEL), so that they are
unseen by both stages.

  simformer train-matcher --config configs/toyscenes/simformer.yaml --weights runs/base/model_final.pth \\
      --fold splits/toyscenes/fold0.json --shots 1 --episodes 2000 --seed 0 --output runs/matcher0

Writes OUT/matcher.pth (use it with `simformer fewshot --method mm-former FEWSHOT.MM_FORMER.WEIGHTS
OUT/matcher.pth`), metrics.json, config.yaml, run_info.json, episodes.json. The seed fixes the
episodes, the initialisation and the order. Trailing KEY VALUE pairs override config keys
(FEWSHOT.MM_FORMER.ITERS, LR, ... in simformer/config/defaults.py)."""


def add_arguments(parser):
    from . import add_config_argument, add_output_argument

    add_config_argument(parser, help="YAML config the proposal model was trained with")
    parser.add_argument("--weights", required=True, help="checkpoint (.pth) of the proposal model")
    parser.add_argument("--fold", required=True, metavar="FOLD.json",
                        help="split file whose novel set is the fold; training uses its base classes")
    parser.add_argument("--shots", type=int, default=1, help="support images per episode (default 1)")
    parser.add_argument("--episodes", type=int, default=2000, help="training episodes sampled (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="fixes episodes, initialisation and order (default 0)")
    parser.add_argument("--min-pixels", type=int, default=None, metavar="N",
                        help="minimum class pixels of a query or support (default: the protocol's FEWSHOT.MIN_PIXELS)")
    add_output_argument(parser, "output", required=True, help="folder for matcher.pth and metrics.json")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides")


def run(args) -> int:
    import logging

    from . import UsageError

    for name in ("shots", "episodes"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be >= 1 (got {getattr(args, name)})")
    if args.min_pixels is not None and args.min_pixels < 0:
        raise UsageError(f"--min-pixels must be >= 0 (got {args.min_pixels})")

    from simformer.data.catalog import class_names
    from simformer.data.class_split import load_split
    from simformer.engine.defaults import load_trained_model
    from simformer.fewshot.train_matcher import train_matcher_on_dataset

    cfg, model, split, name = load_trained_model(args.config, args.weights, args.opts, default_dataset="train",
                                                 log_dir=args.output)
    min_pixels = cfg.FEWSHOT.MIN_PIXELS if args.min_pixels is None else args.min_pixels
    fold = load_split(args.fold, expected_names=class_names(name))
    unseen = bool(cfg.WEAKSHOT.DROP_NOVEL) and set(fold.novel) <= set(split.novel)
    if not unseen:
        logging.getLogger("simformer").warning(
            "train-matcher: the proposal model was not trained with the fold's novel classes dropped "
            "(WEAKSHOT.DROP_NOVEL and a split whose novel set holds %s's); novel classes are not unseen",
            args.fold)
    train_matcher_on_dataset(cfg, model, dataset_name=name, train_classes=list(fold.base), shots=args.shots,
                             num_episodes=args.episodes, seed=args.seed, min_pixels=int(min_pixels),
                             output_dir=args.output,
                             info={"fold": args.fold, "fold_novel": list(fold.novel), "weights": args.weights,
                                   "novel_unseen_by_proposal_model": unseen})
    print(f"wrote {args.output}/matcher.pth and metrics.json")
    return 0
