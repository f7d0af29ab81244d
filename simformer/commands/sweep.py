"""``simformer sweep``: expand a sweep file into runs, execute them resumably, collect results.csv."""
from __future__ import annotations

HELP = "run a sweep (methods x splits x seeds x grid) locally or on SLURM, resumably; collect results.csv"
DESCRIPTION = """\
Expand a sweep file (schema and examples: docs/sweeps.md) into runs, one folder each under the
sweep's output, run those not finished yet and write OUTPUT/results.csv (one row per finished run:
run, method, split, seed, novel_miou, base_miou, miou, hm, fwiou, macc, pacc, grid columns, run_dir,
git_commit) for `simformer stats` / `simformer plot`.

  simformer sweep sweeps/table2.yaml --dry-run          # list runs, commands and states
  simformer sweep sweeps/table2.yaml --workers 2          # 2 runs at a time on this machine
  simformer sweep sweeps/table2.yaml --devices 0,1,2,3  # 4 at a time, one GPU each
  simformer sweep sweeps/table2.yaml --executor slurm --partition gpu --gpus-per-node 1 --timeout-min 720
  simformer sweep sweeps/table2.yaml --collect          # only (re)write results.csv

Finished runs (metrics.json + model_final.pth) are skipped, interrupted ones resume from their
last checkpoint, a failing run is recorded in RUN_DIR/FAILED and does not stop the others
(exit code 1 at the end; --retry-failed runs it again). Ctrl-C stops the children cleanly."""


def add_arguments(parser) -> None:
    parser.add_argument("sweep", metavar="FILE.yaml", help="sweep file")
    parser.add_argument("--executor", default="local", choices=["local", "slurm", "submitit-local"],
                        help="local: subprocesses here; slurm: a submitit job array; submitit-local: the slurm "
                             "code path with submitit's local executor (to check a sweep on one machine)")
    parser.add_argument("--workers", "--jobs", "-j", dest="jobs", type=int, default=None,
                        help="local: runs at a time (default 1, or the number of --devices groups); aliases --jobs, -j")
    parser.add_argument("--devices", default=None, metavar="IDS",
                        help="local: comma list of GPU ids; each concurrent run gets --gpus-per-node of them "
                             "as CUDA_VISIBLE_DEVICES")
    parser.add_argument("--dry-run", action="store_true", help="print runs, their state and command; run nothing")
    parser.add_argument("--only", action="append", metavar="PATTERN",
                        help="run only runs whose name matches this shell pattern, e.g. 'SimFormer/*/seed1' "
                             "(repeatable; results.csv still covers the whole sweep)")
    parser.add_argument("--retry-failed", action="store_true", help="run again the runs that have a FAILED file")
    parser.add_argument("--adopt", action="append", metavar="DIR", default=None,
                        help="before running (or with --collect, instead), copy into each new training run a "
                             "finished run found under DIR (e.g. another sweep's output) whose config.yaml "
                             "equals the run's config, seed included, instead of training it again "
                             "(repeatable; docs/sweeps.md)")
    parser.add_argument("--collect", action="store_true", help="run nothing; write OUTPUT/results.csv and the summary")
    parser.add_argument("--output", "--out", dest="output", default=None, metavar="DIR",
                        help="override the sweep file's output folder (alias --out)")
    slurm = parser.add_argument_group("SLURM / submitit (--executor slurm); see docs/sweeps.md")
    slurm.add_argument("--partition", default=None, help="SLURM partition")
    slurm.add_argument("--gpus-per-node", type=int, default=None,
                       help="GPUs per run and node (default 1 on slurm, 1 locally); > 1 launches through torchrun")
    slurm.add_argument("--nodes", type=int, default=1, help="nodes per run (> 1: torchrun across nodes)")
    slurm.add_argument("--cpus-per-task", type=int, default=None, help="CPUs per run and node (data workers)")
    slurm.add_argument("--timeout-min", type=int, default=None,
                       help="time limit per job in minutes; a job hitting it is requeued and resumes")
    slurm.add_argument("--mem-gb", type=float, default=None, help="memory per node in GB")
    slurm.add_argument("--slurm-array-parallelism", type=int, default=None,
                       help="at most this many runs of the array at once")
    slurm.add_argument("--slurm-account", default=None, help="SLURM account (--account)")
    slurm.add_argument("--slurm-qos", default=None, help="SLURM quality of service (--qos)")
    slurm.add_argument("--slurm-constraint", default=None, help="SLURM node constraint (--constraint)")
    slurm.add_argument("--slurm-setup", action="append", default=None, metavar="LINE",
                       help="shell line run before each job (module load ..., source venv/bin/activate); repeatable")
    slurm.add_argument("--max-requeue", type=int, default=None,
                       help="requeues after timeout/preemption (submitit default 3)")
    slurm.add_argument("--no-wait", action="store_true",
                       help="submit and return; collect later with --collect")
    slurm.add_argument("--poll-s", type=float, default=10.0, help="seconds between job status checks")


