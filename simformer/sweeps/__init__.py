"""Sweeps: expand a sweep file into runs, execute them resumably, collect one results table.

Split by job: ``spec`` (sweep file -> runs), ``state`` (a run's state from its folder; the plan),
``launch`` (commands and the local executor), ``slurm`` (the submitit executor), ``collect``
(results table). The names below are the package's API.
"""
from .collect import collect, collect_and_write, summary_table, write_results
from .launch import LOG_FILE, RUNNER_ENV, build_command, child_env, default_runner, run_local
from .slurm import SweepJob, make_executor, run_submitit
from .spec import METRIC_COLUMNS, RESULT_COLUMNS, STAGES, Run, Sweep, SweepError, load_sweep
from .state import (FAILED_FILE, LOCK_FILE, RECORD_FILE, STATES, SweepReport, change_reason, check_not_changed,
                    failure_reason, has_checkpoint, is_changed, is_done, is_running, plan, read_record, run_state,
                    try_lock, unlock)

__all__ = [
    "collect", "collect_and_write", "summary_table", "write_results",
    "LOG_FILE", "RUNNER_ENV", "build_command", "child_env", "default_runner", "run_local",
    "SweepJob", "make_executor", "run_submitit",
    "METRIC_COLUMNS", "RESULT_COLUMNS", "STAGES", "Run", "Sweep", "SweepError", "load_sweep",
    "FAILED_FILE", "LOCK_FILE", "RECORD_FILE", "STATES", "SweepReport", "change_reason", "check_not_changed",
    "failure_reason", "has_checkpoint", "is_changed", "is_done", "is_running", "plan", "read_record", "run_state",
    "try_lock", "unlock",
]
