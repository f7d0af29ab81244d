"""Training-step time of MaskFormer vs SimFormer (forward + backward + AdamW step).

Both models come from one config: SimFormer = the config as is, MaskFormer = the same config with
pairs, SimNet, distillation and the complementary loss off and masks for every class. Same
backbone, same batch of synthetic images at the same size (SimFormer reads it as batch/2
image + reference pairs), the real optimizer (``build_optimizer``) and gradient clipping.
Repetitions alternate between the two models so machine noise hits both.

    python benchmarks/step_time.py                       # ToyScenes config, its batch and crop
    python benchmarks/step_time.py --config configs/ade20k/simformer_R50.yaml --batch 8 --size 512
    python benchmarks/step_time.py --breakdown           # time per part, both models

Last line: ``RESULT maskformer_s=... simformer_s=... ratio=...`` (ratio = median over rounds of
simformer/maskformer measured in the same round).
"""
from __future__ import annotations

import os
import sys
import time
from collections import OrderedDict
from contextlib import contextmanager

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

DEFAULT_CONFIG = "configs/toyscenes/simformer.yaml"
NAMES = ("maskformer", "simformer")


def parse_args(argv=None):
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--batch", type=int, default=None, help="images per step (default: SOLVER.IMS_PER_BATCH)")
    p.add_argument("--size", type=int, default=None, help="square input size (default: INPUT.CROP.SIZE)")
    p.add_argument("--iters", type=int, default=None, help="timed steps per model (alias of --repeats)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast as SOLVER.AMP.ENABLED (CUDA)")
    p.add_argument("--breakdown", action="store_true", help="time every part of a step instead")
    p.add_argument("--opts", nargs="*", default=[], help="extra config overrides KEY VALUE ...")
    args = p.parse_args(argv)
    if args.iters is not None:
        args.repeats = args.iters
    return args


def size_overrides(batch: int, size: int):
    """Batch and square crop size (the mapper pads to the crop, as MaskFormer)."""
    return ["SOLVER.IMS_PER_BATCH", str(batch), "INPUT.CROP.SIZE", f"[{size}, {size}]",
            "INPUT.SIZE_DIVISIBILITY", str(size)]


def resolve_sizes(config: str, batch, size, quick: bool):
    cfg = C.load_bench_cfg(config)
    batch = C.pick(batch, int(cfg.SOLVER.IMS_PER_BATCH), 4, quick)
    size = C.pick(size, int(cfg.INPUT.CROP.SIZE[0]), 64, quick)
    if batch < 2 or batch % 2:
        raise SystemExit(f"--batch must be even and >= 2 (SimFormer pairs images), got {batch}")
    return batch, size


def measure_steps(config: str, *, batch: int, size: int, device, warmup: int, repeats: int, seed: int = 0,
                  opts=(), amp: bool = False, names=NAMES):
    """Interleaved step times of the named models; returns (times dict, ModelPair)."""
    pair = C.ModelPair(config, batch=batch, size=size, device=device, seed=seed,
                       overrides=[*size_overrides(batch, size), *opts], amp=amp)
    fns = OrderedDict((n, pair.step_fn(n)) for n in names)
    return C.interleaved(fns, warmup=warmup, repeats=repeats, device=device), pair


# ------------------------------------------------------------------------------ breakdown
class PartTimer:
    """Accumulates synchronised wall time per named part."""

    def __init__(self, device):
        self.device = device
        self.totals = OrderedDict()

    @contextmanager
    def part(self, name: str):
        C.synchronize(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            C.synchronize(self.device)
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - t0

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            with self.part(name):
                return fn(*args, **kwargs)
        return timed


# criterion terms timed inside the criterion call (summed over the final and auxiliary layers):
# (part, name of the term in WeakShotCriterion.get_loss)
CRITERION_PARTS = (("matching", None), ("loss_ce", "labels"), ("loss_mask+dice", "masks"),
                   ("loss_complementary", "complementary"), ("loss_sim", "sim"), ("loss_distill", "distill"))


def instrument(model, timer: PartTimer) -> None:
    """Time the matcher and the loss terms through instance attributes on the live modules."""
    crit = model.criterion
    crit.matcher.forward = timer.wrap("matching", crit.matcher.forward)
    parts = {term: part for part, term in CRITERION_PARTS[1:]}
    get_loss = crit.get_loss

    def timed_get_loss(loss: str, *args, **kwargs):
        if loss not in parts:
            return get_loss(loss, *args, **kwargs)
        with timer.part(parts[loss]):
            return get_loss(loss, *args, **kwargs)
    crit.get_loss = timed_get_loss


def breakdown_step(cfg, model, optimizer, scheduler, batch, timer: PartTimer, amp: bool = False) -> None:
    """One training step split the way ``SimFormer.forward`` + ``Trainer.run_step`` run it."""
    import torch

    optimizer.zero_grad(set_to_none=True)
    with C.amp_context(model.device, amp):
        with timer.part("inputs+targets"):
            images = model.normalize(batch)
        with timer.part("backbone"):
            features = model.backbone(images)
        with timer.part("pixel_decoder"):
            mask_features, transformer_in = model.pixel_decoder(features)
        with timer.part("transformer_decoder"):
            outputs = model.predictor(transformer_in, mask_features)
            outputs["mask_features"] = mask_features
        with timer.part("inputs+targets"):
            targets = model.prepare_targets(batch, images.shape[-2:])
            pairs = model.pair_indices(batch)
        with timer.part("criterion_total"):
            losses = model.criterion(outputs, targets, pairs)
    weights = model.criterion.weight_dict
    total = sum(v * weights[k] for k, v in losses.items() if k in weights)
    with timer.part("backward"):
        total.backward()
    with timer.part("optimizer"):
        clip = cfg.SOLVER.CLIP_GRADIENTS
        if clip.ENABLED and clip.CLIP_VALUE > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip.CLIP_VALUE, norm_type=clip.NORM_TYPE)
        optimizer.step()
        scheduler.step()


