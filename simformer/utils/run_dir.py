"""Faults around a run folder: one writer at a time, leftovers of a crash, stop signals, fatal errors.

* :func:`lock_run_dir` -- an exclusive, non-blocking ``flock`` on ``DIR/.lock`` (holder's host, pid
  and start time written in it). The kernel drops the lock when the holder exits in any way,
  ``kill -9`` included, so a stale lock cannot outlive its process. A sweep takes the same lock
  for each run and hands it to the child it starts (``$SIMFORMER_RUN_LOCK_FD``); the child
  recognises the inherited lock instead of refusing its own run folder.
* :func:`remove_stale_temps` -- deletes the ``.tmp-*`` files that :func:`simformer.utils.io.atomic_path`
  leaves when a process dies between writing and renaming, and only when no other process holds
  the folder's lock.
* :func:`stop_on_signals` -- SIGUSR2 / SIGTERM / SIGINT only set a flag; the training loop checks
  it after each step, saves a checkpoint atomically and exits cleanly.
* :func:`log_fatal` -- an exception as one line on the ``simformer`` logger (so it reaches
  ``log.txt``), its traceback at DEBUG.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
import signal
import socket
import threading
import time
from typing import Iterator, List, Optional, Sequence, Tuple

LOCK_FILE = ".lock"
LOCK_FD_ENV = "SIMFORMER_RUN_LOCK_FD"
# What a sweep (simformer/sweeps) keeps in a run folder beside the training's own files. Copying a
# finished run (a pipeline's --stage1-from, a sweep's --adopt) leaves them and the lock behind.
SWEEP_RECORD_FILE, SWEEP_LOG_FILE, SWEEP_FAILED_FILE = "sweep_run.json", "stdout.log", "FAILED"
SWEEP_FILES = (LOCK_FILE, SWEEP_RECORD_FILE, SWEEP_LOG_FILE, SWEEP_FAILED_FILE)
# atomic_path's temporaries: tempfile.mkstemp(prefix=".tmp-") = ".tmp-" + 8 characters of
# [a-z0-9_] + the target's extension.
TEMP_PATTERN = re.compile(r"^\.tmp-[a-z0-9_]{8}(\.[A-Za-z0-9]{1,10})?$")

logger = logging.getLogger("simformer")


class RunDirBusyError(ValueError):
    """Another process holds the run folder's lock (a ValueError: the CLI prints it as one line)."""


def _same_file(fd: int, path: str) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def lock_holder(folder: str) -> Optional[Tuple[Optional[int], str]]:
    """``(pid, host)`` written in ``folder/.lock`` (pid None if unreadable), None without a file."""
    try:
        with open(os.path.join(folder, LOCK_FILE)) as f:
            words = f.read().split()
    except OSError:
        return None
    host = words[0] if words else "?"
    pid = int(words[1]) if len(words) > 1 and words[1].isdigit() else None
    return pid, host


class RunLock:
    """A held run-folder lock; :meth:`release` (or leaving ``with``) gives it back.

    ``inherited`` locks were taken by a parent (a sweep) and stay with it: releasing one only
    forgets it here.
    """

    def __init__(self, folder: str, fd: Optional[int], inherited: bool = False):
        self.folder = folder
        self.fd = fd
        self.inherited = inherited

    @property
    def held(self) -> bool:
        return self.fd is not None

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is None or self.inherited:
            return
        import fcntl

        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            os.close(fd)

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _inherited_lock(folder: str) -> Optional[RunLock]:
    value = os.environ.get(LOCK_FD_ENV, "")
    if not value.isdigit():
        return None
    fd = int(value)
    if _same_file(fd, os.path.join(folder, LOCK_FILE)):
        return RunLock(folder, fd, inherited=True)
    return None


