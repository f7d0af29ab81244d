"""Training hooks (detectron2's ``HookBase``): every periodic action of the loop is a hook.

The loop (:meth:`simformer.engine.trainer.Trainer.train`) calls, for each hook in order,
``before_train()``, then per iteration ``before_step()``, ``after_forward(iteration, losses)``
(inside ``run_step``, once per micro-batch, before backward) and ``after_step()``, and finally
``after_train()`` (also when training stops with an exception). ``self.trainer`` is set by
``Trainer.register_hooks``; ``trainer.iter`` is the number of finished iterations.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Dict

import numpy as np

from simformer.utils import comm
from simformer.utils.env import preserved_rng
from simformer.utils.io import atomic_write_text


class HookBase:
    trainer = None

    def before_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_forward(self, iteration: int, losses: Dict[str, float]) -> None:
        pass

    def after_step(self) -> None:
        pass

    def after_train(self) -> None:
        pass


def _due(iteration: int, period: int, max_iter: int) -> bool:
    """A periodic action at ``iteration`` (not at the last one, which the loop handles itself)."""
    return period > 0 and iteration % period == 0 and iteration < max_iter


class NanGuard(HookBase):
    """Stop at the first non-finite loss (before its backward), naming the terms and the last
    good checkpoint."""

    def after_forward(self, iteration: int, losses: Dict[str, float]) -> None:
        total = sum(losses.values())
        if math.isfinite(total):
            return
        bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
        raise FloatingPointError(
            f"Loss is {total} at iteration {iteration} (non-finite terms: {bad}; all terms: {losses}). "
            f"Training stopped; the last good checkpoint is {self.trainer.checkpointer.last_checkpoint()}. "
            "Lower SOLVER.BASE_LR or check the data, then run again with --resume.")


class IterationTimer(HookBase):
    """Wall time of each ``run_step`` into ``trainer.step_times``."""

    def before_step(self) -> None:
        self._t0 = time.perf_counter()

    def after_step(self) -> None:
        self.trainer.step_times.append(time.perf_counter() - self._t0)


class PeriodicCheckpointer(HookBase):
    """``model_<iter>.pth`` every ``period`` iterations (SOLVER.CHECKPOINT_PERIOD; 0 = off)."""

    def __init__(self, period: int, max_iter: int):
        self.period, self.max_iter = int(period), int(max_iter)

    def after_step(self) -> None:
        it = self.trainer.iter
        if _due(it, self.period, self.max_iter):
            self.trainer.save(f"model_{it:07d}", it)


class EvalHook(HookBase):
    """Evaluate on DATASETS.TEST[0] every ``period`` iterations (TEST.EVAL_PERIOD; 0 = off); the
    scalars go to ``trainer.storage["eval"]`` for :class:`MetricsWriter`. The global generators
    are restored afterwards (the evaluation loader draws its seed from them), so a run trains the
    same with or without periodic evaluation."""

    def __init__(self, period: int, max_iter: int):
        self.period, self.max_iter = int(period), int(max_iter)

    def after_step(self) -> None:
        it = self.trainer.iter
        if _due(it, self.period, self.max_iter) and self.trainer.cfg.DATASETS.TEST:
            with preserved_rng():
                self.trainer.storage["eval"] = self.trainer.evaluate(out_dir=None, verbose=False)


def scalars(results: dict) -> dict:
    return {k: v for k, v in results.items() if isinstance(v, (int, float)) and v is not None}


class MetricsWriter(HookBase):
    """Every ``period`` iterations (and the last): the rank-averaged loss terms, lr and median
    step time as one ``metrics.jsonl`` line and TensorBoard scalars; evaluation results left in
    ``trainer.storage["eval"]`` as an ``{"iteration", "eval"}`` line. Also the progress bar.
    Register it last, so that it sees what the other hooks stored in the same step."""

    def __init__(self, period: int, max_iter: int):
        self.period, self.max_iter = int(period), int(max_iter)
        self.writer = self.log_file = self.bar = None

    def before_train(self) -> None:
        from tqdm import tqdm

        t = self.trainer
        if t.rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(t.output_dir, purge_step=t.start_iter)
            self.log_file = self._open_log()
        show = t.rank == 0 and os.environ.get("SIMFORMER_PROGRESS", "1") != "0"
        self.bar = tqdm(total=self.max_iter, initial=t.start_iter, desc="train", disable=not show,
                        dynamic_ncols=True)

    def _open_log(self):
        """Open metrics.jsonl, dropping lines past the resumed iteration (written after the checkpoint);
        resumed from model_final, also the final evaluation's line (the trainer evaluates again)."""
        start = self.trainer.start_iter
        path = os.path.join(self.trainer.output_dir, "metrics.jsonl")
        if start > 0 and os.path.isfile(path):
            def kept(record: dict) -> bool:
                it = record.get("iteration", 0)
                return it < start or (it == start and not (start >= self.max_iter and "eval" in record))

            with open(path) as f:
                keep = [line for line in f if line.strip() and kept(json.loads(line))]
            atomic_write_text(path, "".join(keep))
        elif start == 0 and os.path.isfile(path):
            os.unlink(path)
        return open(path, "a")

    def after_step(self) -> None:
        t = self.trainer
        it = t.iter
        self.bar.update(1)
        if it % self.period == 0 or it == self.max_iter:
            logged = comm.all_reduce_mean(t.storage["losses"])
            if t.rank == 0:
                record = {"iteration": it, "lr": t.optimizer.param_groups[0]["lr"],
                          "time_per_iter": float(np.median(t.step_times[-self.period:])), **logged}
                self._write(record)
                for k, v in record.items():
                    if k != "iteration":
                        self.writer.add_scalar(k, v, it)
                self.bar.set_postfix(loss=f"{logged['total_loss']:.3f}")
        results = t.storage.pop("eval", None)
        if results is not None:
            self.write_eval(it, results, tensorboard=True)

    def write_eval(self, iteration: int, results: dict, tensorboard: bool = False) -> None:
        if self.trainer.rank != 0:
            return
        self._write({"iteration": iteration, "eval": scalars(results)})
        if tensorboard:
            for k, v in scalars(results).items():
                self.writer.add_scalar(f"eval/{k}", v, iteration)

    def _write(self, record: dict) -> None:
        self.log_file.write(json.dumps(record) + "\n")
        self.log_file.flush()

    def after_train(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if self.log_file is not None:
            self.log_file.close()
