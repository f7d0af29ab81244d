"""Reference-pair statistics at ADE20K scale: vectorised ``pair_statistics`` vs a Python loop.

The presence matrix is synthetic: 20,210 images x 150 classes, class c present in an image
independently with p_c = Train_c / 20210, where Train_c (training images containing class c) is
read from ADE20K's objectInfo150.txt, so per-class image frequencies follow the real profile.
Split: the paper's ADE20K split1 (38 novel classes).

The loop baseline is what the release code does offline: for each image, visit every other
image and intersect Python sets of novel and base classes, then apply the same rule
(simformer.data.reference). It is timed on a subset of anchor images and extrapolated linearly
to all images (its cost is exactly linear in the number of anchors); the vectorised and loop
results are checked to agree on that subset. The two are timed in alternating rounds.

    python benchmarks/pair_statistics.py              # full size (about 1 minute on 2 cores)
    python benchmarks/pair_statistics.py --quick

Last line: ``RESULT vectorised_s=... loop_s_extrapolated=... speedup=... agree=1 ...``.
"""
from __future__ import annotations

import os
import sys
import time
from collections import OrderedDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

ADE_TRAIN_IMAGES = 20210
OBJECT_INFO_CANDIDATES = (
    os.path.join(C.REPO, "tests", "fixtures", "ade20k", "objectInfo150.txt"),
    os.path.join(C.REPO, "tests", "fixtures", "ade20k", "ADEChallengeData2016", "objectInfo150.txt"),
    "/work/shared/fixtures/ade20k_sceneparsing_sample/ADEChallengeData2016/objectInfo150.txt",
)


def parse_args(argv=None):
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=None, help=f"rows of the presence matrix (default {ADE_TRAIN_IMAGES})")
    p.add_argument("--loop-anchors", type=int, default=None, help="anchor images timed with the Python loop (default 200)")
    p.add_argument("--object-info", default=None, help="ADE20K objectInfo150.txt (default: the test fixture)")
    p.add_argument("--target-s", type=float, default=5.0, help="target for the vectorised time")
    return p.parse_args(argv)


def read_train_counts(path=None):
    """int64 [150]: ``Train`` column of objectInfo150.txt (Idx Ratio Train Val Name, tab separated)."""
    import numpy as np

    candidates = [path] if path else [p for p in OBJECT_INFO_CANDIDATES if os.path.isfile(p)]
    if not candidates or not os.path.isfile(candidates[0]):
        raise SystemExit(f"objectInfo150.txt not found (tried {path or OBJECT_INFO_CANDIDATES}); pass --object-info")
    path = candidates[0]
    counts = {}
    with open(path) as f:
        header = f.readline().split("\t")
        if [h.strip() for h in header[:4]] != ["Idx", "Ratio", "Train", "Val"]:
            raise SystemExit(f"{path}: expected the header 'Idx Ratio Train Val Name', got {header}")
        for line in f:
            if line.strip():
                cols = line.split("\t")
                counts[int(cols[0])] = int(cols[2])
    if sorted(counts) != list(range(1, 151)):
        raise SystemExit(f"{path}: expected class indices 1..150, got {len(counts)} rows")
    return np.array([counts[i] for i in range(1, 151)], dtype=np.int64), path


def synthetic_presence(train_counts, n_images: int, seed: int):
    """bool [n_images, K]: independent Bernoulli(Train_c / 20210) per image and class."""
    import numpy as np

    p = np.clip(train_counts / ADE_TRAIN_IMAGES, 0.0, 1.0)
    rng = np.random.default_rng(seed)
    return rng.random((n_images, len(p))) < p[None, :]


