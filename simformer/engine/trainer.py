"""The training loop: single process or torchrun (DDP), AMP on CUDA, gradient accumulation,
atomic checkpoints with exact resume. The loop is small (``run_step``); every periodic action
(NaN guard, checkpoint, eval, metrics.jsonl + TensorBoard) is a hook in ``hooks.py``, so a new one
is a hook, not an edit of the loop.

Output folder (cfg.OUTPUT_DIR)::

    config.yaml        resolved config          run_info.json   git commit, versions, CPU, data fingerprint
    log.txt            console log              metrics.jsonl   one JSON line per logged iteration
    model_0001000.pth  periodic checkpoints     model_final.pth final weights
    last_checkpoint    name of the newest       metrics.json    final evaluation (+ per_class_iou.csv)
    events.out.tfevents.*  TensorBoard              .lock           held while a process writes here

Faults: the folder is locked and prepared by ``run_folder.py`` (a second writer refused, stale
temporaries removed, same config resumed, another run moved aside); SIGUSR2 / SIGTERM / SIGINT
save a checkpoint after the current step and raise :class:`TrainingStopped`; every test dataset
is checked before iteration 0; a fatal error is logged to log.txt before it propagates.
"""
from __future__ import annotations

import logging
import os
import time
from contextlib import nullcontext
from typing import List, Optional

import numpy as np
import torch
import torch.distributed as dist

from simformer.config import dump_cfg
from simformer.data.build import build_train_loader
from simformer.data.catalog import dataset_fingerprint, get_dataset, get_dataset_dicts
from simformer.data.class_split import resolve_split
from simformer.evaluation.evaluator import evaluate_model
from simformer.modeling.meta_arch import build_model
from simformer.utils import comm
from simformer.utils.env import run_info, seed_all
from simformer.utils.io import atomic_write_json
from simformer.utils.logger import setup_logging
from simformer.utils.run_dir import log_fatal, stop_on_signals

from . import run_folder
from .checkpoint import Checkpointer, rng_state, set_rng_state, unwrap
from .hooks import EvalHook, HookBase, IterationTimer, MetricsWriter, NanGuard, PeriodicCheckpointer
from .solver import build_lr_scheduler, build_optimizer
from .watchdog import RankWatchdog, warn_after

logger = logging.getLogger("simformer")

LOG_PERIOD = 20


class TrainingStopped(KeyboardInterrupt):
    """Training stopped by a signal after saving a checkpoint; ``exit_code`` = 128 + signal number
    (the shell's convention), the message says how to continue."""

    def __init__(self, message: str, signum: int, iteration: int, checkpoint: str):
        super().__init__(message)
        self.signum, self.iteration, self.checkpoint = signum, iteration, checkpoint
        self.exit_code = 128 + int(signum)


def check_test_datasets(names, num_classes: int) -> None:
    """Every DATASETS.TEST entry is registered, has records and ``num_classes`` classes (checked
    before iteration 0 instead of failing after the last one)."""
    for name in names:
        info = get_dataset(name)  # KeyError naming the registered ones
        if info.num_classes != num_classes:
            raise ValueError(f"DATASETS.TEST '{name}' has {info.num_classes} classes but the model is trained on "
                             f"{num_classes}; evaluate on a dataset of the same family")
        if not get_dataset_dicts(name):
            raise ValueError(f"DATASETS.TEST '{name}' has no images left (all skipped); nothing to evaluate")


