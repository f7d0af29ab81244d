"""SimNet transferability, the paper's Table 3 (docs/simnet.md): is SimNet's similar / dissimilar
decision on cross-image pixel pairs as good on novel pairs (the pairs it is distilled on, never
trained on) as on base pairs (the pairs it is trained on)?

For each (image, reference) pair of the training loader, J points are drawn uniformly from the
base pixels of each image and J from the novel pixels, with the full ground truth (novel masks
included, void left out); every J x J cross pair of a group is scored. SimNet says "similar" when
its probability of the same class is above 0.5. Per group: the 2 x 2 confusion counts summed over
all pairs, F1 of "similar" and of "dissimilar" (each taken as the positive class), and the share
of truly similar pairs (F1 depends on it).
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional

import torch

from simformer.modeling.pair_losses import gather_points, small_targets
from simformer.modeling.point_sampling import sample_points

__all__ = ["GROUPS", "confusion", "f1_scores", "SimNetTransfer", "analyze_simnet", "has_simnet_pairs",
           "simnet_transfer_on_training_pairs", "summary_csv"]

GROUPS = ("base", "novel")


def confusion(prob: torch.Tensor, same: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """``int64 [2, 2]`` counts ``[true similar?][predicted similar?]`` of pairs: ``prob`` (SimNet's
    probability of "similar") and ``same`` (ground truth) of the same shape."""
    pred = (prob > threshold).flatten().long()
    truth = same.flatten().long()
    return torch.bincount(truth * 2 + pred, minlength=4).reshape(2, 2).cpu()


def f1_scores(counts) -> Dict[str, float]:
    """F1 (percent) of "similar" and of "dissimilar" as the positive class, from ``[2,2]`` counts
    ``[truth][prediction]``; NaN where a class is neither present nor predicted."""
    c = [[int(counts[t][p]) for p in (0, 1)] for t in (0, 1)]

    def f1(tp, fp, fn):
        return 100.0 * 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else math.nan

    total = sum(map(sum, c))
    return {"f1_similar": f1(c[1][1], c[0][1], c[1][0]),
            "f1_dissimilar": f1(c[0][0], c[1][0], c[0][1]),
            "accuracy": 100.0 * (c[0][0] + c[1][1]) / total if total else math.nan,
            "similar_share": 100.0 * (c[1][0] + c[1][1]) / total if total else math.nan,
            "pairs": total}


class SimNetTransfer:
    """Accumulates the confusion counts of base and novel pixel pairs over batches."""

    def __init__(self, *, novel_class_ids, num_points: int, ignore_value: int = 255,
                 generator: Optional[torch.Generator] = None):
        if num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}")
        self.novel = torch.as_tensor(list(novel_class_ids), dtype=torch.long)
        self.num_points = int(num_points)
        self.ignore_value = int(ignore_value)
        self.generator = generator
        self.counts = {g: torch.zeros(2, 2, dtype=torch.long) for g in GROUPS}
        self.image_pairs = 0

    def regions(self, labels: torch.Tensor, valid: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``labels`` full-truth ``int64 [B,N]``, ``valid`` ``bool [B,N]`` -> bool ``[B,N]`` per group."""
        real = valid & (labels != self.ignore_value)
        novel = real & torch.isin(labels, self.novel.to(labels.device))
        return {"base": real & ~novel, "novel": novel}

    @torch.no_grad()
    def add(self, simnet, feats: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, pairs: torch.Tensor) -> None:
        """One batch: ``feats [B,C,N]`` pixel embeddings, ``labels [B,N]`` full truth, ``valid [B,N]``
        (all at feature resolution), ``pairs int64 [P,2]`` (image, reference) indices."""
        self.image_pairs += int(pairs.shape[0])
        for group, region in self.regions(labels, valid).items():
            ok = region[pairs[:, 0]].any(1) & region[pairs[:, 1]].any(1)
            pp = pairs[ok]
            if pp.numel() == 0:
                continue
            n = pp.shape[0]
            idx = sample_points(region[torch.cat([pp[:, 0], pp[:, 1]])], self.num_points, self.generator)
            fa, fb = gather_points(feats, pp[:, 0], idx[:n]), gather_points(feats, pp[:, 1], idx[n:])
            la, lb = gather_points(labels, pp[:, 0], idx[:n]), gather_points(labels, pp[:, 1], idx[n:])
            prob = simnet.pair_logits(fa, fb).softmax(-1)[..., 1]  # [n, J, J]
            self.counts[group] += confusion(prob, la[:, :, None] == lb[:, None, :])

    def summary(self) -> Dict[str, Dict[str, float]]:
        return {g: f1_scores(self.counts[g]) for g in GROUPS}


