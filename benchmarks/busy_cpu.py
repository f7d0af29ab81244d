"""Training step on a busy CPU: default thread settings vs the tuned ones, quiet vs one competitor.

Four measurements of the same SimFormer training step (ToyScenes config, synthetic batch, the real
optimizer; ``_common.train_step``), each in a fresh worker process because OpenMP reads its
settings when torch starts:

* default: torch's defaults (one thread per core, OpenMP's spin-then-sleep wait); the OMP / MKL /
  SIMFORMER thread variables are removed from the worker's environment;
* tuned: ``simformer.utils.threads.configure_threads()`` before torch is imported, as every
  ``simformer`` verb does (threads = available cores minus the runnable threads of other
  processes, ``OMP_WAIT_POLICY=PASSIVE``); ``--threads N`` forces N instead of the rule;

each on the machine as it is ("quiet") and with ``--competitors`` CPU-bound Python processes
(``while True: pass``) running ("busy"). Worker order alternates between rounds.

    python benchmarks/busy_cpu.py                       # ~2-4 min on 2 cores
    python benchmarks/busy_cpu.py --quick               # smoke test

Last line: ``RESULT default_quiet_ms=... tuned_quiet_ms=... default_busy_ms=... tuned_busy_ms=...
default_slowdown=... tuned_slowdown=... busy_speedup=... default_threads=... tuned_threads_quiet=...
tuned_threads_busy=...`` (slowdown = busy / quiet of one setting; busy_speedup = default busy /
tuned busy).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

DEFAULT_CONFIG = "configs/toyscenes/simformer.yaml"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY",
               "SIMFORMER_THREADS", "SIMFORMER_THREADS_AUTO")


def parse_args(argv=None):
    p = C.base_parser(__doc__.splitlines()[0])
    p.set_defaults(threads=None)
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--batch", type=int, default=None, help="images per step (default 8; quick 2)")
    p.add_argument("--size", type=int, default=None, help="square input size (default 128; quick 64)")
    p.add_argument("--competitors", type=int, default=1, help="CPU-bound processes in the busy condition")
    p.add_argument("--rounds", type=int, default=1, help="worker pairs per condition (order alternates)")
    p.add_argument("--worker", choices=("default", "tuned"), default=None, help=argparse.SUPPRESS)
    for action in p._actions:
        if action.dest == "threads":
            action.help = "threads of the tuned variant (default: the rule of simformer.utils.threads)"
    return p.parse_args(argv)


# ------------------------------------------------------------------------------ worker
def worker(args) -> int:
    """Build the model, time ``repeats`` steps after ``warmup``; print ``RESULT ms=... threads=...``."""
    if args.worker == "tuned":
        from simformer.utils.threads import configure_threads

        configure_threads(args.threads)  # before torch is imported, as simformer.cli.main
    import torch

    device = torch.device("cpu")
    batch = C.pick(args.batch, 8, 2, args.quick)
    size = C.pick(args.size, 128, 64, args.quick)
    cfg = C.load_bench_cfg(args.config, ["SOLVER.IMS_PER_BATCH", str(batch), "INPUT.CROP.SIZE",
                                         f"[{size}, {size}]", "INPUT.SIZE_DIVISIBILITY", str(size)])
    split = C.bench_split(cfg)
    model, opt, sched = C.build_train_model(cfg, split, device)
    data = C.synthetic_batch(split, batch, size, size, seed=args.seed, pairs=cfg.WEAKSHOT.PAIR_MODE != "none",
                             novel_masks=bool(cfg.WEAKSHOT.NOVEL_MASKS))
    times = C.interleaved({"step": lambda: C.train_step(cfg, model, opt, sched, data)},
                          warmup=C.pick(args.warmup, 2, 1, args.quick),
                          repeats=C.pick(args.repeats, 6, 2, args.quick), device=device)["step"]
    print(f"  {args.worker}: {torch.get_num_threads()} thread(s), OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', '(unset)')}: {C.describe(times, 'ms', 1000.0)}", flush=True)
    C.print_result({"ms": 1000.0 * C.median(times), "threads": torch.get_num_threads()})
    return 0


# ------------------------------------------------------------------------------ driver
def run_worker(variant: str, args, log) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    env["PYTHONPATH"] = os.pathsep.join([C.REPO] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", variant, "--config", args.config,
           "--seed", str(args.seed)]
    for flag, value in (("--threads", args.threads), ("--batch", args.batch), ("--size", args.size),
                        ("--warmup", args.warmup), ("--repeats", args.repeats)):
        if value is not None:
            cmd += [flag, str(value)]
    if args.quick:
        cmd.append("--quick")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"worker {variant} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    for line in proc.stdout.splitlines():
        if line.startswith("  "):
            log(line)
    return C.parse_result(proc.stdout)


def measure_condition(args, log) -> dict:
    """variant -> (median of the workers' ms, threads) for the machine's current state."""
    out = {"default": [], "tuned": []}
    threads = {}
    for r in range(args.rounds):
        order = ("default", "tuned") if r % 2 == 0 else ("tuned", "default")
        for variant in order:
            res = run_worker(variant, args, log)
            out[variant].append(float(res["ms"]))
            threads[variant] = int(res["threads"])
    return {v: (C.median(ms), threads[v]) for v, ms in out.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    if args.competitors < 1 or args.rounds < 1:
        raise SystemExit("--competitors and --rounds must be >= 1")
    from simformer.utils.threads import available_cores, load_average

    log = lambda s: print(s, flush=True)  # noqa: E731
    log(f"{os.cpu_count()} cores, {available_cores()} available (affinity / cgroup quota); runnable threads "
        f"of other processes now: {load_average():.1f}")
    log("quiet (the machine as it is):")
    quiet = measure_condition(args, log)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.competitors)]
    try:
        time.sleep(1.0)
        log(f"busy ({args.competitors} CPU-bound process(es) added; runnable threads of other processes now: "
            f"{load_average():.1f}):")
        busy = measure_condition(args, log)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    res = {
        "default_quiet_ms": quiet["default"][0], "tuned_quiet_ms": quiet["tuned"][0],
        "default_busy_ms": busy["default"][0], "tuned_busy_ms": busy["tuned"][0],
    }
    res["default_slowdown"] = res["default_busy_ms"] / res["default_quiet_ms"]
    res["tuned_slowdown"] = res["tuned_busy_ms"] / res["tuned_quiet_ms"]
    res["busy_speedup"] = res["default_busy_ms"] / res["tuned_busy_ms"]
    res.update(default_threads=busy["default"][1], tuned_threads_quiet=quiet["tuned"][1],
               tuned_threads_busy=busy["tuned"][1])
    log(f"busy / quiet: default settings {res['default_slowdown']:.2f}x, tuned {res['tuned_slowdown']:.2f}x; "
        f"on the busy machine tuned is {res['busy_speedup']:.2f}x faster than default")
    C.print_result(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
