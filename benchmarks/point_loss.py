"""Peak training memory and step time: full-resolution mask losses vs point-sampled losses.

Two SimFormer models from configs/ade20k/simformer_R50.yaml (ResNet-50, random init): one with
the paper's full-resolution focal/dice/complementary losses, one with
``MODEL.MASK_FORMER.POINT_LOSS True`` (``TRAIN_NUM_POINTS`` 12544 importance-sampled points per
mask). Both train on the same synthetic batch (pairs, 150 classes) at each crop size; steps
alternate between the two.

Memory: on CUDA ``torch.cuda.max_memory_allocated`` (reported: the absolute peak, and the increase
over the memory held before the step). On CPU the kernel's resident-set high-water mark: VmHWM is
reset through ``/proc/self/clear_refs`` before each step (after ``malloc_trim`` and dropping the
model's old gradients) and the increase over VmRSS at that point is reported: activations,
gradients and temporaries of one step (weights and optimizer state excluded). CPU defaults use
batch 2 to stay feasible.

    python benchmarks/point_loss.py                         # 512 and 640 px, batch 2 (CPU) / 8 (CUDA)
    python benchmarks/point_loss.py --sizes 512 --batch 4
    python benchmarks/point_loss.py --quick

Last line: ``RESULT full512_s=... point512_s=... full512_mib=... point512_mib=... ...``.
"""
from __future__ import annotations

import os
import sys
from collections import OrderedDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

DEFAULT_CONFIG = "configs/ade20k/simformer_R50.yaml"
VARIANTS = OrderedDict(full=["MODEL.MASK_FORMER.POINT_LOSS", "False"],
                       point=["MODEL.MASK_FORMER.POINT_LOSS", "True"])


def parse_args(argv=None):
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--sizes", default=None, help="comma-separated square crop sizes (default 512,640)")
    p.add_argument("--batch", type=int, default=None, help="images per step (default 2 on CPU, 8 on CUDA)")
    p.add_argument("--points", type=int, default=12544, help="MODEL.MASK_FORMER.TRAIN_NUM_POINTS")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    p.add_argument("--opts", nargs="*", default=[], help="extra config overrides KEY VALUE ...")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = C.setup_torch(args)
    sizes = [int(s) for s in (args.sizes or ("64,96" if args.quick else "512,640")).split(",")]
    batch = C.pick(args.batch, 8 if device.type == "cuda" else 2, 2, args.quick)
    warmup = C.pick(args.warmup, 1, 1, args.quick)
    repeats = C.pick(args.repeats, 3, 1, args.quick)
    quick_opts = ["MODEL.MASK_FORMER.DEC_LAYERS", "2"] if args.quick else []
    common = ["SOLVER.IMS_PER_BATCH", str(batch), "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", str(args.points),
              *quick_opts, *args.opts]
    cfgs = OrderedDict((v, C.load_bench_cfg(args.config, [*common, *ov])) for v, ov in VARIANTS.items())
    split = C.bench_split(cfgs["full"])
    models = OrderedDict((v, C.build_train_model(cfg, split, device)) for v, cfg in cfgs.items())
    mem = C.PeakMemory(device)
    print(f"point_loss: {args.config}, batch {batch}, sizes {sizes}, {args.points} points, warmup {warmup}, "
          f"repeats {repeats}; {C.describe_machine(device)}\nmemory = {mem.method}")

    result = OrderedDict()
    for size in sizes:
        batch_data = C.batch_to(C.synthetic_batch(split, batch, size, size, seed=args.seed, pairs=True,
                                                  novel_masks=False), device)
        fns = OrderedDict()
        for v in VARIANTS:
            model, opt, sched = models[v]
            fns[v] = (lambda cfg, m, o, s: (lambda: C.train_step(cfg, m, o, s, batch_data, amp=args.amp)))(
                cfgs[v], model, opt, sched)
        deltas = {v: [] for v in VARIANTS}
        peaks = {v: [] for v in VARIANTS}

        def before(v):
            models[v][1].zero_grad(set_to_none=True)  # the step's own gradients count, old ones do not
            mem.start()

        def after(v, _dt):
            mem.stop()
            deltas[v].append(mem.delta)
            peaks[v].append(mem.peak)

        times = C.interleaved(fns, warmup=warmup, repeats=repeats, device=device, before=before, after=after)
        for v in VARIANTS:
            extra = f", absolute peak {C.median(peaks[v]) / C.MIB:.1f} MiB" if device.type == "cuda" else ""
            print(f"{size}px {v:>5}: step {C.describe(times[v])}; memory increase "
                  f"{C.median(deltas[v]) / C.MIB:.1f} MiB{extra}")
            result[f"{v}{size}_s"] = C.median(times[v])
            result[f"{v}{size}_mib"] = C.median(deltas[v]) / C.MIB
            if device.type == "cuda":
                result[f"{v}{size}_peak_mib"] = C.median(peaks[v]) / C.MIB
        ratios = [f / p for f, p in zip(times["full"], times["point"])]
        result[f"time_ratio{size}"] = C.median(ratios)
        result[f"mem_ratio{size}"] = result[f"full{size}_mib"] / max(result[f"point{size}_mib"], 1e-9)
        print(f"{size}px full/point: time {C.describe(ratios, unit='x')}, memory "
              f"{result[f'mem_ratio{size}']:.3g}x")
        del batch_data, fns
    result["batch"] = batch
    C.print_result(result)
    return 0


if __name__ == "__main__":
    C.early_threads()
    sys.exit(main())
