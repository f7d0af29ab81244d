"""Training-step time and peak memory of SimFormer with the CMT decoder vs the MaskFormer decoder.

Both models come from one config (default: the ToyScenes CMT config): "maskformer" = the config
with ``MODEL.MASK_FORMER.DECODER maskformer``, "cmt" = with ``DECODER cmt`` (and the config's
``MODEL.MASK_FORMER.CMT.*`` keys). Same backbone, same synthetic batch (image/reference
pairs when the config pairs), the real optimizer and gradient clipping (``_common.train_step``).
Repetitions alternate between the models so machine noise hits all of them. ``--variants`` adds
CMT ablations measured in the same rounds (each against "maskformer"):

* ``cmt_off``: every CMT term off (only the decoder reading the stride-``PIXEL_STRIDE`` features);
* ``cmt_cluster``: + clustering update (Eq. 7); ``cmt_pixel``: + pixel update (Eq. 8);
* ``cmt_noloc``: everything but location; ``cmt_nocontrast``: everything but the contrastive loss.

Memory: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the increase of the resident-set
high-water mark over one step (``_common.PeakMemory``; the step's gradients count, old ones are
dropped first).

    python benchmarks/cmt_step_time.py --threads 1                    # ToyScenes config, batch 8, 128 px
    python benchmarks/cmt_step_time.py --variants cmt_off,cmt_noloc   # + ablations
    python benchmarks/cmt_step_time.py --config configs/ade20k/simformer_R50.yaml --batch 2 --size 512

Last line: ``RESULT maskformer_s=... cmt_s=... ratio=... maskformer_mib=... cmt_mib=... mem_ratio=...``
(ratio = median over rounds of cmt/maskformer measured in the same round; target <= 1.15).
"""
from __future__ import annotations

import os
import sys
from collections import OrderedDict
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

DEFAULT_CONFIG = "configs/toyscenes/simformer_cmt.yaml"
_CMT = "MODEL.MASK_FORMER.CMT."
_ALL_OFF = [_CMT + "CLUSTER_UPDATE", "False", _CMT + "PIXEL_UPDATE", "False", _CMT + "LOCATION", "False",
            _CMT + "CONTRAST", "False"]
VARIANTS = OrderedDict(
    maskformer=["MODEL.MASK_FORMER.DECODER", "maskformer"],
    cmt=["MODEL.MASK_FORMER.DECODER", "cmt"],
    cmt_off=["MODEL.MASK_FORMER.DECODER", "cmt", *_ALL_OFF],
    cmt_cluster=["MODEL.MASK_FORMER.DECODER", "cmt", *_ALL_OFF, _CMT + "CLUSTER_UPDATE", "True"],
    cmt_pixel=["MODEL.MASK_FORMER.DECODER", "cmt", *_ALL_OFF, _CMT + "CLUSTER_UPDATE", "True",
               _CMT + "PIXEL_UPDATE", "True"],
    cmt_noloc=["MODEL.MASK_FORMER.DECODER", "cmt", _CMT + "LOCATION", "False"],
    cmt_nocontrast=["MODEL.MASK_FORMER.DECODER", "cmt", _CMT + "CONTRAST", "False"],
)


def parse_args(argv=None):
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--batch", type=int, default=None, help="images per step (default: SOLVER.IMS_PER_BATCH)")
    p.add_argument("--size", type=int, default=None, help="square input size (default: INPUT.CROP.SIZE)")
    p.add_argument("--variants", default="", help=f"extra comma-separated variants: {', '.join(list(VARIANTS)[2:])}")
    p.add_argument("--amp", action="store_true", help="bf16 autocast as SOLVER.AMP.ENABLED (CUDA)")
    p.add_argument("--opts", nargs="*", default=[], help="extra config overrides KEY VALUE ... (all variants)")
    return p.parse_args(argv)


