"""Does ``--cpu-isa`` make a run repeat on another CPU? The first logged loss, against the machines'.

Starts committed ToyScenes training commands (one thread each, one after the other), reads the
total loss they log at iteration 20 (the first ``metrics.jsonl`` line), stops them, and sets it
beside the same run's loss in the committed ``curves.csv`` of the machines that trained it. Bit
for bit equal means the same kernels ran: the loss at iteration 20 already differs between AVX2
and AVX512 kernels (README, "What a run depends on"). Settings:

* ``native``: nothing pinned (the CPU's own instruction set);
* ``aten-avx2``: ATen alone pinned (``ATEN_CPU_CAPABILITY=avx2``), MKL and oneDNN free;
* ``avx2`` / ``avx512``: ``--cpu-isa`` (ATen, MKL and oneDNN pinned; simformer/utils/cpu_isa.py).

    python benchmarks/cpu_isa_probe.py --out docs/results/cpu_isa/probe.csv
    python benchmarks/cpu_isa_probe.py --cases simformer_cmt --settings avx2 --out docs/results/cpu_isa/probe.csv

(rows of other cases / settings already in --out are kept.)

Each probe takes about a minute; run it on an otherwise idle machine or expect it slower (the
values do not depend on the load, only the time does). Last line: ``RESULT probes=N comparisons=C
equal=E`` (a probe is compared with each machine that trained its run).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from simformer.utils.cpu_isa import ISA_ENV, ISA_SETTINGS  # noqa: E402
from simformer.utils.io import atomic_write_text  # noqa: E402

SPLIT = ["WEAKSHOT.SPLIT", "splits/toyscenes/split1.json", "SEED", "1"]
# case -> (train arguments, [(machine, committed curves.csv, run name)])
CASES = {
    "fully_oracle": (
        ["--config", "configs/toyscenes/fully_oracle.yaml", "SOLVER.MAX_ITER", "1200", *SPLIT],
        [("v669 (2026-12-01, not recorded)", "docs/results/toyscenes_main/curves.csv", "FullyOracle/split1/seed1"),
         ("v1272 (AVX2)", "docs/results/toyscenes_machine_probe/curves.csv", "FullyOracle/split1/seed1")],
    ),
    "fully_oracle_1800": (
        ["--config", "configs/toyscenes/fully_oracle.yaml", "SOLVER.MAX_ITER", "1800", *SPLIT[:3], "3"],
        [("v782 (2026-12-01, not recorded)", "docs/results/toyscenes_main/curves.csv", "FullyOracle@1800/split1/seed3")],
    ),
    # the CMT decoder with every term on: also checks that later code changes kept its numerics
    "simformer_cmt": (
        ["--config", "configs/toyscenes/simformer_cmt.yaml", *SPLIT],
        [("v1272 (AVX2)", "docs/results/toyscenes_variants_recipe/curves.csv", "SimFormer+CMT/split1/seed1")],
    ),
    "simformer_res3": (
        ["--config", "configs/toyscenes/simformer.yaml", "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE", "res3", *SPLIT],
        [("v1272 (AVX2)", "docs/results/toyscenes_variants_recipe/curves.csv",
          "SimFormer-res3/split1/seed1")],
    ),
}
PINS = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "DNNL_MAX_CPU_ISA", ISA_ENV)
SETTINGS = {"native": {}, "aten-avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
            **{isa: {ISA_ENV: isa} for isa in ISA_SETTINGS}}
ITERATION = 20  # the first logged iteration


def committed_loss(curves: str, run: str) -> float:
    """``total_loss`` of ``run`` at ITERATION in a collected curves.csv (floats written with repr)."""
    with open(os.path.join(REPO, curves), newline="") as f:
        for row in csv.DictReader(f):
            if row["run"] == run and row["series"] == "total_loss" and int(row["iteration"]) == ITERATION:
                return float(row["value"])
    raise SystemExit(f"{curves}: no total_loss of {run} at iteration {ITERATION}")


def first_loss(train_args, setting: dict, workdir: str, timeout_s: float) -> tuple:
    """Start the training, wait for its ITERATION line, stop it -> (total_loss, cpu_capability)."""
    env = {k: v for k, v in os.environ.items() if k not in PINS}
    env.update(setting, OMP_NUM_THREADS="1", SIMFORMER_PROGRESS="0")
    out = os.path.join(workdir, "run")
    proc = subprocess.Popen([sys.executable, "-m", "simformer", "train", "--threads", "1", "--output", out,
                             *train_args], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline, line = time.monotonic() + timeout_s, None
    try:
        while line is None:
            if proc.poll() is not None:
                raise SystemExit(f"training stopped (exit {proc.returncode}) before iteration {ITERATION}: "
                                 f"{proc.stderr.read().decode()[-500:]}")
            if time.monotonic() > deadline:
                raise SystemExit(f"no iteration {ITERATION} within {timeout_s:.0f} s (--timeout-s)")
            time.sleep(1.0)
            path = os.path.join(out, "metrics.jsonl")
            if os.path.exists(path):
                with open(path) as f:
                    rows = [json.loads(s) for s in f if s.strip()]
                line = next((r for r in rows if r.get("iteration") == ITERATION), None)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # saves a checkpoint in the temporary folder and exits
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
    with open(os.path.join(out, "run_info.json")) as f:
        capability = json.load(f)["cpu_capability"]
    return float(line["total_loss"]), capability


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated: {', '.join(CASES)}")
    p.add_argument("--settings", default="native,aten-avx2,avx2", help=f"comma-separated: {', '.join(SETTINGS)}")
    p.add_argument("--out", default="", help="CSV to write (one row per probe and committed machine)")
    p.add_argument("--timeout-s", type=float, default=900.0, help="per probe")
    args = p.parse_args(argv)
    cases, settings = args.cases.split(","), args.settings.split(",")
    unknown = [c for c in cases if c not in CASES] + [s for s in settings if s not in SETTINGS]
    if unknown:
        raise SystemExit(f"unknown case / setting: {unknown}")
    rows = []
    for case in cases:
        train_args, refs = CASES[case]
        committed = [(machine, committed_loss(curves, run)) for machine, curves, run in refs]
        for setting in settings:
            with tempfile.TemporaryDirectory(prefix="cpu_isa_probe_") as tmp:
                loss, capability = first_loss(train_args, SETTINGS[setting], tmp, args.timeout_s)
            for machine, ref in committed:
                rows.append({"case": case, "setting": setting, "cpu_capability": capability,
                             "iteration": ITERATION, "total_loss": repr(loss), "machine": machine,
                             "machine_loss": repr(ref), "equal": loss == ref})
                print(f"{case:15s} {setting:10s} ran {capability:7s} loss {loss!r:20s} "
                      f"{'==' if loss == ref else '!='} {machine}: {ref!r}", flush=True)
    probed = {(r["case"], r["setting"]) for r in rows}
    comparisons, equal = len(rows), sum(r["equal"] for r in rows)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        if os.path.exists(args.out):  # keep the earlier probes of other cases / settings
            with open(args.out, newline="") as f:
                rows = [r for r in csv.DictReader(f) if (r["case"], r["setting"]) not in probed] + rows
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[-1]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(args.out, buf.getvalue())
    print(f"RESULT probes={len(probed)} comparisons={comparisons} equal={equal}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