def loop_statistics(presence, novel_mask, anchors):
    """The rule of simformer.data.reference evaluated with Python sets, one anchor at a time.

    Returns (level int8 [A], candidates int64 [A], deconf_counts int32 [A, Kn]) for ``anchors``.
    """
    import numpy as np

    novel_ids = np.flatnonzero(novel_mask).tolist()
    col = {c: k for k, c in enumerate(novel_ids)}
    novel_set = set(novel_ids)
    rows = [np.flatnonzero(r).tolist() for r in presence]
    novel_sets = [frozenset(c for c in r if c in novel_set) for r in rows]
    base_sets = [frozenset(c for c in r if c not in novel_set) for r in rows]
    n = len(rows)
    levels, cands, deconfs = [], [], []
    for i in anchors:
        ni, bi = novel_sets[i], base_sets[i]
        deconf = [0] * len(novel_ids)
        n_novel = n_base = 0
        for j in range(n):
            if j == i:
                continue
            shared = ni & novel_sets[j]
            if shared:
                n_novel += 1
                if len(shared) == 1:
                    deconf[col[next(iter(shared))]] += 1
            if bi & base_sets[j]:
                n_base += 1
        if len(ni) >= 2 and sum(deconf) > 0:
            level, cand = 0, sum(deconf)
        elif n_novel > 0:
            level, cand = 1, n_novel
        elif n_base > 0:
            level, cand = 2, n_base
        else:
            level, cand = 3, 1
        levels.append(level)
        cands.append(cand)
        deconfs.append(deconf)
    return (np.array(levels, dtype=np.int8), np.array(cands, dtype=np.int64),
            np.array(deconfs, dtype=np.int32).reshape(len(levels), len(novel_ids)))


def main(argv=None) -> int:
    args = parse_args(argv)
    device = C.setup_torch(args)  # torch threads; numpy's BLAS threads were set by early_threads
    import numpy as np

    from simformer.data.reference import pair_statistics
    from simformer.data.class_split_gen import paper_split

    n_images = C.pick(args.images, ADE_TRAIN_IMAGES, 2000, args.quick)
    n_anchors = min(n_images, C.pick(args.loop_anchors, 200, 20, args.quick))
    warmup = C.pick(args.warmup, 0, 0, args.quick)
    repeats = C.pick(args.repeats, 3, 1, args.quick)
    counts, info_path = read_train_counts(args.object_info)
    presence = synthetic_presence(counts, n_images, args.seed)
    split = paper_split("ade20k/split1")
    novel_mask = split.novel_mask()
    anchors = np.random.default_rng(args.seed + 1).choice(n_images, size=n_anchors, replace=False)
    anchors.sort()
    print(f"pair_statistics: {n_images} images x {presence.shape[1]} classes (frequencies from {info_path}), "
          f"split ade20k/split1 ({int(novel_mask.sum())} novel), mean {presence.sum(1).mean():.2f} classes/image; "
          f"loop on {n_anchors} anchors; {C.describe_machine(device)}")

    results = {}
    cpu_times = []  # process CPU seconds of the vectorised runs (less sensitive to a busy machine)

    def vectorised():
        c0 = time.process_time()
        results["vec"] = pair_statistics(presence, novel_mask)
        cpu_times.append(time.process_time() - c0)

    def loop():
        results["loop"] = loop_statistics(presence, novel_mask, anchors)

    times = C.interleaved(OrderedDict(vectorised=vectorised, loop=loop), warmup=warmup, repeats=repeats,
                          device="cpu")  # numpy only: no device synchronisation

    vec, (lvl, cand, dec) = results["vec"], results["loop"]
    agree = (np.array_equal(vec.level[anchors], lvl) and np.array_equal(vec.candidates[anchors], cand)
             and np.array_equal(vec.deconf_counts[anchors], dec))
    vec_s = C.median(times["vectorised"])
    loop_subset_s = C.median(times["loop"])
    loop_full_s = loop_subset_s * n_images / n_anchors
    print(f"vectorised pair_statistics, all {n_images} images: {C.describe(times['vectorised'])}"
          f" (target <= {args.target_s:g} s: {'met' if vec_s <= args.target_s else 'NOT met'}); "
          f"process CPU time {C.describe(cpu_times[warmup:])} (all threads)")
    print(f"python loop, {n_anchors} anchors: {C.describe(times['loop'])}; extrapolated linearly to "
          f"{n_images} anchors: {loop_full_s:.4g} s")
    print(f"speedup {loop_full_s / vec_s:.4g}x; vectorised == loop on the {n_anchors} anchors: {agree}")
    print("rule levels (share of images): " + ", ".join(f"{k}={v:.3f}" for k, v in vec.summary().items()
                                                      if k.startswith("share_")))
    C.print_result(OrderedDict(vectorised_s=vec_s, loop_s_extrapolated=loop_full_s, speedup=loop_full_s / vec_s,
                               agree=bool(agree), images=n_images, loop_anchors=n_anchors,
                               loop_subset_s=loop_subset_s, target_met=bool(vec_s <= args.target_s),
                               vectorised_cpu_s=C.median(cpu_times[warmup:])))
    return 0 if agree else 1


if __name__ == "__main__":
    C.early_threads()
    sys.exit(main())
