"""The pixel-pair losses of SimFormer (docs/method.md section 4), beside SimNet's point sampling.

* ``loss_sim``: SimNet learns "same class?" on class-aware sampled base pixels across the two
  images of each pair (pixel embeddings detached).
* ``loss_distill``: SimNet's cross-image similarity of non-base pixels is distilled into the
  novel score maps of the segmenter (gradient into the segmenter only).

The helpers below them (targets, balanced loss, point sampling and gathering) are vectorised over
pairs and points.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .point_sampling import sample_points

__all__ = [
    "loss_sim",
    "loss_distill",
    "distill_loss_at_points",
    "pair_targets",
    "balanced_pair_loss",
    "simnet_pair_loss",
    "sample_pair_points",
    "gather_points",
]


def small_targets(targets: Sequence[dict], size) -> Tuple[torch.Tensor, torch.Tensor]:
    """Base labels ``int64 [B, h*w]`` and validity ``bool [B, h*w]`` at feature resolution (nearest)."""
    sem = torch.stack([t["sem_seg"] for t in targets]).float()[:, None]
    val = torch.stack([t["valid"] for t in targets]).float()[:, None]
    sem = F.interpolate(sem, size=size, mode="nearest")[:, 0].long().flatten(1)
    val = F.interpolate(val, size=size, mode="nearest")[:, 0].bool().flatten(1)
    return sem, val


def check_pairs(pairs, batch: int, device) -> Optional[torch.Tensor]:
    """``pairs`` as ``int64 [P, 2]`` on ``device`` (None when there are none); indices must lie in the batch."""
    if pairs is None:
        return None
    pairs = torch.as_tensor(pairs, dtype=torch.long, device=device).reshape(-1, 2)
    if pairs.numel() == 0:
        return None
    if pairs.min() < 0 or pairs.max() >= batch:
        raise ValueError(f"pairs {pairs.tolist()} index outside the batch of {batch} images")
    return pairs


def simnet_zero(simnet) -> torch.Tensor:
    """A zero connected to every SimNet parameter (DDP without ``find_unused_parameters``)."""
    return sum(p.sum() for p in simnet.parameters()) * 0.0


def loss_sim(simnet, outputs: dict, targets: Sequence[dict], pairs: Optional[torch.Tensor], *, num_points: int,
             focus_ratio: float, num_classes: int, ignore_value: int = 255) -> torch.Tensor:
    """L_sim: SimNet on ``num_points`` class-aware points per image of each pair (embeddings detached)."""
    feats = outputs["mask_features"]
    pairs = check_pairs(pairs, feats.shape[0], feats.device)
    if pairs is None:
        return simnet_zero(simnet)
    h, w = feats.shape[-2:]
    labels, valid = small_targets(targets, (h, w))
    labels, valid = labels.to(feats.device), valid.to(feats.device)
    idx_i, idx_j, _ = sample_pair_points(labels, valid, pairs, num_points, focus_ratio, num_classes, ignore_value)
    f = feats.detach().float().flatten(2)  # SimNet learns; the segmenter is not pushed
    pi, pj = pairs[:, 0], pairs[:, 1]
    return simnet_pair_loss(
        simnet,
        gather_points(f, pi, idx_i),
        gather_points(f, pj, idx_j),
        gather_points(labels, pi, idx_i),
        gather_points(labels, pj, idx_j),
        gather_points(valid, pi, idx_i),
        gather_points(valid, pj, idx_j),
        ignore_value,
    )


def distill_loss_at_points(simnet, outputs: dict, novel_class_ids: torch.Tensor, pairs: torch.Tensor,
                           idx_i: torch.Tensor, idx_j: torch.Tensor, *, clamp: float) -> torch.Tensor:
    """L_dist for given pairs ``[P,2]`` and flat point indices ``[P,J]`` (feature resolution).

    Teacher: SimNet (eval mode, no gradient) probability of "similar" for each cross pair
    (a in image i, b in image j). Student: ReLU(cosine) of the novel score vectors
    ``S[c] = sum_q softmax(logits)[q, c] * sigmoid(mask_q)`` at the same two points.
    """
    feats = outputs["mask_features"].detach().float().flatten(2)
    pi, pj = pairs[:, 0], pairs[:, 1]
    was_training = simnet.training
    simnet.eval()  # running BN statistics, and no update of them by the teacher pass
    try:
        with torch.no_grad():
            teacher = simnet.pair_logits(gather_points(feats, pi, idx_i), gather_points(feats, pj, idx_j))
            teacher = teacher.softmax(-1)[..., 1]  # [P, J, J]
    finally:
        simnet.train(was_training)
    novel = novel_class_ids.to(feats.device)
    cls = outputs["pred_logits"].float().softmax(-1)[:, :, novel]  # [B, Q, Cn]
    masks = outputs["pred_masks"].float().flatten(2)  # [B, Q, N]
    s_i = torch.bmm(gather_points(masks, pi, idx_i).sigmoid(), cls[pi])  # [P, J, Cn]
    s_j = torch.bmm(gather_points(masks, pj, idx_j).sigmoid(), cls[pj])
    s_i, s_j = F.normalize(s_i, dim=-1, eps=1e-12), F.normalize(s_j, dim=-1, eps=1e-12)
    # The clamp bounds the BCE gradient 1/s (or 1/(1-s)) at 1/clamp (WEAKSHOT.DISTILL.CLAMP).
    student = torch.bmm(s_i, s_j.transpose(1, 2)).relu().clamp(clamp, 1 - clamp)
    # BCE written out: F.binary_cross_entropy refuses to run under autocast
    bce = -(teacher * student.log() + (1 - teacher) * (1 - student).log())
    return bce.mean()


def loss_distill(simnet, outputs: dict, targets: Sequence[dict], pairs: Optional[torch.Tensor], *,
                 novel_class_ids: torch.Tensor, num_classes: int, num_points: int, clamp: float,
                 ignore_value: int = 255) -> torch.Tensor:
    """L_dist on the pairs that share a novel class, ``num_points`` non-base real pixels per image."""
    zero = (outputs["pred_logits"].sum() + outputs["pred_masks"].sum()) * 0.0
    feats = outputs["mask_features"]
    pairs = check_pairs(pairs, feats.shape[0], feats.device)
    if pairs is None or novel_class_ids.numel() == 0:
        return zero
    device = feats.device
    novel_mask = torch.zeros(num_classes, dtype=torch.bool, device=device)
    novel_mask[novel_class_ids.to(device)] = True
    img_labels = torch.stack([t["image_labels"] for t in targets]).to(device).bool()
    pi, pj = pairs[:, 0], pairs[:, 1]
    share = (img_labels[pi] & img_labels[pj] & novel_mask).any(1)
    labels, valid = small_targets(targets, feats.shape[-2:])
    region = (labels.to(device) == ignore_value) & valid.to(device)  # non-base real pixels
    keep = share & region[pi].any(1) & region[pj].any(1)
    if not keep.any():
        return zero
    pairs = pairs[keep]
    P = pairs.shape[0]
    idx = sample_points(region[torch.cat([pairs[:, 0], pairs[:, 1]])], num_points)
    return distill_loss_at_points(simnet, outputs, novel_class_ids, pairs, idx[:P], idx[P:], clamp=clamp) + zero


# ------------------------------------------------------------------------------------ helpers
def pair_targets(
    labels_a: torch.Tensor,
    labels_b: torch.Tensor,
    valid_a: Optional[torch.Tensor] = None,
    valid_b: Optional[torch.Tensor] = None,
    ignore_value: int = 255,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Targets and validity of every cross pair of labelled points.

    A pair counts iff both points are real image pixels (``valid``) and at least one of them has a
    base label (``!= ignore_value``); a base pixel against an ignore pixel is "dissimilar".

    Args:
        labels_a: ``[P,J]``, labels_b: ``[P,K]`` int labels at the points.
        valid_a, valid_b: optional bool ``[P,J]`` / ``[P,K]`` (False = padding, never used).
    Returns:
        ``(same [P,J,K] bool, counts [P,J,K] bool)``.
    """
    la, lb = labels_a[:, :, None], labels_b[:, None, :]
    counts = (la != ignore_value) | (lb != ignore_value)
    if valid_a is not None:
        counts = counts & valid_a[:, :, None]
    if valid_b is not None:
        counts = counts & valid_b[:, None, :]
    same = (la == lb) & counts
    return same, counts