def prepare(args, default_size: int = 0) -> SimpleNamespace:
    """What this script and dispatch_count.py share: the variants to build ("maskformer", "cmt" and
    ``--variants``), the device, batch and size, each variant's config, the class split and one
    synthetic batch (image/reference pairs when the config pairs). ``default_size`` 0 = the
    config's crop size."""
    extra = [v for v in args.variants.split(",") if v]
    unknown = [v for v in extra if v not in VARIANTS or v in ("maskformer", "cmt")]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; choose from {', '.join(list(VARIANTS)[2:])}")
    names = ["maskformer", "cmt", *extra]
    device = C.setup_torch(args)
    probe = C.load_bench_cfg(args.config)
    batch = C.pick(args.batch, int(probe.SOLVER.IMS_PER_BATCH), 2, args.quick)
    size = C.pick(args.size, default_size or int(probe.INPUT.CROP.SIZE[0]), 64, args.quick)
    pairs = probe.WEAKSHOT.PAIR_MODE != "none"
    if batch < 1 or (pairs and batch % 2):
        raise SystemExit(f"--batch must be positive (and even when the config pairs images), got {batch}")
    common = ["SOLVER.IMS_PER_BATCH", str(batch), "INPUT.CROP.SIZE", f"[{size}, {size}]",
              "INPUT.SIZE_DIVISIBILITY", str(size), *args.opts]
    if args.quick:
        common += ["MODEL.MASK_FORMER.DEC_LAYERS", "2", _CMT + "CONTRAST_SAMPLES", "64"]
    cfgs = OrderedDict((n, C.load_bench_cfg(args.config, [*common, *VARIANTS[n]])) for n in names)
    split = C.bench_split(cfgs["maskformer"])
    data = C.batch_to(C.synthetic_batch(split, batch, size, size, seed=args.seed, pairs=pairs,
                                        novel_masks=bool(probe.WEAKSHOT.NOVEL_MASKS)), device)
    return SimpleNamespace(names=names, device=device, batch=batch, size=size, cfgs=cfgs, split=split, data=data)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup = prepare(args)
    names, device, batch, size, cfgs, data = setup.names, setup.device, setup.batch, setup.size, setup.cfgs, setup.data
    warmup = C.pick(args.warmup, 2, 0, args.quick)
    repeats = C.pick(args.repeats, 8, 1, args.quick)
    models = OrderedDict((n, C.build_train_model(cfg, setup.split, device)) for n, cfg in cfgs.items())
    mem = C.PeakMemory(device)
    cmt = cfgs["cmt"].MODEL.MASK_FORMER.CMT
    print(f"cmt_step_time: {args.config}, batch {batch}, {size}x{size}, warmup {warmup}, repeats {repeats}, "
          f"amp {args.amp}; CMT PIXEL_STRIDE {cmt.PIXEL_STRIDE}, CONTRAST_SAMPLES {cmt.CONTRAST_SAMPLES}; "
          f"{C.describe_machine(device)}\nmemory = {mem.method}")

    fns = OrderedDict()
    for n in names:
        model, opt, sched = models[n]
        fns[n] = (lambda cfg, m, o, s: (lambda: C.train_step(cfg, m, o, s, data, amp=args.amp)))(cfgs[n], model, opt, sched)
    deltas = {n: [] for n in names}

    def before(n):
        models[n][1].zero_grad(set_to_none=True)
        mem.start()

    def after(n, _dt):
        mem.stop()
        deltas[n].append(mem.delta)

    times = C.interleaved(fns, warmup=warmup, repeats=repeats, device=device, before=before, after=after)
    result = OrderedDict()
    base_mib = C.median(deltas["maskformer"]) / C.MIB
    for n in names:
        ratios = [t / m for t, m in zip(times[n], times["maskformer"])]
        mib = C.median(deltas[n]) / C.MIB
        print(f"{n:>15}: step {C.describe(times[n])}, {batch / C.median(times[n]):.4g} images/s; memory "
              f"{mib:.1f} MiB" + ("" if n == "maskformer" else f"; / maskformer per round {C.describe(ratios, unit='x')}"))
        result[f"{n}_s"] = C.median(times[n])
        result[f"{n}_mib"] = mib
        if n != "maskformer":
            key = "" if n == "cmt" else f"{n}_"
            result[f"{key}ratio"] = C.median(ratios)
            result[f"{key}mem_ratio"] = mib / max(base_mib, 1e-9)
    result["batch"], result["size"] = batch, size
    C.print_result(result)
    return 0


if __name__ == "__main__":
    C.early_threads()
    sys.exit(main())
