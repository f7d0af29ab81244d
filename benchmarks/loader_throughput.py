"""Training data-loader throughput (images/s) vs the model's consumption rate.

The real loader (``build_train_loader`` + the real mapper, image pairs on: presence matrix, pair
statistics and ``ReferenceSampler`` exactly as the trainer builds them) with N worker processes,
in two settings:

* ``toy``: ToyScenes at 128 px with configs/toyscenes/simformer.yaml (the dataset under
  $SIMFORMER_DATASETS/toyscenes when present, else a generated one in a temporary folder).
  Consumption rate = images/s of a SimFormer training step measured here (step_time.py's code,
  same batch and crop).
* ``ade``: an ADE20K-like synthetic dataset (640x480 JPEG images, 150-class PNG labels) written to
  a temporary folder and registered with ``register_folder``, loaded with
  configs/ade20k/simformer_R50.yaml (512 px crops, short side 256..1024, colour jitter, flip).
  Consumption rate: measured on CUDA (R50, 512 px, batch 8, SimFormer); on CPU it is the
  parameter ``--target-step-s`` (seconds per batch of 8 on one H100; 0.25 s is an estimate).
  The issue's target is a loader rate >= 2x that step rate; the script extrapolates the rate of
  one worker linearly to the number of workers needed and compares it with the cores present.

Each worker count is measured in its own block (a fresh loader, warmup batches dropped, so the
worker start-up and the prefetch queue are not counted); rounds alternate the order of the
blocks. Rates count every image the model receives (training images + references).

    python benchmarks/loader_throughput.py --workers 0,1,2
    python benchmarks/loader_throughput.py --quick

Last line: ``RESULT toy_w0_img_s=... toy_step_img_s=... toy_ratio=... ade_w0_img_s=... ade_ratio=...``.
"""
from __future__ import annotations

import math
import os
import shutil
import time
import sys
import tempfile
from collections import OrderedDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

TOY_CONFIG = "configs/toyscenes/simformer.yaml"
ADE_CONFIG = "configs/ade20k/simformer_R50.yaml"


def parse_args(argv=None):
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--workers", default=None, help="comma-separated worker counts (default 0,1,2)")
    p.add_argument("--batches", type=int, default=None, help="timed batches per block (default 12)")
    p.add_argument("--settings", default="toy,ade", help="which settings to run: toy, ade or both")
    p.add_argument("--toy-images", type=int, default=None, help="generated ToyScenes train images (default 256)")
    p.add_argument("--ade-images", type=int, default=None, help="synthetic ADE-like images (default 96)")
    p.add_argument("--toy-batch", type=int, default=None, help="default: the config's SOLVER.IMS_PER_BATCH")
    p.add_argument("--ade-batch", type=int, default=8)
    p.add_argument("--toy-step-s", type=float, default=None,
                   help="skip measuring the ToyScenes step; use this many seconds per batch")
    p.add_argument("--target-step-s", type=float, default=0.25,
                   help="ADE setting: seconds per R50 512 px training step of --ade-batch images on the target "
                        "GPU (estimate for one H100); ignored when the step is measured on CUDA")
    p.add_argument("--measure-ade-step", action="store_true",
                   help="measure the R50 512 px step on this device even on CPU (slow)")
    p.add_argument("--keep", default=None, help="write the synthetic datasets here and keep them")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------ datasets
def ensure_toyscenes(root_parent: str, n_images: int, quick: bool) -> str:
    """Name of a registered ToyScenes training set: the installed one, else a generated copy."""
    from simformer.data.catalog import register_folder
    from simformer.data.datasets.toyscenes import generate_toyscenes

    if not quick and C.dataset_available("toyscenes_train"):
        return "toyscenes_train"
    root = os.path.join(root_parent, "toyscenes")
    generate_toyscenes(root, num_train=n_images, num_val=1, size=128, workers=0, progress=False,
                       log=lambda msg: None)
    register_folder("bench_toyscenes_train", root, "train", family="toyscenes")
    return "bench_toyscenes_train"


