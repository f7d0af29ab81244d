"""``simformer fewshot``: the few-shot episode protocol over a trained model's proposals."""
from __future__ import annotations

HELP = "few-shot episodes on a fold (prototype, oracle, ...): mIoU / FB-IoU per method"
DESCRIPTION = """\
Evaluate few-shot methods on seeded episodes of a fold (docs/fewshot.md).

  simformer fewshot --config C --weights W --fold splits/toyscenes/fewshot_fold0.json \\
      --shots 1 --episodes 1000 --seed 0 --method prototype --method oracle --output DIR

A fold is the novel set of any split file. Episodes: a class drawn uniformly from the fold, a query
and SHOTS distinct supports (never the query), each with >= --min-pixels pixels of the class; the
list is a pure function of --seed and is written to DIR/episodes.json. Metrics: per class summed
intersection / summed union over its episodes (--per-episode: the mean of per-episode IoUs), mIoU
over the fold's classes, FB-IoU. Writes DIR/metrics.json, per_class.csv, results.csv (the sweeps'
format: concatenate several seeds' results.csv and run `simformer stats`).

The images are those of --dataset (default: the config's DATASETS.TEST[0]). For a real few-shot
evaluation the weights must come from a model that never saw the fold's classes."""


def add_arguments(parser):
    from . import add_config_argument, add_output_argument

    add_config_argument(parser, help="YAML config file the weights were trained with")
    parser.add_argument("--weights", required=True, help="checkpoint (.pth) of a SimFormer/MaskFormer model")
    parser.add_argument("--fold", required=True, metavar="SPLIT.json",
                        help="split file whose novel classes form the fold (e.g. splits/toyscenes/fewshot_fold0.json)")
    parser.add_argument("--shots", type=int, default=1, help="support images per episode (default 1)")
    parser.add_argument("--episodes", type=int, default=1000, help="number of episodes (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="episode seed (default 0)")
    parser.add_argument("--method", action="append", dest="methods", metavar="NAME",
                        help="few-shot method, repeatable (default: prototype and oracle)")
    parser.add_argument("--dataset", metavar="NAME", help="dataset the episodes come from (default DATASETS.TEST[0])")
    parser.add_argument("--min-pixels", type=int, default=None, metavar="N",
                        help="query and supports hold >= N pixels of the class (default FEWSHOT.MIN_PIXELS)")
    parser.add_argument("--per-episode", action="store_true",
                        help="mean of per-episode IoUs instead of summed intersection / union per class")
    parser.add_argument("--cache-dir", help="pixel-count cache folder (default $SIMFORMER_CACHE or <datasets>/.simformer_cache)")
    add_output_argument(parser, "out", required=True, help="folder for episodes.json, metrics.json, per_class.csv, results.csv")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides")


def _check_args(args) -> None:
    from . import UsageError

    if args.shots < 1:
        raise UsageError(f"--shots must be >= 1 (got {args.shots})")
    if args.episodes < 1:
        raise UsageError(f"--episodes must be >= 1 (got {args.episodes})")
    if args.min_pixels is not None and args.min_pixels < 1:
        raise UsageError(f"--min-pixels must be >= 1 (got {args.min_pixels})")
    methods = args.methods or ["prototype", "oracle"]
    if len(set(methods)) != len(methods):
        raise UsageError(f"--method given twice: {methods}")
    from simformer.fewshot.registry import available_methods

    unknown = [m for m in methods if m not in available_methods()]
    if unknown:
        raise UsageError(f"unknown --method {unknown}; available: {available_methods()}")
    args.methods = methods


def _load_model(args):
    """load_trained_model, with a checkpoint made for another class count named as such."""
    from simformer.engine.defaults import load_trained_model

    try:
        return load_trained_model(args.config, args.weights, args.opts, dataset=args.dataset, log_dir=None)
    except RuntimeError as e:
        import re

        lines = [line.strip().rstrip(".") for line in str(e).splitlines() if "size mismatch" in line]
        if not lines:
            raise
        cls = [re.search(r"class_embed\.\w+: copying a param with shape torch\.Size\(\[(\d+).*current model is "
                         r"torch\.Size\(\[(\d+)", line) for line in lines]
        cls = [m for m in cls if m]
        what = "another model size"
        if cls:
            what = (f"another number of classes (the checkpoint has {int(cls[0].group(1)) - 1}, dataset "
                    f"'{args.dataset}' has {int(cls[0].group(2)) - 1})")
        raise ValueError(f"--weights {args.weights} was trained for {what}: {lines[0]}; use the config "
                         "(and --dataset) it was trained with") from None


def run(args) -> int:
    import os

    from simformer.config import load_cfg
    from simformer.data.catalog import get_dataset, get_dataset_dicts
    from simformer.fewshot.episodes import class_pixel_counts, sample_episodes
    from simformer.fewshot.folds import load_fold
    from simformer.fewshot.runner import format_table, run_fewshot

    from . import UsageError, progress_enabled

    _check_args(args)
    if not os.path.isfile(args.fold):
        raise FileNotFoundError(f"--fold {args.fold} does not exist (folds: splits/*/fewshot_fold*.json, "
                                "splits/coco_stuff_10k/coco20i_fold*.json or any split file)")
    # Fold, data and episodes are checked before the model is built: a bad fold fails fast.
    cfg = load_cfg(args.config, args.opts)
    name = args.dataset or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None)
    if not name:
        raise UsageError(f"{args.config} names no DATASETS.TEST; pass --dataset")
    info = get_dataset(name)
    fold = load_fold(args.fold, expected_names=info.classes, expected_dataset=name)
    records = get_dataset_dicts(name)
    min_pixels = cfg.FEWSHOT.MIN_PIXELS if args.min_pixels is None else args.min_pixels
    counts = class_pixel_counts(records, info.num_classes, cache_dir=args.cache_dir, name=name)
    sample_episodes(counts, fold.class_ids, shots=args.shots, num_episodes=1, seed=args.seed,
                    min_pixels=min_pixels, class_names=info.classes)
    args.dataset = name
    cfg, model, _, _ = _load_model(args)
    results = run_fewshot(cfg, model, records, fold, methods=args.methods, shots=args.shots,
                          episodes=args.episodes, seed=args.seed, min_pixels=min_pixels,
                          per_episode=args.per_episode, out_dir=args.out, dataset_name=name,
                          dataset_label=fold.label or name, counts=counts, progress=progress_enabled(args))
    print(format_table(results), end="")
    print(f"wrote {os.path.join(args.out, 'metrics.json')}, per_class.csv, results.csv, episodes.json")
    return 0