class Trainer:
    """``Trainer(cfg).train()``; ``resume=True`` continues from ``OUTPUT_DIR/last_checkpoint``.

    ``manage_output`` (default): without ``resume``, a checkpoint of the same config in OUTPUT_DIR is
    resumed and any other earlier run moved aside (see ``run_folder.py``); ``force_config`` lets
    ``resume`` overwrite a config.yaml that differs.
    """

    def __init__(self, cfg, *, resume: bool = False, force_config: bool = False, manage_output: bool = True):
        self.cfg = cfg
        self.device = comm.init_distributed(cfg.MODEL.DEVICE, timeout_s=cfg.DIST_TIMEOUT_S)
        self.rank, self.world = comm.get_rank(), comm.get_world_size()
        self.output_dir = cfg.OUTPUT_DIR
        self.lock = run_folder.acquire(self.output_dir) if self.rank == 0 else None  # before anything is written
        self._logging = False
        try:
            resume = self._prepare_output(resume, force_config, manage_output)
            self._setup(resume)
        except BaseException as e:
            if not self._logging:  # refused before the logger started: still say why in log.txt
                setup_logging(self.output_dir, self.rank)
            log_fatal(e, context="cannot start training")
            self.close()
            raise

    def _prepare_output(self, resume: bool, force_config: bool, manage_output: bool) -> bool:
        """Rank 0 decides (run_folder.prepare) and tells the others; then the logger starts."""
        decision = [resume, ""]
        if self.rank == 0 and (manage_output or resume):
            decision = list(run_folder.prepare(self.output_dir, self.cfg, resume=resume, force_config=force_config,
                                               lock=self.lock))
        if self.world > 1:
            dist.broadcast_object_list(decision, src=0)
        setup_logging(self.output_dir, self.rank)
        self._logging = True
        if decision[1]:
            logger.info("%s", decision[1])
        return bool(decision[0])

    def close(self) -> None:
        """Give the output folder's lock back (done by ``train()``; call it after ``evaluate()`` alone)."""
        if self.lock is not None:
            run_folder.release(self.output_dir)
            self.lock = None

    def _setup(self, resume: bool) -> None:
        cfg = self.cfg
        torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK

        if len(cfg.DATASETS.TRAIN) != 1 or len(cfg.DATASETS.TEST) > 1:
            raise ValueError("DATASETS.TRAIN must name exactly one dataset and DATASETS.TEST at most one "
                             f"(got {list(cfg.DATASETS.TRAIN)} / {list(cfg.DATASETS.TEST)})")
        self.train_name = cfg.DATASETS.TRAIN[0]
        self.info = get_dataset(self.train_name)
        self.split = resolve_split(cfg, self.train_name)
        self.num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES if cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES > 0 else self.info.num_classes
        if self.num_classes != self.info.num_classes:
            raise ValueError(f"MODEL.SEM_SEG_HEAD.NUM_CLASSES={self.num_classes} but dataset "
                             f"'{self.train_name}' has {self.info.num_classes} classes; set it to -1.")
        check_test_datasets(cfg.DATASETS.TEST, self.num_classes)

        seed_all(cfg.SEED)  # identical initialisation on every rank
        self.model = build_model(cfg, self.num_classes, self.split).to(self.device)
        self.optimizer = build_optimizer(cfg, self.model)
        self.scheduler = build_lr_scheduler(cfg, self.optimizer)
        self.checkpointer = Checkpointer(self.output_dir, keep=cfg.SOLVER.CHECKPOINT_KEEP)
        self.use_amp = cfg.SOLVER.AMP.ENABLED and self.device.type == "cuda"
        self.start_iter = 0
        self._resume_rng = None
        if resume:
            self._resume()
        elif cfg.MODEL.WEIGHTS:
            Checkpointer.load(cfg.MODEL.WEIGHTS, model=self.model)
        # Per-rank streams for dropout / point sampling, after init so all ranks share weights.
        if self.start_iter == 0:
            torch.manual_seed(cfg.SEED * 1000 + self.rank)
        self.ddp_model = self.model
        if self.world > 1:
            # Buffers (SimNet's BatchNorm statistics) are broadcast from rank 0 each step so that
            # every rank's distillation teacher is the same network.
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.iter = self.start_iter
        self.storage: dict = {}  # what one hook leaves for another within a step ("losses", "eval")
        self.step_times: List[float] = []
        self.hooks: List[HookBase] = []
        self.register_hooks(self.build_hooks())

    # ------------------------------------------------------------------------------------------
    def build_hooks(self) -> List[HookBase]:
        """The default hooks, in call order; MetricsWriter last (it writes what the others stored)."""
        cfg, max_iter = self.cfg, self.cfg.SOLVER.MAX_ITER
        self.metrics = MetricsWriter(LOG_PERIOD, max_iter)
        return [RankWatchdog(warn_after(cfg.DIST_TIMEOUT_S)), NanGuard(), IterationTimer(),
                PeriodicCheckpointer(cfg.SOLVER.CHECKPOINT_PERIOD, max_iter), EvalHook(cfg.TEST.EVAL_PERIOD, max_iter),
                self.metrics]

    def register_hooks(self, hooks: List[HookBase]) -> None:
        for h in hooks:
            h.trainer = self
        self.hooks.extend(hooks)

    def _resume(self) -> None:
        path = self.checkpointer.last_checkpoint()
        if path is None:
            logger.info("--resume: no checkpoint in %s, starting from scratch", self.output_dir)
            return
        ckpt = Checkpointer.load(path, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler)
        self.start_iter = int(ckpt["iteration"])
        states = ckpt.get("rng_all")
        # Applied in train() once the data loader exists: creating its iterator draws from the
        # global RNG, which the uninterrupted run did before its first iteration too.
        self._resume_rng = states[self.rank] if states and len(states) == self.world else ckpt.get("rng")
        logger.info("Resumed from %s at iteration %d", path, self.start_iter)

    # ------------------------------------------------------------------------------------------
    def write_run_files(self) -> None:
        if self.rank != 0:
            return
        os.makedirs(self.output_dir, exist_ok=True)
        dump_cfg(self.cfg, os.path.join(self.output_dir, "config.yaml"))
        info = run_info()
        info.update({"world_size": self.world, "device": str(self.device), "split": self.split.to_json(),
                     "start_iter": self.start_iter,
                     # the registered datasets' files; a re-training's pseudo labels replace the
                     # training labels after this (data/build.py train_records) and are not in it
                     "datasets": {name: dataset_fingerprint(get_dataset_dicts(name))
                                  for name in [self.train_name, *self.cfg.DATASETS.TEST]}})
        atomic_write_json(os.path.join(self.output_dir, "run_info.json"), info)

    def save(self, name: str, iteration: int) -> str:
        states = [None] * self.world
        if self.world > 1:
            dist.all_gather_object(states, rng_state())
        else:
            states = [rng_state()]
        path = None
        if self.rank == 0:
            path = self.checkpointer.save(name, model=self.model, optimizer=self.optimizer,
                                          scheduler=self.scheduler, iteration=iteration,
                                          extra={"rng_all": states, "num_classes": self.num_classes,
                                                 "split": self.split.to_json()})
        comm.synchronize()
        return path

    def run_step(self, loader_iter, iteration: int) -> dict:
        """One optimisation step (``SOLVER.GRAD_ACCUM_STEPS`` micro-batches) -> averaged loss terms."""
        cfg = self.cfg
        accum = cfg.SOLVER.GRAD_ACCUM_STEPS
        self.optimizer.zero_grad(set_to_none=True)
        logged = {}
        for micro in range(accum):
            batch = next(loader_iter)
            sync = nullcontext() if (micro == accum - 1 or self.world == 1) else self.ddp_model.no_sync()
            amp = torch.autocast("cuda", dtype=torch.bfloat16) if self.use_amp else nullcontext()
            with sync:
                with amp:
                    losses = self.ddp_model(batch)
                total = sum(losses.values())
                values = {k: float(v.detach()) for k, v in losses.items()}
                for h in self.hooks:
                    h.after_forward(iteration, values)
                (total / accum).backward()
            for k, v in values.items():
                logged[k] = logged.get(k, 0.0) + v / accum
        if cfg.SOLVER.CLIP_GRADIENTS.ENABLED and cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE,
                                           norm_type=cfg.SOLVER.CLIP_GRADIENTS.NORM_TYPE)
        self.optimizer.step()
        self.scheduler.step()
        logged["total_loss"] = sum(v for k, v in logged.items())
        return logged

    def train(self) -> dict:
        """Run from ``start_iter`` to SOLVER.MAX_ITER, save model_final, evaluate; always gives the
        folder's lock back. Raises :class:`TrainingStopped` after a stop signal (checkpoint saved)."""
        try:
            with stop_on_signals() as stop:
                return self._train(stop)
        except TrainingStopped as e:
            logger.warning("%s", e)
            raise
        except KeyboardInterrupt:
            logger.error("interrupted during iteration %d (no checkpoint saved; the last one is %s)", self.iter,
                         self.checkpointer.last_checkpoint())
            raise
        except BaseException as e:
            waiting = self.storage.get("waiting_for")
            log_fatal(e, context=f"training stopped at iteration {self.iter}"
                                 + (f" while waiting for {waiting}" if waiting else ""))
            if waiting and isinstance(e, RuntimeError):  # the collective timed out: name the rank
                raise TimeoutError(f"rank {self.rank} gave up after DIST_TIMEOUT_S={self.cfg.DIST_TIMEOUT_S} s in "
                                   f"iteration {self.iter} waiting for {waiting} "
                                   f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})") from e
            raise
        finally:
            self.close()

    def _stop_requested(self, stop) -> int:
        """The signal that asks every rank to stop (0 = none); all ranks agree, so that they save the
        same iteration and leave together."""
        signum = int(stop.signum or 0)
        if self.world > 1:
            t = torch.tensor([signum], dtype=torch.int64)
            if dist.get_backend() == "nccl":
                t = t.cuda()
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            signum = int(t.item())
        return signum

    def _save_on_stop(self, signum: int) -> None:
        import signal

        name = f"model_{self.iter:07d}"
        last = self.checkpointer.last_checkpoint()
        path = last if last and os.path.basename(last) == name + ".pth" else self.save(name, self.iter)
        if path is None:  # ranks > 0
            path = os.path.join(self.output_dir, name + ".pth")
        raise TrainingStopped(f"stopped by {signal.Signals(signum).name} after iteration {self.iter} of "
                              f"{self.cfg.SOLVER.MAX_ITER}: checkpoint {path} saved; run the same command with "
                              "--resume (or without it: the same config resumes) to continue",
                              signum, self.iter, path)

    def _train(self, stop) -> dict:
        cfg = self.cfg
        self.write_run_files()
        max_iter = cfg.SOLVER.MAX_ITER
        loader_iter = iter(build_train_loader(cfg, self.split, start_iter=self.start_iter,
                                              rank=self.rank, world_size=self.world))
        if self._resume_rng is not None:
            set_rng_state(self._resume_rng)
        self.ddp_model.train()
        logger.info("Training %s on %s (%d classes, %d novel) for %d iterations from %d, %d rank(s), device %s",
                    cfg.MODEL.BACKBONE.NAME, self.train_name, self.num_classes, len(self.split.novel), max_iter,
                    self.start_iter, self.world, self.device)
        results = {}
        start_time = time.perf_counter()
        try:
            for h in self.hooks:
                h.before_train()
            for it in range(self.start_iter, max_iter):
                self.iter = it
                for h in self.hooks:
                    h.before_step()
                self.storage["losses"] = self.run_step(loader_iter, it)
                self.iter = it + 1
                for h in self.hooks:
                    h.after_step()
                signum = self._stop_requested(stop)
                if signum and self.iter < max_iter:
                    self._save_on_stop(signum)
            self.save("model_final", max_iter)
            if cfg.DATASETS.TEST:
                results = self.evaluate(out_dir=self.output_dir)
                self.metrics.write_eval(max_iter, results, tensorboard=True)  # the final one reaches TensorBoard too
        finally:
            for h in self.hooks:
                h.after_train()
        logger.info("Training finished in %.1f s (median step %.3f s)", time.perf_counter() - start_time,
                    float(np.median(self.step_times)) if self.step_times else float("nan"))
        return results

    def evaluate(self, out_dir: Optional[str] = None, verbose: bool = True) -> dict:
        return evaluate_model(unwrap(self.model), self.cfg, self.cfg.DATASETS.TEST[0], self.split,
                              out_dir=out_dir, verbose=verbose)
