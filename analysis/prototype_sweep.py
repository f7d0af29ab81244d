"""Choose the `prototype` method's feature map and cosine threshold (docs/fewshot.md, "prototype").

Runs the episode protocol once with one PrototypeMethod per (feature, threshold) pair (the view
cache runs each image through the model once) and prints mIoU per pair. Choose on images and
classes that are not the evaluation's, e.g. the training images and the model's own novel classes:

  python analysis/prototype_sweep.py --config C --weights W --dataset toyscenes_train \
      --fold splits/toyscenes/split1.json --episodes 300 --seed 0
"""
from __future__ import annotations

import argparse

FEATURES = ("res2", "res3", "res4", "res5", "mask_features")
THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--fold", required=True)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--episodes", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-pixels", type=int, default=64)
    p.add_argument("--features", default=",".join(FEATURES), help="comma-separated feature maps")
    p.add_argument("--thresholds", default=",".join(map(str, THRESHOLDS)), help="comma-separated cosine thresholds")
    args = p.parse_args(argv)

    from simformer.data.catalog import get_dataset, get_dataset_dicts
    from simformer.engine.defaults import load_trained_model
    from simformer.fewshot.folds import load_fold
    from simformer.fewshot.methods import PrototypeMethod
    from simformer.fewshot.runner import run_fewshot

    cfg, model, _, name = load_trained_model(args.config, args.weights, dataset=args.dataset)
    fold = load_fold(args.fold, expected_names=get_dataset(name).classes)
    features = args.features.split(",")
    thresholds = [float(t) for t in args.thresholds.split(",")]
    methods = []
    for f in features:
        for t in thresholds:
            m = PrototypeMethod(feature=f, threshold=t)
            m.name = f"{f}@{t}"
            methods.append(m)
    res = run_fewshot(cfg, model, get_dataset_dicts(name), fold, methods=methods, shots=args.shots,
                      episodes=args.episodes, seed=args.seed, min_pixels=args.min_pixels, dataset_name=name)
    print(f"mIoU, {args.episodes} {args.shots}-shot episodes of {fold.name} on {name} (seed {args.seed})")
    print("feature        " + " ".join(f"{t:>6}" for t in thresholds))
    for f in features:
        print(f"{f:<14} " + " ".join(f"{res[f'{f}@{t}']['miou']:6.2f}" for t in thresholds))


if __name__ == "__main__":
    main()
