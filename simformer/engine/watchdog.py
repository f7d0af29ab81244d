"""Names the rank a multi-process run is waiting for.

A rank that stops answering (frozen, swapped out, stuck in I/O) leaves the others blocked in the
next collective until the process-group timeout (``DIST_TIMEOUT_S``). :class:`RankWatchdog` makes
that visible: each rank publishes, in the process group's key-value store, a sign of life (from a
background thread, so a rank blocked inside a collective still counts as alive) and its iteration
(from the loop). When a rank's own iteration has lasted longer than ``warn_s``, its thread reads the
others' entries and logs the ranks that gave no sign of life or are behind, e.g.::

    rank 0 has waited 12 s in iteration 2 for rank 1 (no sign of life for 11 s, last seen in iteration 2)

The same description is left in ``trainer.storage["waiting_for"]``; the trainer adds it to the
fatal error when the collective finally times out.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Dict, List, Optional, Tuple

from .hooks import HookBase

logger = logging.getLogger("simformer")

_KEY = "simformer/watchdog/{}"


def warn_after(timeout_s: float) -> float:
    """Seconds of waiting before a rank names the ranks it waits for: a quarter of the timeout, at most 60."""
    return max(0.5, min(60.0, timeout_s / 4))


def lagging(me: int, my_iter: int, now: float, states: Dict[int, Tuple[float, int]], stale_s: float) -> List[str]:
    """Descriptions of the ranks (other than ``me``) that gave no sign of life for ``stale_s`` or are
    at an earlier iteration; ``states``: rank -> (last sign of life, iteration)."""
    out = []
    for rank in sorted(states):
        if rank == me:
            continue
        seen, it = states[rank]
        if now - seen > stale_s:
            out.append(f"rank {rank} (no sign of life for {now - seen:.0f} s, last seen in iteration {it})")
        elif it < my_iter:
            out.append(f"rank {rank} (alive, still in iteration {it})")
    return out


class RankWatchdog(HookBase):
    """A hook for multi-process runs (see the module docstring); does nothing in a single process."""

    def __init__(self, warn_s: float, store=None):
        self.warn_s = float(warn_s)
        self.beat_s = max(0.2, self.warn_s / 4)
        self._store = store
        self._iter = 0
        self._step_start: Optional[float] = None
        self._last_warning = 0.0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # -- store --------------------------------------------------------------------------------
    def _publish(self) -> None:
        self._store.set(_KEY.format(self.trainer.rank), f"{time.time():.3f} {self._iter}")

    def _read(self) -> Dict[int, Tuple[float, int]]:
        states = {}
        for rank in range(self.trainer.world):
            key = _KEY.format(rank)
            if self._store.check([key]):
                seen, it = self._store.get(key).decode().split()
                states[rank] = (float(seen), int(it))
        return states

    # -- hook ---------------------------------------------------------------------------------
    def before_train(self) -> None:
        if self.trainer.world == 1:
            return
        if self._store is None:
            from torch.distributed import distributed_c10d

            self._store = distributed_c10d._get_default_store()
        self._iter = self.trainer.iter
        self._publish()
        self._thread = threading.Thread(target=self._run, name="simformer-rank-watchdog", daemon=True)
        self._thread.start()

    def before_step(self) -> None:
        self._iter = self.trainer.iter
        self._step_start = time.monotonic()

    def after_step(self) -> None:
        self._step_start = None
        self.trainer.storage.pop("waiting_for", None)

    def after_train(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.beat_s):
            try:
                self._publish()
                self._check()
            except Exception:  # the store is gone (a rank ended the run): nothing left to watch
                return

    def _check(self) -> None:
        start = self._step_start
        if start is None:
            return
        waited = time.monotonic() - start
        if waited < self.warn_s or time.monotonic() - self._last_warning < self.warn_s:
            return
        behind = lagging(self.trainer.rank, self._iter, time.time(), self._read(), stale_s=2 * self.beat_s + 1)
        if not behind:
            return
        self._last_warning = time.monotonic()
        message = f"rank {self.trainer.rank} has waited {waited:.0f} s in iteration {self._iter} for " + ", ".join(behind)
        self.trainer.storage["waiting_for"] = ", ".join(behind)
        if self.trainer.rank == 0:
            logger.warning(message)
        else:  # the other ranks' logger is silent
            print(f"[simformer] {message}", file=sys.stderr, flush=True)
