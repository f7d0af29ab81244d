"""Helpers shared by the benchmark scripts: arguments, timing, memory, RESULT lines, synthetic
batches and the MaskFormer / SimFormer model pair.

Not part of the package and not a test. Heavy imports (numpy, torch, simformer) happen inside the
functions, so that ``early_threads`` can set the BLAS thread count before numpy is first imported.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Config overrides that turn the SimFormer config into plain MaskFormer on the same backbone:
# no pairs, no SimNet / distillation / complementary loss, masks for every class.
MASKFORMER_OVERRIDES = [
    "WEAKSHOT.PAIR_MODE", "none",
    "WEAKSHOT.SIMNET.ENABLED", "False",
    "WEAKSHOT.DISTILL.ENABLED", "False",
    "WEAKSHOT.COMPLEMENTARY.ENABLED", "False",
    "WEAKSHOT.NOVEL_MASKS", "True",
]


# ------------------------------------------------------------------------------ arguments
def early_threads(argv: Optional[Sequence[str]] = None) -> None:
    """Read ``--threads N`` from argv and export it to the BLAS/OpenMP thread variables.

    Must run before numpy is imported to affect numpy's BLAS (the scripts call it first thing);
    torch's intra-op pool is set again with ``torch.set_num_threads`` in :func:`setup_torch`.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    n = None
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            n = argv[i + 1]
        elif a.startswith("--threads="):
            n = a.split("=", 1)[1]
    if n is None or "numpy" in sys.modules:
        return
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(int(n))


def base_parser(description: str) -> argparse.ArgumentParser:
    """Parser with the options every benchmark has."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch / BLAS threads (default: all cores)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto = cuda when available, else cpu")
    p.add_argument("--quick", action="store_true", help="tiny settings (smoke test); figures meaningless")
    p.add_argument("--warmup", type=int, default=None, help="untimed warmup repetitions")
    p.add_argument("--repeats", type=int, default=None, help="timed repetitions (median and IQR reported)")
    p.add_argument("--seed", type=int, default=0)
    return p


def pick(value, full, quick, is_quick: bool):
    """``value`` when given on the command line, else the full or the quick default."""
    if value is not None:
        return value
    return quick if is_quick else full


def setup_torch(args):
    """Set torch threads and return the device named by ``--device``."""
    import torch

    if args.threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False; use --device cpu")
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if use_cuda else "cpu")


def describe_machine(device) -> str:
    import torch

    load = ""
    try:
        load = " load avg %.2f %.2f %.2f," % os.getloadavg()
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (f"torch {torch.__version__}, {os.cpu_count()} cores,{load} torch threads "
            f"{torch.get_num_threads()}, device {device}{gpu}")


# ------------------------------------------------------------------------------ RESULT lines
def fmt(value) -> str:
    """4 significant digits for floats, plain text otherwise (no spaces allowed in values)."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}"
    text = str(value)
    if any(c.isspace() for c in text) or "=" in text:
        raise ValueError(f"RESULT value {text!r} must not contain spaces or '='")
    return text


def result_line(items: Dict[str, object]) -> str:
    for k in items:
        if not k.replace("_", "").isalnum():
            raise ValueError(f"RESULT key {k!r} must be alphanumeric/underscore")
    return "RESULT " + " ".join(f"{k}={fmt(v)}" for k, v in items.items())


def print_result(items: Dict[str, object]) -> None:
    print(result_line(items), flush=True)


def parse_result(text: str) -> Dict[str, object]:
    """The key=value pairs of the last ``RESULT`` line in ``text`` (numbers converted)."""
    lines = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        raise ValueError("no RESULT line in the output")
    out: Dict[str, object] = {}
    for tok in lines[-1].split()[1:]:
        key, sep, val = tok.partition("=")
        if not sep or not key:
            raise ValueError(f"malformed RESULT token {tok!r}")
        try:
            out[key] = int(val)
        except ValueError:
            try:
                out[key] = float(val)
            except ValueError:
                out[key] = val
    return out


