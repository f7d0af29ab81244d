"""Operators dispatched per training step: MaskFormer's decoder vs the CMT decoder and its ablations.

On a GPU at batch 8 the SimFormer step is bound by launches and host work, not arithmetic
(docs/benchmarks.md, section 6): a step then costs roughly what its count of dispatched operators
costs, whatever the device. This script counts them exactly (``TorchDispatchMode``: every ATen
operator the step calls, views included) for the variants of ``cmt_step_time.py``, on the same
synthetic batch and the same configs, split into forward (model + losses, matcher included),
backward, and the optimizer step (gradient clipping + AdamW + scheduler). The counts are
deterministic and need no GPU; they depend on the batch (per-image loops) and the config, not on
the image size.

The optimizer's count is reported but left out of the ratio: on CPU AdamW runs one loop per
parameter, on CUDA torch's default multi-tensor (foreach) kernels, so its count is device-specific.

    python benchmarks/dispatch_count.py --threads 1 \\
        --config configs/ade20k/simformer_cmt_R50.yaml --batch 8 --size 64 \\
        --variants cmt_off,cmt_cluster,cmt_pixel,cmt_noloc,cmt_nocontrast

Last line: ``RESULT maskformer_ops=... cmt_ops=... ratio=... [<variant>_ratio=...]`` (ops = forward +
backward; ratio = over maskformer's).
"""
from __future__ import annotations

import os
import sys
from collections import Counter, OrderedDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
from cmt_step_time import DEFAULT_CONFIG, VARIANTS, prepare  # noqa: E402

PHASES = ("forward", "backward", "optimizer")


def op_counter():
    """A ``TorchDispatchMode`` whose ``counts`` Counter holds every ATen operator called under it."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class OpCounter(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.counts = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.counts[str(func.overloadpacket)] += 1
            return func(*args, **(kwargs or {}))

    return OpCounter()


def count_step(cfg, model, optimizer, scheduler, batch) -> "OrderedDict[str, Counter]":
    """Operators of one training step as ``_common.train_step`` runs it, phase by phase."""
    import torch

    out = OrderedDict()
    optimizer.zero_grad(set_to_none=True)
    with op_counter() as c:
        total = sum(model(batch).values())
    out["forward"] = c.counts
    with op_counter() as c:
        total.backward()
    out["backward"] = c.counts
    clip = cfg.SOLVER.CLIP_GRADIENTS
    with op_counter() as c:
        if clip.ENABLED and clip.CLIP_VALUE > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip.CLIP_VALUE, norm_type=clip.NORM_TYPE)
        optimizer.step()
        scheduler.step()
    out["optimizer"] = c.counts
    return out


def parse_args(argv=None):
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--batch", type=int, default=None, help="images per step (default: SOLVER.IMS_PER_BATCH)")
    p.add_argument("--size", type=int, default=None, help="square input size (default 64: the counts do not depend on it)")
    p.add_argument("--variants", default="", help=f"extra comma-separated variants: {', '.join(list(VARIANTS)[2:])}")
    p.add_argument("--opts", nargs="*", default=[], help="extra config overrides KEY VALUE ... (all variants)")
    p.add_argument("--top", type=int, default=8, help="operators listed per variant: the largest increases over maskformer")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup = prepare(args, default_size=64)
    names, batch, size, cfgs = setup.names, setup.batch, setup.size, setup.cfgs
    print(f"dispatch_count: {args.config}{' ' + ' '.join(args.opts) if args.opts else ''}, batch {batch}, "
          f"{size}x{size}; ATen operators per training step "
          f"(second step; the first one warms up)")
    counts = OrderedDict()
    for n, cfg in cfgs.items():
        model, opt, sched = C.build_train_model(cfg, setup.split, setup.device)
        C.train_step(cfg, model, opt, sched, setup.data)  # lazy state (optimizer moments) out of the count
        counts[n] = count_step(cfg, model, opt, sched, setup.data)
    base = counts["maskformer"]["forward"] + counts["maskformer"]["backward"]
    result = OrderedDict()
    for n in names:
        per = {ph: sum(counts[n][ph].values()) for ph in PHASES}
        ops = per["forward"] + per["backward"]
        line = (f"{n:>15}: forward {per['forward']}, backward {per['backward']}, optimizer {per['optimizer']}; "
                f"forward + backward {ops}")
        if n != "maskformer":
            line += f" = {ops / sum(base.values()):.3f}x maskformer"
            more = (counts[n]["forward"] + counts[n]["backward"]) - base
            line += "\n" + " " * 17 + "most added: " + ", ".join(f"{k} +{v}" for k, v in more.most_common(args.top))
        print(line)
        result[f"{n}_ops"] = ops
        if n != "maskformer":
            result["ratio" if n == "cmt" else f"{n}_ratio"] = ops / sum(base.values())
    result["batch"] = batch
    C.print_result(result)
    return 0


if __name__ == "__main__":
    C.early_threads()
    sys.exit(main())
