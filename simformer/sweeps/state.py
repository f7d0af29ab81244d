"""The state of a sweep run, read from the files in its folder, and the plan of what to run.

==========  ===================================================================================
done        ``metrics.json`` and ``model_final.pth`` present: skipped
running     another sweep process or job holds the run's lock (``flock`` on ``RUN_DIR/.lock``): skipped
failed      ``FAILED`` present (exit code + log tail): reported, re-run only with ``retry_failed``
partial     ``last_checkpoint`` present (in the folder or one level down): resumed with --resume
new         none of these: started from scratch
changed     the run would now train with another config than it did: a saved ``config.yaml`` (the
            run's; a pipeline's two stages') differs in some key from the sweep's config file as it
            is today plus its overrides, or (no config saved yet) ``sweep_run.json`` records other
            overrides; or another stage / retrain config / refinement. Refused, naming the keys.
==========  ===================================================================================

Comparing resolved configs, not the sweep file's text, catches an edit of a shared base config
(e.g. ``Base-ToyScenes.yaml``) under finished runs, and lets a sweep pin a key that moved to a new
default (an override equal to what the run used) without invalidating its runs.
"""
from __future__ import annotations

import datetime
import json
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from simformer.utils.run_dir import LOCK_FILE as RUN_LOCK_FILE
from simformer.utils.run_dir import SWEEP_FAILED_FILE, SWEEP_RECORD_FILE

from .spec import Run, SweepError


STATES = ("done", "running", "partial", "failed", "new", "changed")
FAILED_FILE, LOCK_FILE, RECORD_FILE = SWEEP_FAILED_FILE, RUN_LOCK_FILE, SWEEP_RECORD_FILE


@dataclass
class SweepReport:
    """What an executor did: run names per outcome; ``failed`` maps name -> one-line reason."""

    completed: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    failed: Dict[str, str] = field(default_factory=dict)
    submitted: List[str] = field(default_factory=list)
    busy: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def is_done(run_dir: str) -> bool:
    return (os.path.isfile(os.path.join(run_dir, "metrics.json"))
            and os.path.isfile(os.path.join(run_dir, "model_final.pth")))


def has_checkpoint(run_dir: str) -> bool:
    """``last_checkpoint`` in the run folder or one level down (pipeline stages)."""
    import glob

    return (os.path.isfile(os.path.join(run_dir, "last_checkpoint"))
            or bool(glob.glob(os.path.join(glob.escape(run_dir), "*", "last_checkpoint"))))


