"""The training loop: single process or torchrun (DDP), AMP on CUDA, gradient accumulation,
atomic checkpoints with exact resume, metrics.jsonl + TensorBoard, NaN guard, periodic eval.

Output folder (cfg.OUTPUT_DIR)::

    config.yaml        resolved config          run_info.json   git commit, package versions
    log.txt            console log              metrics.jsonl   one JSON line per logged iteration
    model_0001000.pth  periodic checkpoints     model_final.pth final weights
    last_checkpoint    name of the newest       metrics.json    final evaluation (+ per_class_iou.csv)
    events.out.tfevents.*  TensorBoard
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from contextlib import nullcontext
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from simformer.config import dump_cfg, resolve_path
from simformer.data.catalog import get_dataset, get_dataset_dicts
from simformer.data.loader import build_train_loader
from simformer.data.mapper import build_mapper
from simformer.data.reference import ReferenceSampler, cached_pair_statistics
from simformer.data.split import Split, all_base_split, load_split
from simformer.modeling.simformer import build_model
from simformer.utils.env import run_info, seed_all
from simformer.utils.io import atomic_write_json, atomic_write_text

from . import comm
from .checkpoint import Checkpointer, rng_state, set_rng_state, unwrap
from .evaluate import evaluate_model
from .solver import build_lr_scheduler, build_optimizer

logger = logging.getLogger("simformer")

LOG_PERIOD = 20


def setup_logging(output_dir: Optional[str], rank: int = 0) -> None:
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
    if rank != 0:
        logger.addHandler(logging.NullHandler())
        return
    fmt = logging.Formatter("[%(asctime)s simformer] %(message)s", "%H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    logger.addHandler(console)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        fh = logging.FileHandler(os.path.join(output_dir, "log.txt"))
        fh.setFormatter(fmt)
        logger.addHandler(fh)


def resolve_split(cfg, dataset_name: str) -> Split:
    """The configured split (validated against the dataset's classes), or all-base."""
    info = get_dataset(dataset_name)
    if not cfg.WEAKSHOT.SPLIT:
        return all_base_split(info.family, info.classes)
    return load_split(resolve_path(cfg.WEAKSHOT.SPLIT), expected_names=info.classes, expected_dataset=dataset_name)


def cache_dir_for(dataset_name: str) -> str:
    info = get_dataset(dataset_name)
    return os.environ.get("SIMFORMER_CACHE") or os.path.join(os.path.dirname(os.path.normpath(info.sem_seg_root)),
                                                               ".simformer_cache")


class Trainer:
    """``Trainer(cfg).train()``; ``resume=True`` continues from ``OUTPUT_DIR/last_checkpoint``."""

    def __init__(self, cfg, *, resume: bool = False):
        self.cfg = cfg
        self.device = comm.init_distributed(cfg.MODEL.DEVICE)
        self.rank, self.world = comm.get_rank(), comm.get_world_size()
        self.output_dir = cfg.OUTPUT_DIR
        setup_logging(self.output_dir, self.rank)
        self._check_cfg()
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

    # ------------------------------------------------------------------------------------------
    def _check_cfg(self) -> None:
        cfg = self.cfg
        ws = cfg.WEAKSHOT
        if ws.PAIR_MODE not in ("cross", "self", "none"):
            raise ValueError(f"WEAKSHOT.PAIR_MODE must be cross, self or none; got '{ws.PAIR_MODE}'")
        if ws.PAIR_MODE == "none" and (ws.SIMNET.ENABLED or ws.DISTILL.ENABLED):
            raise ValueError("WEAKSHOT.SIMNET / DISTILL need image pairs: set WEAKSHOT.PAIR_MODE to 'cross' "
                             "or 'self', or disable WEAKSHOT.SIMNET.ENABLED and WEAKSHOT.DISTILL.ENABLED.")
        if ws.DISTILL.ENABLED and not ws.SIMNET.ENABLED:
            raise ValueError("WEAKSHOT.DISTILL.ENABLED needs WEAKSHOT.SIMNET.ENABLED (the teacher).")
        per_step = cfg.SOLVER.IMS_PER_BATCH
        denom = comm.get_world_size() * cfg.SOLVER.GRAD_ACCUM_STEPS * (2 if ws.PAIR_MODE != "none" else 1)
        if per_step % denom:
            raise ValueError(f"SOLVER.IMS_PER_BATCH={per_step} must be divisible by world size x "
                             f"SOLVER.GRAD_ACCUM_STEPS x (2 with pairs) = {denom}.")

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

    def _build_loader(self):
        cfg = self.cfg
        records = get_dataset_dicts(self.train_name)
        mask_split = self.split
        if cfg.WEAKSHOT.PSEUDO_LABEL_DIR:
            records = [dict(r, sem_seg_file_name=os.path.join(cfg.WEAKSHOT.PSEUDO_LABEL_DIR, r["image_id"] + ".png"))
                       for r in records]
            missing = [r["sem_seg_file_name"] for r in records if not os.path.isfile(r["sem_seg_file_name"])]
            if missing:
                raise FileNotFoundError(f"WEAKSHOT.PSEUDO_LABEL_DIR lacks {len(missing)} labels, e.g. {missing[0]}; "
                                        "run `simformer pseudo-label` first.")
        if cfg.WEAKSHOT.NOVEL_MASKS or cfg.WEAKSHOT.PSEUDO_LABEL_DIR:
            mask_split = None  # every class keeps its masks
        mapper = build_mapper(cfg, True, mask_split)
        sampler = None
        if cfg.WEAKSHOT.PAIR_MODE != "none":
            from simformer.data.presence import presence_matrix

            cache = cache_dir_for(self.train_name)
            if self.rank == 0:  # rank 0 fills the caches, the others read them
                presence = presence_matrix(self.train_name, cache_dir=cache)
                stats = cached_pair_statistics(presence, self.split.novel_mask(), cache)
            comm.synchronize()
            if self.rank != 0:
                presence = presence_matrix(self.train_name, cache_dir=cache)
                stats = cached_pair_statistics(presence, self.split.novel_mask(), cache)
            sampler = ReferenceSampler(presence=presence, novel_mask=self.split.novel_mask(),
                                       mode=cfg.WEAKSHOT.PAIR_MODE, stats=stats)
            logger.info("Reference pairs (%s): %s", cfg.WEAKSHOT.PAIR_MODE, json.dumps(stats.summary()))
        return build_train_loader(cfg, records=records, mapper=mapper, reference_sampler=sampler,
                                  rank=self.rank, world_size=self.world, start_iter=self.start_iter)

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

    def _metrics_log(self):
        """Open metrics.jsonl, dropping lines past the resumed iteration (written after the checkpoint)."""
        path = os.path.join(self.output_dir, "metrics.jsonl")
        if self.start_iter > 0 and os.path.isfile(path):
            with open(path) as f:
                keep = [line for line in f if line.strip() and json.loads(line).get("iteration", 0) <= self.start_iter]
            atomic_write_text(path, "".join(keep))
        elif self.start_iter == 0 and os.path.isfile(path):
            os.unlink(path)
        return open(path, "a")

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
                if not math.isfinite(float(total.detach())):
                    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
                    raise FloatingPointError(
                        f"Loss is {float(total.detach())} at iteration {iteration} (non-finite terms: {bad}; all terms: {values}). "
                        f"Training stopped; the last good checkpoint is {self.checkpointer.last_checkpoint()}. "
                        "Lower SOLVER.BASE_LR or check the data, then run again with --resume.")
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
        loader_iter = iter(self._build_loader())
        if self._resume_rng is not None:
            set_rng_state(self._resume_rng)
        self.ddp_model.train()
        writer = None
        log_file = None
        if self.rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(self.output_dir, purge_step=self.start_iter)
            log_file = self._metrics_log()
        logger.info("Training %s on %s (%d classes, %d novel) for %d iterations from %d, %d rank(s), device %s",
                    cfg.MODEL.BACKBONE.NAME, self.train_name, self.num_classes, len(self.split.novel), max_iter,
                    self.start_iter, self.world, self.device)
        show = self.rank == 0 and os.environ.get("SIMFORMER_PROGRESS", "1") != "0"
        bar = tqdm(total=max_iter, initial=self.start_iter, desc="train", disable=not show, dynamic_ncols=True)
        results = {}
        start_time = time.perf_counter()
        step_times = []
        try:
            for it in range(self.start_iter, max_iter):
                t0 = time.perf_counter()
                logged = self.run_step(loader_iter, it)
                step_times.append(time.perf_counter() - t0)
                iteration = it + 1
                bar.update(1)
                if iteration % LOG_PERIOD == 0 or iteration == max_iter:
                    logged = comm.all_reduce_mean(logged)
                    if self.rank == 0:
                        record = {"iteration": iteration, "lr": self.optimizer.param_groups[0]["lr"],
                                  "time_per_iter": float(np.median(step_times[-LOG_PERIOD:])), **logged}
                        log_file.write(json.dumps(record) + "\n")
                        log_file.flush()
                        for k, v in record.items():
                            if k != "iteration":
                                writer.add_scalar(k, v, iteration)
                        bar.set_postfix(loss=f"{logged['total_loss']:.3f}")
                if cfg.SOLVER.CHECKPOINT_PERIOD > 0 and iteration % cfg.SOLVER.CHECKPOINT_PERIOD == 0 and iteration < max_iter:
                    self.save(f"model_{iteration:07d}", iteration)
                if cfg.TEST.EVAL_PERIOD > 0 and iteration % cfg.TEST.EVAL_PERIOD == 0 and iteration < max_iter and cfg.DATASETS.TEST:
                    res = self.evaluate(out_dir=None, verbose=False)
                    if self.rank == 0:
                        log_file.write(json.dumps({"iteration": iteration, "eval": _scalars(res)}) + "\n")
                        log_file.flush()
                        for k, v in _scalars(res).items():
                            writer.add_scalar(f"eval/{k}", v, iteration)
            bar.close()
            self.save("model_final", max_iter)
            if cfg.DATASETS.TEST:
                results = self.evaluate(out_dir=self.output_dir)
                if self.rank == 0:
                    log_file.write(json.dumps({"iteration": max_iter, "eval": _scalars(results)}) + "\n")
        finally:
            bar.close()
            if writer is not None:
                writer.close()
            if log_file is not None:
                log_file.close()
        logger.info("Training finished in %.1f s (median step %.3f s)", time.perf_counter() - start_time,
                    float(np.median(step_times)) if step_times else float("nan"))
        return results

    def evaluate(self, out_dir: Optional[str] = None, verbose: bool = True) -> dict:
        return evaluate_model(unwrap(self.model), self.cfg, self.cfg.DATASETS.TEST[0], self.split,
                              out_dir=out_dir, verbose=verbose)


def _scalars(results: dict) -> dict:
    return {k: v for k, v in results.items() if isinstance(v, (int, float)) and v is not None}
