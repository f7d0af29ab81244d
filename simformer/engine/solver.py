"""AdamW with MaskFormer's parameter groups and the warmup + poly learning-rate schedule."""
from __future__ import annotations

import math

import torch
from torch import nn

NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm,
              nn.InstanceNorm2d, nn.LocalResponseNorm)


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """Groups: backbone parameters get lr x BACKBONE_MULTIPLIER; norm layers and embeddings get
    their own weight decay (0 by default); everything else BASE_LR / WEIGHT_DECAY."""
    base_lr, wd = cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY
    groups = {}
    seen = set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            lr = base_lr * (cfg.SOLVER.BACKBONE_MULTIPLIER if module_name.split(".")[0] == "backbone"
                            or ".backbone." in f".{module_name}." else 1.0)
            if isinstance(module, NORM_TYPES):
                decay = cfg.SOLVER.WEIGHT_DECAY_NORM
            elif isinstance(module, nn.Embedding):
                decay = cfg.SOLVER.WEIGHT_DECAY_EMBED
            else:
                decay = wd
            groups.setdefault((lr, decay), []).append(param)
    param_groups = [{"params": p, "lr": lr, "weight_decay": d, "initial_lr": lr} for (lr, d), p in groups.items()]
    return torch.optim.AdamW(param_groups, lr=base_lr, weight_decay=wd)


def lr_factor(it: int, *, max_iter: int, power: float, warmup_iters: int, warmup_factor: float) -> float:
    """Multiplier of the initial lr at iteration ``it``: linear warmup, then (1 - it/max)^power."""
    poly = math.pow(max(0.0, 1.0 - it / max_iter), power)
    if it < warmup_iters:
        alpha = it / warmup_iters
        return poly * (warmup_factor * (1 - alpha) + alpha)
    return poly


def build_lr_scheduler(cfg, optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    kw = dict(max_iter=cfg.SOLVER.MAX_ITER, power=cfg.SOLVER.POLY_LR_POWER,
              warmup_iters=cfg.SOLVER.WARMUP_ITERS, warmup_factor=cfg.SOLVER.WARMUP_FACTOR)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, **kw))
