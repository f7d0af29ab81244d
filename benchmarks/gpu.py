"""GPU figures: ResNet-50 training throughput and peak memory (MaskFormer vs SimFormer, bf16 AMP),
inference images/s, and how the SimFormer step grows with crop size, queries and J.

Everything uses configs/ade20k/simformer_R50.yaml (random init, 150 classes, ADE20K split1) and
synthetic batches (docs/design.md sample dicts). AMP = ``torch.autocast(bfloat16)`` exactly as the
trainer does with SOLVER.AMP.ENABLED. Within each comparison the variants' steps alternate.

* train: MaskFormer vs SimFormer, 512 px, batch 8 (SimFormer: 4 images + 4 references).
* inference: ``model.eval()`` + the model's own inference on 512x683 images (ADE val size after
  the test resize), fp32 as ``simformer eval`` runs it; images/s.
* sweeps (SimFormer step time and peak memory): crop 384/512/640; NUM_OBJECT_QUERIES 50/100/200;
  J = WEAKSHOT.SIMNET.NUM_POINTS 50/100/150.

Without CUDA it prints that no GPU is present and exits 0 with ``RESULT gpu=none`` (``--allow-cpu``
runs the same code on the CPU, meant for checking it with ``--quick``).

    python benchmarks/gpu.py
    python benchmarks/gpu.py --quick --allow-cpu
"""
from __future__ import annotations

import os
import sys
from collections import OrderedDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

DEFAULT_CONFIG = "configs/ade20k/simformer_R50.yaml"


def parse_args(argv=None):
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--batch", type=int, default=None, help="default 8")
    p.add_argument("--size", type=int, default=None, help="training crop for the main comparison (default 512)")
    p.add_argument("--crops", default=None, help="crop sweep (default 384,512,640)")
    p.add_argument("--queries", default=None, help="query sweep (default 50,100,200)")
    p.add_argument("--points", default=None, help="J sweep (default 50,100,150)")
    p.add_argument("--infer-images", type=int, default=None, help="images per inference repetition (default 8)")
    p.add_argument("--no-amp", action="store_true", help="train in fp32")
    p.add_argument("--skip-sweeps", action="store_true")
    p.add_argument("--allow-cpu", action="store_true", help="run on the CPU when there is no GPU (code check)")
    p.add_argument("--opts", nargs="*", default=[], help="extra config overrides KEY VALUE ...")
    return p.parse_args(argv)


def _ints(text):
    return [int(x) for x in text.split(",") if x.strip()]


def timed_steps(variants, *, device, warmup, repeats, amp):
    """variants: name -> (cfg, model, optimizer, scheduler, batch). Interleaved step times and
    per-step peak memory (PeakMemory: max_memory_allocated on CUDA)."""
    mem = C.PeakMemory(device)
    peaks = {n: [] for n in variants}
    fns = OrderedDict()
    for n, (cfg, model, opt, sched, batch) in variants.items():
        fns[n] = (lambda c, m, o, s, b: (lambda: C.train_step(c, m, o, s, b, amp=amp)))(cfg, model, opt, sched, batch)

    def before(n):
        variants[n][2].zero_grad(set_to_none=True)
        mem.start()

    def after(n, _dt):
        mem.stop()
        peaks[n].append(mem.peak if device.type == "cuda" else mem.delta)

    times = C.interleaved(fns, warmup=warmup, repeats=repeats, device=device, before=before, after=after)
    return times, {n: C.median(v) / C.MIB for n, v in peaks.items()}


def build_variant(config, overrides, split, device, batch, size, seed, *, pairs=True, novel_masks=False):
    cfg = C.load_bench_cfg(config, overrides)
    model, opt, sched = C.build_train_model(cfg, split, device)
    data = C.batch_to(C.synthetic_batch(split, batch, size, size, seed=seed, pairs=pairs, novel_masks=novel_masks),
                      device)
    return cfg, model, opt, sched, data


