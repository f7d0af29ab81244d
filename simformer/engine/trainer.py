"""The training loop: single process or torchrun (DDP), AMP on CUDA, gradient accumulation,
atomic checkpoints with exact resume. The loop is small (``run_step``); every periodic action
(NaN guard, checkpoint, eval, metrics.jsonl + TensorBoard) is a hook in ``hooks.py``, so a new one
is a hook, not an edit of the loop.

Output folder (cfg.OUTPUT_DIR)::

    config.yaml        resolved config          run_info.json   git commit, package versions
    log.txt            console log              metrics.jsonl   one JSON line per logged iteration
    model_0001000.pth  periodic checkpoints     model_final.pth final weights
    last_checkpoint    name of the newest       metrics.json    final evaluation (+ per_class_iou.csv)
    events.out.tfevents.*  TensorBoard
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
from simformer.data.catalog import get_dataset
from simformer.data.class_split import resolve_split
from simformer.evaluation.evaluator import evaluate_model
from simformer.modeling.meta_arch import build_model
from simformer.utils import comm
from simformer.utils.env import run_info, seed_all
from simformer.utils.io import atomic_write_json
from simformer.utils.logger import setup_logging

from .checkpoint import Checkpointer, rng_state, set_rng_state, unwrap
from .hooks import EvalHook, HookBase, IterationTimer, MetricsWriter, NanGuard, PeriodicCheckpointer
from .solver import build_lr_scheduler, build_optimizer

logger = logging.getLogger("simformer")

LOG_PERIOD = 20


class Trainer:
    """``Trainer(cfg).train()``; ``resume=True`` continues from ``OUTPUT_DIR/last_checkpoint``."""

    def __init__(self, cfg, *, resume: bool = False):
        self.cfg = cfg
        self.device = comm.init_distributed(cfg.MODEL.DEVICE)
        self.rank, self.world = comm.get_rank(), comm.get_world_size()
        self.output_dir = cfg.OUTPUT_DIR
        setup_logging(self.output_dir, self.rank)
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
        return [NanGuard(), IterationTimer(), PeriodicCheckpointer(cfg.SOLVER.CHECKPOINT_PERIOD, max_iter),
                EvalHook(cfg.TEST.EVAL_PERIOD, max_iter), self.metrics]

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
                     "start_iter": self.start_iter})
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
            self.save("model_final", max_iter)
            if cfg.DATASETS.TEST:
                results = self.evaluate(out_dir=self.output_dir)
                self.metrics.write_eval(max_iter, results)
        finally:
            for h in self.hooks:
                h.after_train()
        logger.info("Training finished in %.1f s (median step %.3f s)", time.perf_counter() - start_time,
                    float(np.median(self.step_times)) if self.step_times else float("nan"))
        return results

    def evaluate(self, out_dir: Optional[str] = None, verbose: bool = True) -> dict:
        return evaluate_model(unwrap(self.model), self.cfg, self.cfg.DATASETS.TEST[0], self.split,
                              out_dir=out_dir, verbose=verbose)