def read_record(run_dir: str) -> Optional[dict]:
    path = os.path.join(run_dir, RECORD_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def change_reason(run: Run) -> Optional[str]:
    """Why the run's folder no longer matches what the sweep would run (module docstring), or None."""
    record = read_record(run.run_dir)
    recorded = (record or {}).get("fingerprint")
    if recorded is not None:
        spec = {k: v for k, v in recorded.items() if k != "opts"}
        now_spec = {k: v for k, v in run.fingerprint.items() if k != "opts"}
        if spec != now_spec:
            diffs = [f"{k}: {spec.get(k)!r} -> {now_spec.get(k)!r}" for k in sorted(set(spec) | set(now_spec))
                     if spec.get(k) != now_spec.get(k)]
            return "; ".join(diffs)
    saved = [(cfg, path) for cfg, path in resolved_configs(run) if os.path.isfile(path)]
    if saved:
        import yaml

        from simformer.config.compare import config_differences

        diffs = []
        for cfg, path in saved:
            try:
                diffs += config_differences(cfg, path)
            except (OSError, yaml.YAMLError) as e:
                return f"{path} unreadable: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        return _shorten(diffs) if diffs else None
    if recorded is not None and recorded != run.fingerprint:
        return f"opts: {recorded.get('opts')!r} -> {run.fingerprint.get('opts')!r}"
    return None


def is_changed(run: Run) -> bool:
    """True if the run folder no longer matches what the sweep would run (:func:`change_reason`)."""
    return change_reason(run) is not None


def resolved_configs(run: Run):
    """``[(cfg, saved config.yaml path)]`` the run trains with: its own, or a pipeline's two stages."""
    from simformer.config import load_cfg

    opts = list(run.opts)
    if run.stage == "pipeline":
        from simformer.retrain import stage_configs

        return [(cfg, os.path.join(folder, "config.yaml"))
                for cfg, folder in stage_configs(run.config, run.run_dir, opts, retrain_config=run.retrain_config)]
    return [(load_cfg(run.config, opts + ["OUTPUT_DIR", run.run_dir]), os.path.join(run.run_dir, "config.yaml"))]


def _shorten(diffs: List[str], keep: int = 3) -> str:
    return "; ".join(diffs[:keep]) + (f"; ... ({len(diffs) - keep} more)" if len(diffs) > keep else "")


def try_lock(run_dir: str, *, tries: int = 1) -> Optional[int]:
    """Take the run's exclusive lock (``flock`` on RUN_DIR/.lock, released when every process holding
    the descriptor has exited); the file descriptor, or None when someone else holds it. ``tries``
    > 1 retries 0.1 s apart (an :func:`is_running` probe holds the lock for an instant)."""
    import fcntl
    import socket

    os.makedirs(run_dir, exist_ok=True)
    fd = os.open(os.path.join(run_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    for attempt in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            if attempt == tries - 1:
                os.close(fd)
                return None
            time.sleep(0.1)
    os.ftruncate(fd, 0)
    os.write(fd, f"{socket.gethostname()} {os.getpid()} {now()}\n".encode())
    return fd


def unlock(fd: Optional[int]) -> None:
    if fd is not None:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def is_running(run_dir: str) -> bool:
    """True while some process (a local sweep's child, a submitit job) holds the run's lock."""
    if not os.path.isfile(os.path.join(run_dir, LOCK_FILE)):
        return False
    fd = try_lock(run_dir)
    unlock(fd)
    return fd is None


def run_state(run: Run) -> str:
    """One of :data:`STATES` (see the module docstring)."""
    if is_changed(run):
        return "changed"
    if is_done(run.run_dir):
        return "done"
    if is_running(run.run_dir):
        return "running"
    if os.path.isfile(os.path.join(run.run_dir, FAILED_FILE)):
        return "failed"
    if has_checkpoint(run.run_dir):
        return "partial"
    return "new"


def failure_reason(run_dir: str) -> str:
    """First line of ``FAILED`` (``exit code N ...``)."""
    try:
        with open(os.path.join(run_dir, FAILED_FILE)) as f:
            return f.readline().strip() or "failed"
    except OSError:
        return "failed"


def check_not_changed(runs: Sequence[Run], sweep_path: str = "sweep") -> None:
    """Raise :class:`SweepError` listing runs whose folder holds a different spec."""
    _refuse_changed([(r, reason) for r in runs for reason in [change_reason(r)] if reason is not None], sweep_path)


def _refuse_changed(changed: Sequence[Tuple[Run, str]], sweep_path: str = "sweep") -> None:
    """Raise :class:`SweepError` naming the ``(run, change reason)`` pairs, if there are any."""
    if changed:
        lines = "\n".join(f"  {r.name}: {r.run_dir}\n    {reason}" for r, reason in changed[:10])
        more = f"\n  ... and {len(changed) - 10} more" if len(changed) > 10 else ""
        raise SweepError(
            f"{sweep_path}: {len(changed)} run folder(s) were made with another config, overrides or stage "
            f"than the sweep (and the config files it names) now gives:\n{lines}{more}\n"
            "Move those folders aside to rerun them, or pin the keys to the runs' values in the sweep "
            "file's opts to keep them.")


def now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def plan(runs: Sequence[Run], *, retry_failed: bool = False) -> Tuple[List[Tuple[Run, bool]], SweepReport]:
    """Split ``runs`` into what to launch ``[(run, resume)]`` and what is already settled
    (done -> skipped, failed and not retried -> failed); any changed run refuses them all, listed."""
    todo, report, changed = [], SweepReport(), []
    for run in runs:
        state = run_state(run)
        if state == "done":
            report.skipped.append(run.name)
        elif state == "running":
            report.busy.append(run.name)
        elif state == "failed" and not retry_failed:
            report.failed[run.name] = failure_reason(run.run_dir) + " (earlier attempt; --retry-failed reruns it)"
        elif state == "changed":
            changed.append((run, change_reason(run)))
        else:
            todo.append((run, has_checkpoint(run.run_dir)))
    _refuse_changed(changed)
    return todo, report


def plan_and_log(runs, retry_failed: bool, log):
    """Refuse changed runs, split the rest into to-do / skipped / busy and log the skipped ones."""
    todo, report = plan(runs, retry_failed=retry_failed)
    for name in report.skipped:
        log(f"[skip] {name}: done")
    for name in report.busy:
        log(f"[skip] {name}: running in another sweep process or job")
    return todo, report