def lock_run_dir(folder: str, *, tries: int = 5, retry_s: float = 0.1) -> RunLock:
    """Take ``folder``'s exclusive lock or raise :class:`RunDirBusyError` naming the holder.

    ``tries`` > 1 retries ``retry_s`` apart (a sweep's state probe holds the lock for an instant).
    A lock inherited from the sweep that started this process is accepted as ours.
    """
    import fcntl

    os.makedirs(folder, exist_ok=True)
    inherited = _inherited_lock(folder)
    if inherited is not None:
        return inherited
    path = os.path.join(folder, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    for attempt in range(max(1, tries)):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            if attempt + 1 >= max(1, tries):
                os.close(fd)
                pid, host = lock_holder(folder) or (None, "?")
                who = f"pid {pid}" if pid is not None else "pid unknown"
                if host not in ("?", socket.gethostname()):
                    who += f" on {host}"
                raise RunDirBusyError(f"another simformer process ({who}) is writing to {folder}; "
                                      "wait for it or choose another --output") from None
            time.sleep(retry_s)
    os.ftruncate(fd, 0)
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    os.write(fd, f"{socket.gethostname()} {os.getpid()} {stamp}\n".encode())
    return RunLock(folder, fd)


def is_locked(folder: str) -> bool:
    """True while another process holds ``folder``'s lock (probes it for an instant, writes nothing)."""
    import fcntl

    path = os.path.join(folder, LOCK_FILE)
    if not os.path.isfile(path) or _inherited_lock(folder) is not None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops a probe lock we got
    return False


def remove_stale_temps(folder: str, *, lock: Optional[RunLock] = None, min_age_s: float = 60.0,
                       recursive: bool = True) -> List[str]:
    """Delete our atomic-write temporaries (``.tmp-XXXXXXXX[.ext]``) under ``folder``; returns them.

    Only when nobody else is writing: with ``lock`` (held by the caller) or when the folder's lock
    is free (taken for the clean-up). A folder locked by another process is left alone (returns
    []). Files younger than ``min_age_s`` are kept too (a writer that does not take the lock, e.g.
    an evaluation of a finished run, may be about to rename one). Other files are never touched.
    """
    if not os.path.isdir(folder):
        return []
    own = None
    if lock is None or not lock.held:
        try:
            own = lock_run_dir(folder, tries=1)
        except RunDirBusyError:
            return []
    removed = []
    now = time.time()
    try:
        walker = os.walk(folder) if recursive else [(folder, [], os.listdir(folder))]
        for root, _dirs, files in walker:
            for name in files:
                if not TEMP_PATTERN.match(name):
                    continue
                path = os.path.join(root, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if not os.path.isfile(path) or os.path.islink(path) or now - st.st_mtime < min_age_s:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                    removed.append(path)
    finally:
        if own is not None:
            own.release()
    if removed:
        logger.info("removed %d stale temporary file(s) of an interrupted write under %s", len(removed), folder)
    return removed


# ---------------------------------------------------------------------------------------------
# Stop signals
# ---------------------------------------------------------------------------------------------
STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGUSR2", None), signal.SIGTERM, signal.SIGINT) if s is not None)


class StopFlag:
    """Set by :func:`stop_on_signals`' handlers; ``bool(flag)`` is True once a signal came."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None

    def __bool__(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def set(self, signum: int) -> None:
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals(signals: Sequence[int] = STOP_SIGNALS) -> Iterator[StopFlag]:
    """Within the block, ``signals`` only set the yielded flag; the previous handlers come back
    on exit. Check the flag after each step: save a checkpoint atomically and leave the loop.

    A SIGINT while the flag is already set raises KeyboardInterrupt (a user pressing Ctrl-C twice
    does not want to wait for the step). Outside the main thread (where Python cannot
    install handlers) the flag is never set.
    """
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not flag:
            flag.set(signum)

    previous = {}
    try:
        for s in signals:
            previous[s] = signal.signal(s, handler)
        yield flag
    finally:
        for s, old in previous.items():
            signal.signal(s, old if old is not None else signal.SIG_DFL)


def reset_stop_signals_in_worker() -> None:
    """Call first in a forked worker process (a DataLoader or multiprocessing pool worker).

    A worker forked inside :func:`stop_on_signals` inherits handlers that only set a flag nobody in
    the worker reads: SIGTERM, which ``Pool.terminate()`` and the DataLoader's shutdown use to stop a
    worker, would then be swallowed, and a worker blocked on its task queue's lock would keep the
    parent waiting in ``join()`` forever (seen: a first training on a fresh machine hung while
    counting label pixels). SIGTERM gets its default action back. SIGINT and SIGUSR2 (Ctrl-C reaches
    the whole process group, SLURM signals every process of the job) are ignored: the parent decides
    when to stop, after saving.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for name in ("SIGINT", "SIGUSR2"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


# ---------------------------------------------------------------------------------------------
# Fatal errors
# ---------------------------------------------------------------------------------------------
def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (a KeyError's key without repr quotes)."""
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    else:
        text = str(exc)
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def log_fatal(exc: BaseException, *, logger_name: str = "simformer", context: str = "") -> str:
    """Log ``exc`` as one ERROR line (``context: Type: message``) and its traceback at DEBUG on
    ``logger_name`` (the trainer's logger writes both console and ``log.txt``); returns the line."""
    log = logging.getLogger(logger_name)
    line = one_line(exc)
    if context:
        line = f"{context}: {line}"
    log.error("%s", line)
    log.debug("traceback of the error above", exc_info=(type(exc), exc, exc.__traceback__))
    return line