def inference_rate(model, device, n_images: int, height: int, width: int, warmup: int, repeats: int, seed: int):
    import torch

    gen = torch.Generator().manual_seed(seed)
    samples = [{"image": (torch.rand(3, height, width, generator=gen) * 255).to(device), "height": height,
                "width": width} for _ in range(n_images)]
    model.eval()

    def run():
        with torch.no_grad():
            for s in samples:
                out = model([s])[0]["sem_seg"].argmax(0)
                out.to("cpu")  # the evaluator receives the label map on the host

    times = C.interleaved(OrderedDict(infer=run), warmup=warmup, repeats=repeats, device=device)["infer"]
    model.train()
    return n_images / C.median(times), times


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print("gpu.py: no CUDA GPU present (torch.cuda.is_available() is False); nothing to measure. "
              "Run it on a CUDA machine, or add --allow-cpu to exercise the code on the CPU.")
        C.print_result({"gpu": "none"})
        return 0
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = C.setup_torch(args)
    q = args.quick
    batch = C.pick(args.batch, 8, 2, q)
    size = C.pick(args.size, 512, 64, q)
    crops = _ints(C.pick(args.crops, "384,512,640", "64,96", q))
    queries = _ints(C.pick(args.queries, "50,100,200", "8,16", q))
    points = _ints(C.pick(args.points, "50,100,150", "16,32", q))
    warmup = C.pick(args.warmup, 3, 1, q)
    repeats = C.pick(args.repeats, 10, 1, q)
    infer_n = C.pick(args.infer_images, 8, 2, q)
    amp = not args.no_amp and device.type == "cuda"  # the trainer ignores SOLVER.AMP on CPU
    base = [*(["MODEL.MASK_FORMER.DEC_LAYERS", "2"] if q else []), *args.opts]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    gpu_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"gpu: {args.config}, batch {batch}, {size}px, amp {amp}, warmup {warmup}, repeats {repeats}; "
          f"{C.describe_machine(device)}")
    split = C.bench_split(C.load_bench_cfg(args.config, base))
    result = OrderedDict(gpu=gpu_name.replace(" ", "_"))

    # --- MaskFormer vs SimFormer training
    variants = OrderedDict(
        maskformer=build_variant(args.config, [*base, *C.MASKFORMER_OVERRIDES], split, device, batch, size, args.seed,
                                 pairs=False, novel_masks=True),
        simformer=build_variant(args.config, base, split, device, batch, size, args.seed))
    times, peaks = timed_steps(variants, device=device, warmup=warmup, repeats=repeats, amp=amp)
    mem_what = "peak allocated" if device.type == "cuda" else "peak RSS increase"
    for n in variants:
        print(f"train {n:>10}: {C.describe(times[n])}, {batch / C.median(times[n]):.4g} images/s, "
              f"{mem_what} {peaks[n]:.0f} MiB")
        result[f"{n}_img_s"] = batch / C.median(times[n])
        result[f"{n}_mib"] = peaks[n]
    ratios = [s / m for s, m in zip(times["simformer"], times["maskformer"])]
    result["step_ratio"] = C.median(ratios)
    print(f"simformer / maskformer step time: {C.describe(ratios, unit='x')}")

    # --- inference
    model = variants["simformer"][1]
    rate, itimes = inference_rate(model, device, infer_n, 512 if not q else 64, 683 if not q else 85,
                                  warmup=1, repeats=max(1, repeats // 2), seed=args.seed)
    print(f"inference (fp32, 512x683 unless --quick): {rate:.4g} images/s ({C.describe(itimes)} per {infer_n} images)")
    result["infer_img_s"] = rate
    del variants, model
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # --- sweeps (SimFormer)
    if not args.skip_sweeps:
        cfg0, model0, opt0, sched0, _ = build_variant(args.config, base, split, device, 2, 32, args.seed)
        crop_vars = OrderedDict(
            (f"crop{c}", (cfg0, model0, opt0, sched0,
                          C.batch_to(C.synthetic_batch(split, batch, c, c, seed=args.seed, pairs=True,
                                                       novel_masks=False), device)))
            for c in crops)
        sweeps = [("crop", crop_vars)]
        del cfg0
        sweeps.append(("queries", OrderedDict(
            (f"q{n}", build_variant(args.config, [*base, "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", str(n)], split,
                                    device, batch, size, args.seed)) for n in queries)))
        sweeps.append(("J", OrderedDict(
            (f"j{n}", build_variant(args.config, [*base, "WEAKSHOT.SIMNET.NUM_POINTS", str(n)], split, device,
                                    batch, size, args.seed)) for n in points)))
        for title, vs in sweeps:
            t, pk = timed_steps(vs, device=device, warmup=warmup, repeats=max(1, repeats // 2), amp=amp)
            first = C.median(t[next(iter(vs))])
            for n in vs:
                med = C.median(t[n])
                print(f"sweep {title:>7} {n:>8}: {C.describe(t[n])} ({med / first:.3g}x the first), "
                      f"{mem_what} {pk[n]:.0f} MiB")
                result[f"{n}_s"] = med
                result[f"{n}_mib"] = pk[n]
            del vs
            if device.type == "cuda":
                torch.cuda.empty_cache()
    result["batch"] = batch
    C.print_result(result)
    return 0


if __name__ == "__main__":
    C.early_threads()
    sys.exit(main())
