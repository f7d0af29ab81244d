"""Episodic training of MM-Former's matching module on base classes (stage 2 of the paper;
docs/mm_former.md).

The proposal source is frozen (a model trained with the fold's novel classes dropped, so that they
stay unseen); every training image runs through it once and is cached: its proposals as 8-bit
probabilities (error <= 1/510; a 128 px ToyScenes image with 32 proposals takes 0.5 MB), the
query prototypes of its proposals and the chosen feature maps. The similarities S of an episode
depend on frozen features only, so they are computed once per episode; the steps train the MLP.

Output folder (every file atomic): matcher.pth (state dict + N + what rebuilds the method),
metrics.json, config.yaml, run_info.json, episodes.json.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from .base import FOREGROUND_THRESHOLD, View
from .episodes import class_pixel_counts, sample_episodes
from .mm_former import (MaskMatchingModule, co_loss, match_prototypes, matcher_loss, query_prototypes,
                        save_matcher, self_align, soft_iou, support_prototypes)
from .proposals import ModelProposalSource, load_view

logger = logging.getLogger("simformer")


@dataclass
class _Entry:
    features: View          # the chosen feature maps (self-aligned if asked), no proposals
    proposals: torch.Tensor  # uint8 [N,H,W]
    query_protos: list       # per level [N,C_l], unit rows
    label: torch.Tensor      # uint8 [H,W]


class ViewCache:
    """Record index -> cached view (each image through the proposal source once).

    ``get_view(i)`` -> View (mask None); ``get_label(i)`` -> uint8 [H,W] label map (255 = void)."""

    def __init__(self, get_view: Callable[[int], View], get_label: Callable[[int], object],
                 features: Sequence[str], align: bool):
        self.get_view, self.get_label = get_view, get_label
        self.features, self.align = tuple(features), bool(align)
        self._entries: Dict[int, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, i: int) -> _Entry:
        if i not in self._entries:
            with torch.no_grad():
                view = self.get_view(i)
                protos = query_prototypes(view, self.features, self.align)
                feats = {k: self_align(view.features[k]) if self.align else view.features[k].float()
                         for k in self.features}
            label = torch.from_numpy(np.array(self.get_label(i), dtype=np.uint8))  # a writable copy
            if tuple(label.shape) != view.size:
                raise ValueError(f"record {i}: label {tuple(label.shape)} and image {view.size} differ in size")
            h, w = view.size
            light = View(image=torch.zeros(()).expand(3, h, w), proposals=torch.zeros(0, h, w),
                         scores=torch.zeros(0), features=feats)
            props = (view.proposals.float().clamp(0, 1) * 255).round().to(torch.uint8)
            self._entries[i] = _Entry(light, props, protos, label)
        return self._entries[i]

    def target(self, i: int, class_id: int):
        """(gt bool [H,W], valid bool [H,W]) of ``class_id`` in record ``i``."""
        label = self.entry(i).label
        return label == class_id, label != 255

    def proposals(self, i: int) -> torch.Tensor:
        return self.entry(i).proposals.float() / 255

    def support(self, i: int, class_id: int) -> View:
        gt, valid = self.target(i, class_id)
        return self.entry(i).features.with_mask(gt, valid)


def episode_tensors(cache: ViewCache, episodes: Sequence) -> Dict[str, torch.Tensor]:
    """Per episode: S [E,N], the highest- / lowest-IoU proposal pos/neg [E] (soft IoU, as the
    release), the query record and class [E]. Episodes: objects with class_id, query, supports."""
    sims, pos, neg, n_ref = [], [], [], None
    for ep in episodes:
        q = cache.entry(ep.query)
        if n_ref is None:
            n_ref = q.proposals.shape[0]
        elif q.proposals.shape[0] != n_ref:
            raise ValueError(f"record {ep.query} has {q.proposals.shape[0]} proposals, others {n_ref}: one "
                             "matching module needs one N")
        s = support_prototypes([cache.support(j, ep.class_id) for j in ep.supports], cache.features, False)
        sims.append(match_prototypes(q.query_protos, s))
        gt, valid = cache.target(ep.query, ep.class_id)
        iou = soft_iou(cache.proposals(ep.query), gt, valid)
        pos.append(iou.argmax())
        neg.append(iou.argmin())
    if not sims:
        raise ValueError("no training episodes")
    return {"sims": torch.stack(sims), "pos": torch.stack(pos), "neg": torch.stack(neg),
            "query": torch.tensor([ep.query for ep in episodes]),
            "class_id": torch.tensor([ep.class_id for ep in episodes])}


def fit(module: MaskMatchingModule, cache: ViewCache, data: Dict[str, torch.Tensor], *, iters: int, batch: int,
        lr: float, weight_decay: float = 0.0, poly_power: float = 0.9, dice_weight: float = 10.0,
        bce_weight: float = 6.0, seed: int = 0, log_period: int = 100) -> List[dict]:
    """AdamW with the poly schedule over ``iters`` steps of ``batch`` episodes (a seeded cycle of
    permutations of the episode list). Returns the logged history."""
    if iters < 1 or batch < 1:
        raise ValueError(f"FEWSHOT.MM_FORMER.ITERS and BATCH must be >= 1, got {iters}, {batch}")
    opt = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: (1 - t / iters) ** poly_power)
    gen = torch.Generator().manual_seed(seed)
    num = data["sims"].shape[0]
    order, cursor, history = torch.randperm(num, generator=gen), 0, []
    module.train()
    for it in range(iters):
        idx = []
        while len(idx) < batch:
            if cursor == num:
                order, cursor = torch.randperm(num, generator=gen), 0
            take = order[cursor:cursor + batch - len(idx)]
            idx.extend(take.tolist())
            cursor += len(take)
        coefs = module.coefficients(data["sims"][idx])  # [B,N]
        items = [(cache.proposals(int(data["query"][e])), *cache.target(int(data["query"][e]), int(data["class_id"][e])))
                 for e in idx]
        groups = [list(range(len(idx)))]  # one stacked call; one per episode if image sizes differ
        if len({tuple(t[1].shape) for t in items}) > 1:
            groups = [[j] for j in range(len(idx))]
        parts = []
        for g in groups:
            e = torch.tensor([idx[j] for j in g])
            parts.append((len(g), matcher_loss(coefs[g], torch.stack([items[j][0] for j in g]),
                                               torch.stack([items[j][1] for j in g]),
                                               torch.stack([items[j][2] for j in g]), data["pos"][e], data["neg"][e],
                                               dice_weight=dice_weight, bce_weight=bce_weight)))
        loss = {k: sum(n * p[k] for n, p in parts) / len(idx) for k in parts[0][1]}
        opt.zero_grad(set_to_none=True)
        loss["loss"].backward()
        opt.step()
        sched.step()
        if (it + 1) % max(log_period, 1) == 0 or it + 1 == iters:
            row = {"iter": it + 1, "lr": opt.param_groups[0]["lr"], **{k: float(v.detach()) for k, v in loss.items()}}
            history.append(row)
            logger.info("train-matcher iter %d/%d  loss %.4f  dice %.4f  co %.4f", it + 1, iters, row["loss"],
                        row["dice"], row["co"])
    module.eval()
    return history


def _fg_iou(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Binary IoU of [...,H,W] masks with gt inside valid -> [...] (an empty union counts 1)."""
    p, t = pred & valid, gt & valid
    inter, union = (p & t).flatten(-2).sum(-1).float(), (p | t).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