def full_truth(model, batch: List[dict], hw, size) -> tuple:
    """The full ground truth (novel masks included) and validity at feature size ``size``, padded
    to the batch size ``hw`` as the training targets are (``model.padded_maps``)."""
    sem = model.padded_maps(batch, "sem_seg_full", hw, model.ignore_value)
    valid = model.padded_maps(batch, "valid", hw, False)
    return small_targets([{"sem_seg": s, "valid": v} for s, v in zip(sem, valid)], size)


@torch.no_grad()
def analyze_simnet(model, batches: Iterable[List[dict]], *, num_image_pairs: int, num_points: int,
                   novel_class_ids, seed: int = 0) -> SimNetTransfer:
    """Score SimNet on the first ``num_image_pairs`` (image, reference) pairs of ``batches`` (the
    training loader's batches, whose samples carry ``sem_seg_full``), model in eval mode."""
    if getattr(model, "criterion", None) is None or getattr(model.criterion, "simnet", None) is None:
        raise ValueError("the model has no SimNet (WEAKSHOT.SIMNET.ENABLED False): nothing to analyse")
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=model.device).manual_seed(int(seed))
    acc = SimNetTransfer(novel_class_ids=novel_class_ids, num_points=num_points,
                         ignore_value=model.ignore_value, generator=gen)
    try:
        for batch in batches:
            if acc.image_pairs >= num_image_pairs:
                break
            if any("sem_seg_full" not in x for x in batch):
                raise ValueError("the batches carry no 'sem_seg_full' (full ground truth); use the training loader")
            images = model.normalize(batch)
            pairs = model.pair_indices(batch)
            if pairs is None:
                raise ValueError("the batches hold no (image, reference) pairs: WEAKSHOT.PAIR_MODE is 'none'")
            pairs = pairs[: num_image_pairs - acc.image_pairs].to(model.device)
            feats = model.forward_features(images, pairs)["mask_features"].float()
            labels, valid = full_truth(model, batch, images.shape[-2:], feats.shape[-2:])
            acc.add(model.criterion.simnet, feats.flatten(2), labels, valid, pairs)
    finally:
        model.train(was_training)
    if acc.image_pairs < num_image_pairs:
        raise ValueError(f"the loader gave {acc.image_pairs} image pairs, fewer than the {num_image_pairs} asked for")
    return acc


def has_simnet_pairs(cfg) -> bool:
    """Whether a model of ``cfg`` has a SimNet trained on image pairs, i.e. something to analyse."""
    return bool(cfg.WEAKSHOT.SIMNET.ENABLED) and cfg.WEAKSHOT.PAIR_MODE != "none"


def simnet_transfer_on_training_pairs(model, cfg, split, *, num_image_pairs: int = 100,
                                      num_points: Optional[int] = None, seed: int = 0) -> SimNetTransfer:
    """``analyze_simnet`` on the training loader of ``cfg`` (DATASETS.TRAIN[0], its augmentation and
    reference pairing, order fixed by ``cfg.SEED``); J defaults to WEAKSHOT.SIMNET.NUM_POINTS."""
    from simformer.data.build import build_train_loader

    if not has_simnet_pairs(cfg):
        raise ValueError(f"SimNet transferability needs WEAKSHOT.SIMNET.ENABLED True and pairs (WEAKSHOT.PAIR_MODE "
                         f"is '{cfg.WEAKSHOT.PAIR_MODE}')")
    loader = build_train_loader(cfg, split, rank=0, world_size=1)
    return analyze_simnet(model, loader, num_image_pairs=num_image_pairs,
                          num_points=int(num_points or cfg.WEAKSHOT.SIMNET.NUM_POINTS),
                          novel_class_ids=split.novel, seed=seed)


SUMMARY_KEYS = ("f1_similar", "f1_dissimilar", "accuracy", "similar_share", "pairs")


def summary_csv(summary: Dict[str, Dict[str, float]]) -> str:
    """The per-group summary as CSV text: one row per group, columns ``SUMMARY_KEYS``."""
    rows = ["group," + ",".join(SUMMARY_KEYS)]
    for g in GROUPS:
        rows.append(g + "," + ",".join(str(summary[g][k]) if k == "pairs" else f"{summary[g][k]:.4f}"
                                       for k in SUMMARY_KEYS))
    return "\n".join(rows) + "\n"