def balanced_pair_loss(logits: torch.Tensor, same: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Class-balanced 2-way cross-entropy.

    ``(mean CE over counted positive pairs + mean CE over counted negative pairs) / 2``. When one
    of the two groups is empty the other one carries the whole weight; with no counted pair at all
    the result is ``0 * logits.sum()`` (still connected to the graph).

    Args:
        logits: ``[..., 2]``; same, counts: bool ``[...]``.
    """
    ce = F.cross_entropy(logits.reshape(-1, 2).float(), same.reshape(-1).long(), reduction="none")
    pos = (same & counts).reshape(-1).float()
    neg = (~same & counts).reshape(-1).float()
    n_pos, n_neg = pos.sum(), neg.sum()
    terms = []
    if n_pos > 0:
        terms.append((ce * pos).sum() / n_pos)
    if n_neg > 0:
        terms.append((ce * neg).sum() / n_neg)
    if not terms:
        return logits.sum() * 0.0
    return sum(terms) / len(terms)


def simnet_pair_loss(
    simnet,
    feat_a: torch.Tensor,
    feat_b: torch.Tensor,
    labels_a: torch.Tensor,
    labels_b: torch.Tensor,
    valid_a: Optional[torch.Tensor] = None,
    valid_b: Optional[torch.Tensor] = None,
    ignore_value: int = 255,
) -> torch.Tensor:
    """L_sim on given points: features ``[P,J,C]``/``[P,K,C]``, labels ``[P,J]``/``[P,K]``.

    One batched SimNet call over all ``P*J*K`` cross pairs, then ``balanced_pair_loss``.
    """
    logits = simnet.pair_logits(feat_a, feat_b)
    same, counts = pair_targets(labels_a, labels_b, valid_a, valid_b, ignore_value)
    return balanced_pair_loss(logits, same, counts)


def gather_points(maps: torch.Tensor, batch_idx: torch.Tensor, point_idx: torch.Tensor) -> torch.Tensor:
    """Read flattened maps at points.

    Args:
        maps: ``[B, C, N]`` (or ``[B, N]``).
        batch_idx: ``int64 [P]`` image of each row; point_idx: ``int64 [P, J]`` flat pixel indices.
    Returns:
        ``[P, J, C]`` (or ``[P, J]``).
    """
    if maps.dim() == 2:
        return torch.gather(maps[batch_idx], 1, point_idx)
    sel = maps[batch_idx]  # [P, C, N]
    out = torch.gather(sel, 2, point_idx[:, None, :].expand(-1, sel.shape[1], -1))
    return out.transpose(1, 2)


def sample_pair_points(
    labels: torch.Tensor,
    valid: torch.Tensor,
    pairs: torch.Tensor,
    num_points: int,
    focus_ratio: float,
    num_classes: int,
    ignore_value: int = 255,
    generator: Optional[torch.Generator] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class-aware point sampling for SimNet training (release rule).

    For each pair ``(i, j)`` one base class present in both images is chosen at random;
    ``round(focus_ratio * J)`` points per image are drawn from that class region and the rest
    uniformly over the valid pixels. Pairs without a shared base class draw all ``J`` points
    uniformly over valid pixels.

    Args:
        labels: ``int64 [B, N]`` base labels at feature resolution (``ignore_value`` = not base).
        valid: ``bool [B, N]`` real image pixels.
        pairs: ``int64 [P, 2]`` image indices ``(i, j)``.
    Returns:
        ``idx_i [P, J]``, ``idx_j [P, J]`` flat pixel indices, and ``focus_class [P]`` (-1 = none).
    """
    P = pairs.shape[0]
    device = labels.device
    base = (labels != ignore_value) & valid
    if base.any() and int(labels[base].max()) >= num_classes:
        raise ValueError(
            f"sample_pair_points: label {int(labels[base].max())} >= num_classes {num_classes}; "
            "targets['sem_seg'] must hold class ids 0..K-1 or the ignore value"
        )
    safe = torch.where(base, labels, torch.full_like(labels, num_classes))
    present = torch.zeros(labels.shape[0], num_classes + 1, dtype=torch.bool, device=device)
    present.scatter_(1, safe, True)
    present = present[:, :num_classes]
    shared = present[pairs[:, 0]] & present[pairs[:, 1]]  # [P, K]
    has_shared = shared.any(1)
    focus = sample_points(shared, 1, generator)[:, 0]
    focus = torch.where(has_shared, focus, torch.full_like(focus, -1))

    imgs = torch.cat([pairs[:, 0], pairs[:, 1]])  # [2P]: rows 0..P-1 = side i, P..2P-1 = side j
    focus2 = torch.cat([focus, focus])
    n_focus = int(round(focus_ratio * num_points))
    uniform = sample_points(valid[imgs], num_points, generator)  # [2P, J]
    idx = uniform
    if n_focus > 0:
        region = labels[imgs] == focus2[:, None]
        region &= valid[imgs] & (focus2[:, None] >= 0)
        focused = sample_points(region, n_focus, generator)
        head = torch.where(has_shared.repeat(2)[:, None], focused, uniform[:, :n_focus])
        idx = torch.cat([head, uniform[:, n_focus:]], dim=1)
    return idx[:P], idx[P:], focus