# ------------------------------------------------------------------------------ statistics
def quartiles(values: Sequence[float]):
    """(q1, median, q3) with linear interpolation (numpy's default percentile rule)."""
    v = sorted(float(x) for x in values)
    if not v:
        return (float("nan"),) * 3

    def q(p):
        pos = p * (len(v) - 1)
        lo = int(math.floor(pos))
        hi = min(lo + 1, len(v) - 1)
        return v[lo] + (v[hi] - v[lo]) * (pos - lo)

    return q(0.25), q(0.5), q(0.75)


def median(values: Sequence[float]) -> float:
    return quartiles(values)[1]


def describe(values: Sequence[float], unit: str = "s", scale: float = 1.0) -> str:
    q1, med, q3 = quartiles([x * scale for x in values])
    return f"median {med:.4g} {unit} (IQR {q1:.4g}-{q3:.4g}, n={len(values)})"


# ------------------------------------------------------------------------------ timing
def synchronize(device) -> None:
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device) -> float:
    """Wall time of ``fn()`` in seconds, with device synchronisation on both sides."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def interleaved(fns: Dict[str, Callable[[], object]], *, warmup: int, repeats: int, device,
                before: Optional[Callable[[str], None]] = None,
                after: Optional[Callable[[str, float], None]] = None) -> Dict[str, List[float]]:
    """Time several variants side by side: every round runs each variant once, the order
    alternating (A B, B A, ...) so that slow phases of a shared machine hit all variants alike.

    ``before(name)`` / ``after(name, seconds)`` run around every timed call (outside the timing),
    e.g. to reset memory counters. Returns name -> list of ``repeats`` durations.
    """
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    times: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            if before is not None:
                before(n)
            dt = time_call(fns[n], device)
            times[n].append(dt)
            if after is not None:
                after(n, dt)
    return times


# ------------------------------------------------------------------------------ memory
def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} (CPU memory measurement needs Linux)")


class PeakMemory:
    """Peak memory of a region of code.

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (``peak`` = the
    absolute peak of allocated tensors; ``delta`` = peak minus what was allocated at the start).
    CPU: the kernel's resident-set high-water mark. ``start()`` frees cached heap pages
    (``malloc_trim``), resets VmHWM (``/proc/self/clear_refs`` = 5) and reads VmRSS; ``stop()``
    reads VmHWM. ``delta`` = VmHWM - VmRSS(start): the extra physical memory the region needed
    (activations, gradients, temporaries; the weights and optimizer state already exist).
    """

    def __init__(self, device):
        self.device = device
        self.base = 0
        self.peak = 0
        self._libc = None
        if device.type == "cpu":
            import ctypes

            try:
                self._libc = ctypes.CDLL("libc.so.6")
            except OSError:
                self._libc = None

    @property
    def method(self) -> str:
        if self.device.type == "cuda":
            return "torch.cuda.max_memory_allocated (peak of allocated tensors)"
        return ("peak RSS increase: VmHWM after resetting it via /proc/self/clear_refs, minus VmRSS "
                "before the step (malloc_trim first)")

    def start(self) -> None:
        import gc

        gc.collect()
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return
        if self._libc is not None:
            self._libc.malloc_trim(0)
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError as e:
            raise RuntimeError(f"Cannot reset the peak RSS through /proc/self/clear_refs ({e}); CPU peak "
                               "memory needs Linux >= 4.0 with a writable /proc (run on CUDA otherwise)") from e
        self.base = _proc_status_kib("VmRSS") * 1024

    def stop(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.peak = _proc_status_kib("VmHWM") * 1024

    @property
    def delta(self) -> int:
        return max(0, self.peak - self.base)


MIB = 1024.0 ** 2


# ------------------------------------------------------------------------------ config and model
def load_bench_cfg(config: str, overrides: Sequence[str] = ()):
    """``load_cfg`` with the backbone weights off (random initialisation: the same cost, no download)."""
    from simformer.config import load_cfg, resolve_path

    path = config if os.path.isabs(config) or os.path.exists(config) else os.path.join(REPO, config)
    return load_cfg(resolve_path(path), ["MODEL.BACKBONE.WEIGHTS", "", *overrides])


def bench_split(cfg):
    """The split of the config (WEAKSHOT.SPLIT, resolved relative to the checkout)."""
    from simformer.config import resolve_path
    from simformer.data.class_split import load_split

    if not cfg.WEAKSHOT.SPLIT:
        raise SystemExit("The benchmark config needs WEAKSHOT.SPLIT (a base/novel split)")
    return load_split(resolve_path(cfg.WEAKSHOT.SPLIT))


def build_train_model(cfg, split, device):
    """Model in training mode on ``device`` plus its real optimizer and LR scheduler."""
    import torch

    from simformer.engine.solver import build_lr_scheduler, build_optimizer
    from simformer.modeling.meta_arch import build_model

    torch.manual_seed(int(cfg.SEED))
    model = build_model(cfg, split.num_classes, split).to(device)
    model.train()
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    return model, optimizer, scheduler


def amp_context(device, enabled: bool):
    """bfloat16 autocast as the trainer uses on CUDA (SOLVER.AMP.ENABLED); a no-op otherwise."""
    import contextlib

    import torch

    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def train_step(cfg, model, optimizer, scheduler, batch, *, amp: bool = False) -> float:
    """One optimisation step as ``Trainer.run_step`` does it with one micro-batch: forward under
    optional bf16 autocast, sum of the weighted loss terms, backward, full-model gradient clipping,
    AdamW step, scheduler step. Returns the total loss (raises on a non-finite one)."""
    import torch

    optimizer.zero_grad(set_to_none=True)
    with amp_context(model.device, amp):
        losses = model(batch)
    total = sum(losses.values())
    value = float(total.detach())
    if not math.isfinite(value):
        raise FloatingPointError(f"non-finite loss {value}: {({k: float(v) for k, v in losses.items()})}")
    total.backward()
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_VALUE > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip.CLIP_VALUE, norm_type=clip.NORM_TYPE)
    optimizer.step()
    scheduler.step()
    return value


# ------------------------------------------------------------------------------ synthetic data
def synthetic_labels(rng, num_classes: int, height: int, width: int, classes: Sequence[int],
                     void_frac: float = 0.05):
    """uint8 ``[H, W]`` label map: a Voronoi partition over ``len(classes)`` random seeds, seed i
    labelled ``classes[i]``, with a void (255) strip of ``void_frac`` of the rows at the bottom.
    Vectorised over pixels (one distance tensor ``[S, H, W]``)."""
    import numpy as np

    s = len(classes)
    ys = rng.uniform(0, height, size=s)[:, None, None]
    xs = rng.uniform(0, width, size=s)[:, None, None]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    d = (yy[None] - ys) ** 2 + (xx[None] - xs) ** 2
    label = np.asarray(classes, dtype=np.uint8)[d.argmin(0)]
    void_rows = int(round(void_frac * height))
    if void_rows:
        label[height - void_rows:] = 255
    return label


def synthetic_batch(split, n: int, height: int, width: int, *, seed: int = 0, pairs: bool,
                    novel_masks: bool, classes_per_image: int = 6) -> List[dict]:
    """``n`` training sample dicts (docs/design.md) with random Voronoi labels.

    With ``pairs`` the batch is ``n/2`` (image, reference) pairs tagged with ``pair_role``. Images
    2i and 2i+1 always share one novel and two base classes (so SimNet and distillation both have
    work; the pixels do not depend on ``pairs``/``novel_masks``), the other classes are random. ``novel_masks`` keeps novel ids in ``sem_seg`` (MaskFormer
    trained on every class); otherwise novel pixels are 255 there. Images are float32 0..255.
    """
    import numpy as np
    import torch

    if pairs and n % 2:
        raise ValueError(f"a paired batch needs an even size, got {n}")
    rng = np.random.default_rng(seed)
    k = split.num_classes
    novel = np.asarray(split.novel, dtype=np.int64)
    base = np.asarray(split.base, dtype=np.int64)
    novel_mask = split.novel_mask()
    palette = rng.uniform(0, 255, size=(256, 3)).astype(np.float32)
    batch = []
    shared: List[int] = []
    for i in range(n):
        if i % 2 == 0:  # same content with or without pair tags: MaskFormer sees the same images
            shared = []
            if len(novel):
                shared.append(int(rng.choice(novel)))
            shared += [int(c) for c in rng.choice(base, size=min(2, len(base)), replace=False)]
        others = [int(c) for c in rng.choice(k, size=classes_per_image, replace=True)]
        classes = (shared + others)[:max(classes_per_image, len(shared))]
        full = synthetic_labels(rng, k, height, width, classes)
        image = palette[full].transpose(2, 0, 1) + rng.normal(0, 20, size=(3, height, width)).astype(np.float32)
        present = np.zeros(k, dtype=bool)
        ids = np.unique(full)
        present[ids[ids < k]] = True
        sem = full.astype(np.int64)
        if not novel_masks:
            is_novel = np.zeros(256, dtype=bool)
            is_novel[:k] = novel_mask
            sem = np.where(is_novel[full], 255, sem)
        sample = {
            "image": torch.from_numpy(np.clip(image, 0, 255).astype(np.float32)),
            "sem_seg": torch.from_numpy(sem),
            "sem_seg_full": torch.from_numpy(full.astype(np.int64)),
            "valid": torch.ones(height, width, dtype=torch.bool),
            "image_labels": torch.from_numpy(present),
            "height": height, "width": width,
            "file_name": f"synthetic_{i}.jpg", "image_id": f"synthetic_{i}", "index": i,
        }
        if pairs:
            sample["pair_role"] = "anchor" if i % 2 == 0 else "reference"
        batch.append(sample)
    return batch


def batch_to(batch: List[dict], device) -> List[dict]:
    """Move the tensors of a batch to ``device`` once (so timings exclude host-to-device copies)."""
    import torch

    return [{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in s.items()} for s in batch]


class ModelPair:
    """MaskFormer and SimFormer built from one config, with one synthetic batch each.

    MaskFormer = the config + ``MASKFORMER_OVERRIDES`` (all masks, no pairs); SimFormer = the full
    config. Both see the same ``batch`` images at ``size`` px; SimFormer reads them as
    ``batch/2`` (image, reference) pairs.
    """

    def __init__(self, config: str, *, batch: int, size: int, device, seed: int = 0,
                 overrides: Sequence[str] = (), amp: bool = False):
        self.cfg = {"simformer": load_bench_cfg(config, overrides),
                    "maskformer": load_bench_cfg(config, [*overrides, *MASKFORMER_OVERRIDES])}
        self.split = bench_split(self.cfg["simformer"])
        self.device = device
        self.amp = amp
        self.models = {}
        self.batches = {}
        for name, cfg in self.cfg.items():
            self.models[name] = build_train_model(cfg, self.split, device)
            paired = cfg.WEAKSHOT.PAIR_MODE != "none"
            self.batches[name] = batch_to(synthetic_batch(self.split, batch, size, size, seed=seed, pairs=paired,
                                                          novel_masks=bool(cfg.WEAKSHOT.NOVEL_MASKS)), device)

    def step_fn(self, name: str) -> Callable[[], float]:
        cfg = self.cfg[name]
        model, opt, sched = self.models[name]
        batch = self.batches[name]
        return lambda: train_step(cfg, model, opt, sched, batch, amp=self.amp)


# ------------------------------------------------------------------------------ real data
def dataset_available(name: str) -> bool:
    """True when ``get_dataset_dicts(name)`` finds images and labels."""
    from simformer.data.catalog import get_dataset_dicts

    try:
        return bool(get_dataset_dicts(name))
    except (FileNotFoundError, KeyError, ValueError):
        return False


def real_train_loader(cfg, split, *, num_workers: Optional[int] = None, cache_dir: Optional[str] = None):
    """The training loader the trainer uses (``simformer.data.build.build_train_loader``: real
    mapper, pseudo labels, and with ``WEAKSHOT.PAIR_MODE`` != none the presence matrix, pair
    statistics and ReferenceSampler), as one process.

    Returns ``(iterator, seconds spent on presence + pair statistics)``.
    """
    from simformer.config import apply_overrides
    from simformer.data.build import build_reference_sampler, build_train_loader

    if num_workers is not None:
        cfg = apply_overrides(cfg.clone(), ["DATALOADER.NUM_WORKERS", str(int(num_workers))])
    t0 = time.perf_counter()
    sampler = build_reference_sampler(cfg, cfg.DATASETS.TRAIN[0], split, cache_dir=cache_dir)
    prep = time.perf_counter() - t0
    return build_train_loader(cfg, split, reference_sampler=sampler, rank=0, world_size=1), prep