@torch.no_grad()
def episode_scores(module: MaskMatchingModule, cache: ViewCache, data: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """Mean per-episode foreground IoU (x100) of the trained module, of the highest-similarity
    proposal (mm-match) and of the best single proposal (oracle) on the given episodes."""
    coefs = module.eval().coefficients(data["sims"])
    rows = []
    for e in range(coefs.shape[0]):
        q, c = int(data["query"][e]), int(data["class_id"][e])
        gt, valid = cache.target(q, c)
        props = cache.proposals(q)
        binar = props > FOREGROUND_THRESHOLD
        per_prop = _fg_iou(binar, gt, valid)
        trained = _fg_iou(torch.einsum("n,nhw->hw", coefs[e], props) > FOREGROUND_THRESHOLD, gt, valid)
        rows.append(torch.stack([trained, per_prop[data["sims"][e].argmax()], per_prop.max()]))
    mean = torch.stack(rows).mean(0) * 100
    return {"mm_former": float(mean[0]), "mm_match": float(mean[1]), "oracle": float(mean[2])}


def train_matcher(cfg, *, get_view: Callable[[int], View], get_label: Callable[[int], object], episodes: Sequence,
                  output_dir: str, seed: int, info: Optional[dict] = None) -> dict:
    """Train the matching module on ``episodes`` and write the output folder; returns metrics."""
    from simformer.config import dump_cfg
    from simformer.utils.env import run_info
    from simformer.utils.io import atomic_write_json

    c = cfg.FEWSHOT.MM_FORMER
    start = time.perf_counter()
    os.makedirs(output_dir, exist_ok=True)
    cache = ViewCache(get_view, get_label, list(c.FEATURES), c.SELF_ALIGN)
    data = episode_tensors(cache, episodes)
    n = data["sims"].shape[1]
    logger.info("train-matcher: %d episodes over %d images, N=%d proposals", len(episodes), len(cache), n)
    with torch.random.fork_rng(devices=[]):  # the module's initialisation, without touching global RNG state
        torch.manual_seed(seed)
        module = MaskMatchingModule(n, int(c.HIDDEN_MULT), str(c.SIM_NORM))
    before = episode_scores(module, cache, data)
    history = fit(module, cache, data, iters=int(c.ITERS), batch=int(c.BATCH), lr=float(c.LR),
                  weight_decay=float(c.WEIGHT_DECAY), poly_power=float(c.POLY_POWER),
                  dice_weight=float(c.DICE_WEIGHT), bce_weight=float(c.BCE_WEIGHT), seed=seed)
    after = episode_scores(module, cache, data)
    shots = sorted({len(ep.supports) for ep in episodes})
    classes = sorted({int(ep.class_id) for ep in episodes})
    meta = {"features": list(c.FEATURES), "self_align": bool(c.SELF_ALIGN), "shots": shots[0] if len(shots) == 1 else shots,
            "seed": seed, "iters": int(c.ITERS), "num_episodes": len(episodes), "classes": classes}
    save_matcher(os.path.join(output_dir, "matcher.pth"), module, meta)
    metrics = {
        "method": "mm-former", "num_proposals": n, **meta,
        "final": {k: history[-1][k] for k in ("loss", "dice", "co")},
        # Mean per-episode foreground IoU on the training episodes (base classes; not a test score).
        "train_episodes_fg_iou": after, "untrained_fg_iou": before["mm_former"],
        # How often the highest-similarity proposal is the highest-IoU one, and the paper's Eq. 5 on
        # S itself (constant here: frozen features), both as diagnostics of the features.
        "similarity_top1_is_best_iou": float((data["sims"].argmax(1) == data["pos"]).float().mean()),
        "co_loss_on_similarities": float(co_loss(data["sims"], data["pos"], data["neg"]).mean()),
        "history": history, "seconds": round(time.perf_counter() - start, 2),
    }
    metrics.update(info or {})
    atomic_write_json(os.path.join(output_dir, "episodes.json"),
                      [{"class_id": int(ep.class_id), "query": int(ep.query), "supports": [int(s) for s in ep.supports]}
                       for ep in episodes])
    dump_cfg(cfg, os.path.join(output_dir, "config.yaml"))
    atomic_write_json(os.path.join(output_dir, "run_info.json"), {**run_info(), "seed": seed, **(info or {})})
    atomic_write_json(os.path.join(output_dir, "metrics.json"), metrics)
    logger.info("train-matcher: training episodes fg IoU: mm-former %.1f, mm-match %.1f, oracle %.1f -> %s",
                after["mm_former"], after["mm_match"], after["oracle"], output_dir)
    return metrics


def train_matcher_on_dataset(cfg, model, *, dataset_name: str, train_classes: Sequence[int], shots: int,
                             num_episodes: int, seed: int, min_pixels: int, output_dir: str,
                             info: Optional[dict] = None) -> dict:
    """Episodes over ``train_classes`` (the fold's base classes) of ``dataset_name``, proposals and
    features from ``model`` (frozen), then :func:`train_matcher`."""
    from simformer.data.catalog import get_dataset, get_dataset_dicts
    from simformer.utils.io import read_label

    records = get_dataset_dicts(dataset_name)
    counts = class_pixel_counts(records, get_dataset(dataset_name).num_classes)
    episodes = sample_episodes(counts, list(train_classes), shots=shots, num_episodes=num_episodes, seed=seed,
                               min_pixels=min_pixels)
    model.eval()
    source = ModelProposalSource(model, feature_keys=tuple(cfg.FEWSHOT.MM_FORMER.FEATURES))
    return train_matcher(cfg, get_view=lambda i: load_view(records[i], source),
                         get_label=lambda i: read_label(records[i]["sem_seg_file_name"]), episodes=episodes,
                         output_dir=output_dir, seed=seed,
                         info={"dataset": dataset_name, "min_pixels": int(min_pixels), **(info or {})})