def time_data_loading(pair: "C.ModelPair", name: str, batches: int, warmup: int):
    """Seconds per batch of the real loader (0 workers: the cost one process pays per batch)."""
    cfg = pair.cfg[name]
    loader, _ = C.real_train_loader(cfg, pair.split, num_workers=0)
    for _ in range(warmup):
        next(loader)
    times = []
    for _ in range(batches):
        t0 = time.perf_counter()
        next(loader)
        times.append(time.perf_counter() - t0)
    return times


def run_breakdown(args, device, batch, size, warmup, repeats) -> dict:
    pair = C.ModelPair(args.config, batch=batch, size=size, device=device, seed=args.seed,
                       overrides=[*size_overrides(batch, size), *args.opts], amp=args.amp)
    timers = {n: PartTimer(device) for n in NAMES}
    for n in NAMES:
        instrument(pair.models[n][0], timers[n])
    per_round = {n: [] for n in NAMES}

    def step(n):
        model, opt, sched = pair.models[n]
        before = dict(timers[n].totals)
        breakdown_step(pair.cfg[n], model, opt, sched, pair.batches[n], timers[n], amp=args.amp)
        return {k: v - before.get(k, 0.0) for k, v in timers[n].totals.items()}

    for _ in range(warmup):
        for n in NAMES:
            step(n)
    for r in range(repeats):
        for n in (NAMES if r % 2 == 0 else NAMES[::-1]):
            per_round[n].append(step(n))

    data_name = pair.cfg["simformer"].DATASETS.TRAIN[0]
    data_times = {}
    if C.dataset_available(data_name):
        for n in NAMES:
            data_times[n] = time_data_loading(pair, n, batches=max(2, repeats), warmup=1)
    else:
        print(f"data loading: dataset '{data_name}' not found (SIMFORMER_DATASETS), row skipped")

    order = ["data_loading(0 workers)", "inputs+targets", "backbone", "pixel_decoder", "transformer_decoder",
             *[p for p, _ in CRITERION_PARTS], "criterion_other", "backward", "optimizer", "step_total"]
    medians = {n: {} for n in NAMES}
    for n in NAMES:
        rows = per_round[n]
        for part in order:
            if part == "data_loading(0 workers)":
                vals = data_times.get(n)
            elif part == "criterion_other":
                vals = [r.get("criterion_total", 0.0) - sum(r.get(p, 0.0) for p, _ in CRITERION_PARTS) for r in rows]
            elif part == "step_total":
                vals = [sum(v for k, v in r.items() if k not in {p for p, _ in CRITERION_PARTS}) for r in rows]
            else:
                vals = [r.get(part, 0.0) for r in rows]
            medians[n][part] = C.median(vals) if vals else None
    print(f"\nPer-part median time per step (ms), batch {batch}, {size}x{size}, {repeats} interleaved rounds "
          "(criterion parts summed over all decoder layers; step_total excludes data loading):")
    print(f"{'part':<26}{'MaskFormer':>12}{'SimFormer':>12}{'diff':>10}")
    for part in order:
        a, b = medians["maskformer"][part], medians["simformer"][part]
        if a is None or b is None:
            continue
        print(f"{part:<26}{a * 1e3:>12.2f}{b * 1e3:>12.2f}{(b - a) * 1e3:>+10.2f}")
    result = OrderedDict()
    result["mode"] = "breakdown"
    result["maskformer_s"] = medians["maskformer"]["step_total"]
    result["simformer_s"] = medians["simformer"]["step_total"]
    result["ratio"] = result["simformer_s"] / result["maskformer_s"]
    for part in order[:-1]:
        key = part.split("(")[0].replace("+", "_").replace("-", "_")
        for n in NAMES:
            v = medians[n][part]
            if v is not None:
                result[f"{n}_{key}_s"] = v
    return result


# ------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    args = parse_args(argv)
    device = C.setup_torch(args)
    batch, size = resolve_sizes(args.config, args.batch, args.size, args.quick)
    warmup = C.pick(args.warmup, 2, 1, args.quick)
    repeats = C.pick(args.repeats, 10, 2, args.quick)
    print(f"step_time: {args.config}, batch {batch}, {size}x{size}, warmup {warmup}, repeats {repeats}, "
          f"amp {args.amp}; {C.describe_machine(device)}")
    if args.breakdown:
        C.print_result(run_breakdown(args, device, batch, size, warmup, repeats))
        return 0
    times, _ = measure_steps(args.config, batch=batch, size=size, device=device, warmup=warmup,
                             repeats=repeats, seed=args.seed, opts=args.opts, amp=args.amp)
    for n in NAMES:
        print(f"{n:>10}: {C.describe(times[n])}, {batch / C.median(times[n]):.4g} images/s")
    ratios = [s / m for s, m in zip(times["simformer"], times["maskformer"])]
    print(f"simformer / maskformer per round: {C.describe(ratios, unit='x')}")
    C.print_result(OrderedDict(
        maskformer_s=C.median(times["maskformer"]), simformer_s=C.median(times["simformer"]),
        ratio=C.median(ratios), maskformer_img_s=batch / C.median(times["maskformer"]),
        simformer_img_s=batch / C.median(times["simformer"]), batch=batch, size=size))
    return 0


if __name__ == "__main__":
    C.early_threads()
    sys.exit(main())