def write_ade_like(root: str, n_images: int, seed: int) -> str:
    """640x480 JPEG images + uint8 PNG labels (150 ADE20K classes, void 255) in the catalog layout."""
    import numpy as np
    from PIL import Image

    from simformer.data.catalog import class_names, register_folder
    from simformer.utils.io import atomic_path, atomic_write_json, save_label_png

    names = class_names("ade20k")
    img_dir = os.path.join(root, "images", "training")
    lbl_dir = os.path.join(root, "annotations", "training")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(lbl_dir, exist_ok=True)
    atomic_write_json(os.path.join(root, "classes.json"), names)
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, size=(256, 3)).astype(np.float32)
    h, w = 480, 640
    for i in range(n_images):
        stem = f"ADE_like_{i:05d}"
        n_cls = int(rng.integers(4, 13))  # ADE images hold ~8 classes on average
        classes = rng.choice(len(names), size=n_cls, replace=False).tolist()
        label = C.synthetic_labels(rng, len(names), h, w, classes, void_frac=0.05)
        # smooth, photo-like content (JPEG cost depends on entropy): class colour + low-frequency noise
        low = rng.normal(0, 25, size=(h // 16, w // 16, 3)).repeat(16, 0).repeat(16, 1)
        image = np.clip(palette[label] + low + rng.normal(0, 6, size=(h, w, 3)), 0, 255).astype(np.uint8)
        with atomic_path(os.path.join(img_dir, stem + ".jpg"), ".jpg") as tmp:
            Image.fromarray(image).save(tmp, format="JPEG", quality=90)
        save_label_png(os.path.join(lbl_dir, stem + ".png"), label)
    register_folder("bench_ade_like_train", root, "training", family="ade20k")
    return "bench_ade_like_train"


# ------------------------------------------------------------------------------ measurement
def loader_rates(cfg, split, workers, *, batches: int, rounds: int, images_per_batch: int):
    """images/s per worker count: median over rounds of blocks (fresh loader, warmup dropped)."""
    rates = {w: [] for w in workers}
    for r in range(rounds):
        for w in (workers if r % 2 == 0 else workers[::-1]):
            loader, _ = C.real_train_loader(cfg, split, num_workers=w)
            for _ in range(max(1, 2 * w)):  # start-up and the first prefetch wave are not timed
                next(loader)
            t0 = time.perf_counter()
            for _ in range(batches):
                batch = next(loader)
            dt = time.perf_counter() - t0
            if len(batch) != images_per_batch:
                raise RuntimeError(f"loader gave {len(batch)} images per batch, expected {images_per_batch}")
            rates[w].append(batches * images_per_batch / dt)
            del loader
    return {w: C.median(v) for w, v in rates.items()}


def step_rate(config, *, batch, size, device, warmup, repeats, opts, amp=False):
    """Median SimFormer step time (s) for the setting, via step_time.measure_steps."""
    import step_time

    times, _ = step_time.measure_steps(config, batch=batch, size=size, device=device, warmup=warmup,
                                       repeats=repeats, opts=opts, names=("simformer",), amp=amp)
    return C.median(times["simformer"])


def report(tag: str, rates: dict, step_s: float, batch: int, source: str, result: dict) -> None:
    step_img_s = batch / step_s
    print(f"[{tag}] model consumption: {step_img_s:.4g} images/s ({step_s:.4g} s per batch of {batch}; {source})")
    for w, r in rates.items():
        print(f"[{tag}]   {w} worker(s): {r:.4g} images/s = {r / step_img_s:.3g}x the step rate")
        result[f"{tag}_w{w}_img_s"] = r
    result[f"{tag}_step_img_s"] = step_img_s
    best = max(rates.values())
    result[f"{tag}_ratio"] = best / step_img_s
    with_workers = {w: r for w, r in rates.items() if w > 0}
    if with_workers:
        per_worker = max(r / w for w, r in with_workers.items())
        need = math.ceil(2 * step_img_s / per_worker)
        cores = os.cpu_count() or 1
        print(f"[{tag}] best per-worker rate {per_worker:.4g} images/s -> {need} worker(s) needed for 2x the step "
              f"rate ({2 * step_img_s:.4g} images/s), assuming linear scaling over free cores "
              f"({'fits' if need < cores else 'does NOT fit'} the {cores} cores here)")
        result[f"{tag}_per_worker_img_s"] = per_worker
        result[f"{tag}_workers_for_2x"] = need


def main(argv=None) -> int:
    args = parse_args(argv)
    device = C.setup_torch(args)
    from simformer.data.class_split import make_split
    from simformer.data.class_split_gen import paper_split

    workers = [int(w) for w in (args.workers or ("0,1" if args.quick else "0,1,2")).split(",")]
    batches = C.pick(args.batches, 12, 2, args.quick)
    rounds = C.pick(args.repeats, 2, 1, args.quick)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    print(f"loader_throughput: workers {workers}, {batches} batches x {rounds} rounds per block; "
          f"{C.describe_machine(device)}")
    tmp = args.keep or tempfile.mkdtemp(prefix="simformer_bench_loader_")
    result = OrderedDict()
    try:
        if "toy" in settings:
            name = ensure_toyscenes(tmp, C.pick(args.toy_images, 256, 16, args.quick), args.quick)
            base = C.load_bench_cfg(TOY_CONFIG)
            batch = C.pick(args.toy_batch, int(base.SOLVER.IMS_PER_BATCH), 4, args.quick)
            opts = ["DATASETS.TRAIN", f"['{name}']", "SOLVER.IMS_PER_BATCH", str(batch)]
            cfg = C.load_bench_cfg(TOY_CONFIG, opts)
            split = C.bench_split(cfg)
            rates = loader_rates(cfg, split, workers, batches=batches, rounds=rounds, images_per_batch=batch)
            if args.toy_step_s:
                step_s, source = args.toy_step_s, "--toy-step-s"
            else:
                step_s = step_rate(TOY_CONFIG, batch=batch, size=int(cfg.INPUT.CROP.SIZE[0]), device=device,
                                   warmup=C.pick(None, 1, 0, args.quick), repeats=C.pick(None, 5, 1, args.quick),
                                   opts=opts)
                source = f"SimFormer step measured on {device.type}"
            report("toy", rates, step_s, batch, source, result)
        if "ade" in settings:
            n = C.pick(args.ade_images, 96, 8, args.quick)
            batch = C.pick(None, args.ade_batch, 4, args.quick)
            name = write_ade_like(os.path.join(tmp, "ade_like"), n, args.seed)
            opts = ["DATASETS.TRAIN", f"['{name}']", "SOLVER.IMS_PER_BATCH", str(batch)]
            cfg = C.load_bench_cfg(ADE_CONFIG, opts)
            ade = paper_split("ade20k/split1")
            split = make_split("ade20k", ade.class_names, ade.novel, {"method": "paper", "key": "ade20k/split1"})
            rates = loader_rates(cfg, split, workers, batches=batches, rounds=rounds, images_per_batch=batch)
            if device.type == "cuda" or args.measure_ade_step:
                amp = device.type == "cuda"  # bf16 autocast as SOLVER.AMP.ENABLED
                step_s = step_rate(ADE_CONFIG, batch=batch, size=512, device=device, warmup=2, repeats=5,
                                   opts=[], amp=amp)
                source = f"R50 SimFormer step measured on {device.type}{' with bf16 AMP' if amp else ''}"
            else:
                step_s = args.target_step_s * batch / args.ade_batch
                source = f"--target-step-s {args.target_step_s:g} per {args.ade_batch} images (assumed H100 rate)"
            report("ade", rates, step_s, batch, source, result)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    C.print_result(result)
    return 0


if __name__ == "__main__":
    C.early_threads()
    sys.exit(main())