def _print_plan(sweep, runs, args) -> None:
    import shlex

    from simformer.sweeps import build_command, change_reason, has_checkpoint, run_state

    gpus = args.gpus_per_node or 1
    counts = {}
    print(f"sweep {sweep.name}: {len(sweep.runs)} runs ({len(runs)} selected) in {sweep.output}")
    for run in runs:
        state = run_state(run)
        counts[state] = counts.get(state, 0) + 1
        shown = {"partial": "partial (resumable)", "changed": "changed (refused)"}.get(state, state)
        print(f"  [{shown}] {run.name}")
        if state == "changed":
            print(f"      {change_reason(run)}")
        if state not in ("done", "running"):
            nodes = args.nodes if args.executor != "local" else 1
            cmd = build_command(run, resume=has_checkpoint(run.run_dir), gpus=gpus, nodes=nodes,
                                master_addr="$MASTER_NODE")
            print(f"      {shlex.join(cmd)}")
    print("states: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if args.executor != "local":
        opts = _executor_options(sweep, args)
        print(f"{args.executor} job parameters: " + ", ".join(f"{k}={v}" for k, v in opts.items() if v is not None))


def _executor_options(sweep, args) -> dict:
    """What run_submitit passes to make_executor (also shown by --dry-run)."""
    return dict(job_name=f"sweep-{sweep.name}", gpus_per_node=args.gpus_per_node if args.gpus_per_node is not None else 1,
                nodes=args.nodes, cpus_per_task=args.cpus_per_task, timeout_min=args.timeout_min, mem_gb=args.mem_gb,
                partition=args.partition, array_parallelism=args.slurm_array_parallelism,
                account=args.slurm_account, qos=args.slurm_qos, constraint=args.slurm_constraint,
                setup=args.slurm_setup, max_requeue=args.max_requeue)


def run(args) -> int:
    import os

    from simformer.sweeps import SweepError, collect_and_write, load_sweep, run_local, run_submitit

    sweep = load_sweep(args.sweep, output=args.output)
    runs = sweep.select(args.only)
    if args.dry_run:
        _print_plan(sweep, runs, args)
        return 0
    if args.adopt:
        from simformer.sweeps.adopt import adopt_finished

        adopted = adopt_finished(runs, args.adopt)
        print(f"adopted {len(adopted)} finished run(s) from {', '.join(args.adopt)}")
    if args.collect:
        collect_and_write(sweep)
        return 0
    gpus = args.gpus_per_node if args.gpus_per_node is not None else 1
    if gpus < 0 or args.nodes < 1:
        raise SweepError("--gpus-per-node must be >= 0 and --nodes >= 1")
    if args.executor == "local":
        if args.nodes != 1:
            raise SweepError("--nodes > 1 needs --executor slurm")
        devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else None
        jobs = args.jobs or (len(devices) // max(gpus, 1) if devices else 1)
        report = run_local(runs, jobs=jobs, gpus=max(gpus, 1), devices=devices, retry_failed=args.retry_failed)
    else:
        if args.jobs or args.devices:
            raise SweepError("--workers / --devices are for --executor local; use --slurm-array-parallelism")
        report = run_submitit(
            runs, folder=os.path.join(sweep.output, ".submitit"),
            cluster="slurm" if args.executor == "slurm" else "local",
            retry_failed=args.retry_failed, wait=not args.no_wait, poll_s=args.poll_s,
            **_executor_options(sweep, args))
        if args.no_wait:
            print(f"submitted {len(report.submitted)} job(s); skipped {len(report.skipped)} done run(s). "
                  f"Later: simformer sweep {args.sweep} --collect")
            return 0
    busy = f", {len(report.busy)} running elsewhere" if report.busy else ""
    print(f"\nsweep {sweep.name}: {len(report.completed)} completed, {len(report.skipped)} already done, "
          f"{len(report.failed)} failed{busy}")
    collect_and_write(sweep)
    if report.failed:
        print(f"\nFAILED runs ({len(report.failed)}):")
        for name, reason in report.failed.items():
            print(f"  {name}: {reason}")
        return 1
    return 0
