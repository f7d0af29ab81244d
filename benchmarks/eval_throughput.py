"""Evaluation throughput: confusion-matrix accumulation (``SemSegEvaluator.process``).

Synthetic ADE20K-sized validation set: 2000 images of 512x683, 150 classes, random predictions
(uint8, as ``inference_on_dataset`` hands them to the evaluator) and Voronoi ground truth with a void strip (int64,
as the test mapper's ``sem_seg_full``). A small pool of arrays is generated once and cycled, so
memory stays small; the evaluator does not cache anything per image, so reuse does not flatter it.
One repetition = the whole set through ``process`` plus the final ``evaluate()``.

    python benchmarks/eval_throughput.py
    python benchmarks/eval_throughput.py --quick

Last line: ``RESULT mpix_per_s=... val_set_s=...``.
"""
from __future__ import annotations

import os
import sys
from collections import OrderedDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402


def parse_args(argv=None):
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=None, help="validation images (default 2000)")
    p.add_argument("--height", type=int, default=None, help="default 512")
    p.add_argument("--width", type=int, default=None, help="default 683")
    p.add_argument("--classes", type=int, default=150)
    p.add_argument("--pool", type=int, default=4, help="distinct (prediction, GT) pairs cycled over")
    return p.parse_args(argv)


def make_pool(n: int, height: int, width: int, num_classes: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(n):
        classes = rng.choice(num_classes, size=8, replace=False).tolist()
        gt = C.synthetic_labels(rng, num_classes, height, width, classes, void_frac=0.08).astype(np.int64)
        pred = rng.integers(0, num_classes, size=(height, width), dtype=np.uint8)
        pool.append((pred, gt))
    return pool


def main(argv=None) -> int:
    args = parse_args(argv)
    device = C.setup_torch(args)
    from simformer.evaluation.sem_seg import SemSegEvaluator, confusion_matrix

    n_images = C.pick(args.images, 2000, 50, args.quick)
    height = C.pick(args.height, 512, 128, args.quick)
    width = C.pick(args.width, 683, 171, args.quick)
    warmup = C.pick(args.warmup, 1, 0, args.quick)
    repeats = C.pick(args.repeats, 3, 1, args.quick)
    names = [f"class_{i}" for i in range(args.classes)]
    pool = make_pool(max(1, args.pool), height, width, args.classes, args.seed)
    print(f"eval_throughput: {n_images} images of {height}x{width}, {args.classes} classes, pool {len(pool)}; "
          f"{C.describe_machine(device)}")

    evaluator = SemSegEvaluator(class_names=names)
    state = {}

    def val_pass():
        evaluator.reset()
        for i in range(n_images):
            pred, gt = pool[i % len(pool)]
            evaluator.process(pred, gt, name=f"img_{i}")
        state["metrics"] = evaluator.evaluate()

    times = C.interleaved(OrderedDict(val=val_pass), warmup=warmup, repeats=repeats, device="cpu")["val"]
    # independent check of the accumulated matrix: the per-image matrices of the pool, multiplied
    expected = sum(confusion_matrix(p, g, args.classes) * sum(1 for i in range(n_images) if i % len(pool) == k)
                   for k, (p, g) in enumerate(pool))
    correct = bool((evaluator.confusion == expected).all())
    n_pix = evaluator.confusion[: args.classes].sum() + evaluator.confusion[args.classes].sum()
    if n_pix != n_images * height * width:
        correct = False
    val_s = C.median(times)
    mpix = n_images * height * width / 1e6
    print(f"whole set: {C.describe(times)}; {mpix / val_s:.4g} Mpixel/s, {1e3 * val_s / n_images:.4g} ms/image; "
          f"matrix check {'ok' if correct else 'FAILED'}; mIoU of random predictions {state['metrics']['miou']:.3f}")
    C.print_result(OrderedDict(mpix_per_s=mpix / val_s, val_set_s=val_s, ms_per_image=1e3 * val_s / n_images,
                               images=n_images, height=height, width=width, correct=correct))
    return 0 if correct else 1


if __name__ == "__main__":
    C.early_threads()
    sys.exit(main())
