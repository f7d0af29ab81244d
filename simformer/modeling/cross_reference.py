"""CRCNet's cross-reference module and co-occurrence head on SimFormer's image pairs (docs/crcnet.md).

For an (image, reference) pair with feature maps ``F_a``, ``F_b`` ``[C, h, w]``:

    s_a = sigmoid(FC(GAP(F_a))),  s_b = sigmoid(FC(GAP(F_b)))     channel importance, FC shared
    w   = s_a * s_b                                                fused importance [C]
    G_a = F_a * w,  G_b = F_b * w                                  re-weighted ("reinforced") maps

(CRCNet section 4.3: the fused vector re-weights the input maps; no residual ``1 + w``). A
co-occurrence head (convs on ``G``) predicts, per pixel, whether the pixel's class is present in
both images; it is trained with BCE on the classes that have masks (base classes in the weak-shot
setting), novel and void pixels ignored (CRCNet Eq. 5 with lambda = WEAKSHOT.CROSS_REFERENCE.LOSS_WEIGHT).

An image in no pair -- every test image -- is paired with itself: ``w = s_a ** 2`` (docs/crcnet.md).
Everything is vectorised over the batch through a partner index (``partner[i]`` = the other image of
i's pair), so a pair costs no Python loop.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .pixel_decoder import ConvNormAct

__all__ = ["CrossReference", "CoOccurrenceHead", "partner_index", "cooccurrence_targets",
           "cooccurrence_loss", "build_cross_reference", "BACKBONE_FEATURES"]

BACKBONE_FEATURES = ("res2", "res3", "res4", "res5")
MASK_FEATURES = "mask_features"


def partner_index(pairs: Optional[torch.Tensor], batch: int, device=None) -> torch.Tensor:
    """``int64 [B]``: the other image of each image's pair; itself when the image is in no pair.

    Args:
        pairs: ``int64 [P, 2]`` (image, reference) batch indices, or None / empty (every image alone).
        batch: B.
    Raises ValueError when an index lies outside the batch or an image is in two pairs (each image
    of a SimFormer batch has exactly one reference, placed right after it by the loader).
    """
    partner = torch.arange(batch, device=device)
    if pairs is None:
        return partner
    pairs = torch.as_tensor(pairs, dtype=torch.long, device=partner.device).reshape(-1, 2)
    if pairs.numel() == 0:
        return partner
    if pairs.min() < 0 or pairs.max() >= batch:
        raise ValueError(f"cross-reference: pairs {pairs.tolist()} index outside the batch of {batch} images")
    # a self pair (i, i) counts once; any other repetition would give an image two partners
    uses = torch.bincount(torch.cat([pairs[:, 0], pairs[pairs[:, 0] != pairs[:, 1], 1]]), minlength=batch)
    if int(uses.max()) > 1:
        twice = torch.nonzero(uses > 1).flatten().tolist()
        raise ValueError(f"cross-reference: images {twice} appear in more than one pair of {pairs.tolist()}; "
                         "each image needs exactly one reference")
    partner[pairs[:, 0]] = pairs[:, 1]
    partner[pairs[:, 1]] = pairs[:, 0]
    return partner


class CoOccurrenceHead(nn.Module):
    """``num_convs`` x (3x3 conv + GroupNorm + ReLU), then a 1x1 conv to one logit per pixel.

    forward(x [B, C, h, w]) -> logits [B, 1, h, w] of "this pixel's class is in both images".
    """

    def __init__(self, *, in_channels: int, channels: int = 256, num_convs: int = 2, gn_groups: int = 32):
        super().__init__()
        if num_convs < 0 or channels <= 0:
            raise ValueError(f"WEAKSHOT.CROSS_REFERENCE.HEAD_CONVS ({num_convs}) must be >= 0 and "
                             f"HEAD_CHANNELS ({channels}) > 0")
        if num_convs and (gn_groups <= 0 or channels % gn_groups):
            raise ValueError(f"WEAKSHOT.CROSS_REFERENCE.HEAD_CHANNELS ({channels}) must be a multiple of "
                             f"MODEL.SEM_SEG_HEAD.GN_GROUPS ({gn_groups}), the head's GroupNorm groups")
        layers = []
        c = in_channels
        for _ in range(num_convs):
            layers.append(ConvNormAct(in_channels=c, out_channels=channels, kernel_size=3, gn_groups=gn_groups,
                                      relu=True))
            c = channels
        self.convs = nn.Sequential(*layers)
        self.predictor = nn.Conv2d(c, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.convs(x))


class CrossReference(nn.Module):
    """Channel re-weighting of each image by the importance vector it shares with its pair partner.

    Args:
        channels: C of the re-weighted map.
        in_feature: where SimFormer applies it: a backbone map ("res2".."res5", before the pixel
            decoder) or "mask_features" (after it); kept here for the meta-architecture.
        head_channels, head_convs, gn_groups: the co-occurrence head (``head_convs`` None = no head).
    """

    def __init__(self, *, channels: int, in_feature: str = "mask_features", head_channels: int = 256,
                 head_convs: Optional[int] = 2, gn_groups: int = 32):
        super().__init__()
        if in_feature not in BACKBONE_FEATURES + (MASK_FEATURES,):
            raise ValueError(f"WEAKSHOT.CROSS_REFERENCE.IN_FEATURE must be one of "
                             f"{list(BACKBONE_FEATURES) + [MASK_FEATURES]}; got '{in_feature}'")
        self.in_feature = in_feature
        self.channels = int(channels)
        self.fc = nn.Linear(self.channels, self.channels)  # shared by both images (Siamese)
        self.head = None
        if head_convs is not None:
            self.head = CoOccurrenceHead(in_channels=self.channels, channels=head_channels, num_convs=head_convs,
                                         gn_groups=gn_groups)

    def channel_importance(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[B, C, h, w]`` -> ``sigmoid(FC(GAP(x)))`` ``[B, C]`` in (0, 1)."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"CrossReference: expected a [B, {self.channels}, h, w] map ({self.in_feature}), "
                             f"got {tuple(x.shape)}")
        return torch.sigmoid(self.fc(x.mean(dim=(2, 3))))

    def fused_importance(self, x: torch.Tensor, pairs: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[B, C]``: each image's importance times its partner's (itself when unpaired)."""
        s = self.channel_importance(x)
        return s * s[partner_index(pairs, x.shape[0], x.device)]

    def forward(self, x: torch.Tensor, pairs: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x ``[B, C, h, w]``, pairs ``int64 [P, 2]`` or None -> re-weighted x ``[B, C, h, w]``."""
        return x * self.fused_importance(x, pairs)[:, :, None, None].to(x.dtype)


# ------------------------------------------------------------------------------------ targets, loss
def cooccurrence_targets(sem: torch.Tensor, partner: torch.Tensor, num_classes: int,
                         ignore_value: int = 255, valid: Optional[torch.Tensor] = None
                         ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel co-occurrence targets.

    A labelled pixel (class id in ``sem``, i.e. a class with masks: base classes in the weak-shot
    setting) is 1 when its class has pixels in the partner's label map, else 0. Pixels labelled
    ``ignore_value`` (novel, void, padding) and pixels outside ``valid`` are not counted.

    Args:
        sem: ``int64 [B, H, W]`` labels; partner: ``int64 [B]`` (``partner_index``); valid: ``bool [B, H, W]``.
    Returns:
        ``(target float [B, H, W], counted bool [B, H, W])``; target is 0 where not counted.
    """
    B = sem.shape[0]
    flat = sem.reshape(B, -1)
    labelled = flat != ignore_value
    if valid is not None:
        labelled = labelled & valid.reshape(B, -1).to(labelled.device)
    if labelled.any() and (int(flat[labelled].max()) >= num_classes or int(flat[labelled].min()) < 0):
        raise ValueError(f"cooccurrence_targets: labels must be 0..{num_classes - 1} or {ignore_value}; "
                         f"got {sorted(set(flat[labelled].tolist()))[:8]}")
    safe = torch.where(labelled, flat, torch.full_like(flat, num_classes))
    present = torch.zeros(B, num_classes + 1, dtype=torch.bool, device=sem.device)
    present.scatter_(1, safe, True)
    present[:, num_classes] = False  # the dummy column of unlabelled pixels
    target = torch.gather(present[partner.to(sem.device)], 1, safe) & labelled
    return target.float().view_as(sem), labelled.view_as(sem)


def cooccurrence_loss(logits: torch.Tensor, sem: torch.Tensor, valid: Optional[torch.Tensor], partner: torch.Tensor,
                      num_classes: int, ignore_value: int = 255) -> torch.Tensor:
    """Mean BCE over counted pixels of the co-occurrence logits ``[B, 1, h, w]``, bilinearly upsampled
    to the label resolution ``sem [B, H, W]`` (as MaskFormer's mask losses). No counted pixel: a zero
    still connected to the head."""
    target, counted = cooccurrence_targets(sem, partner, num_classes, ignore_value, valid)
    logits = logits.float()
    if logits.shape[-2:] != sem.shape[-2:]:
        logits = F.interpolate(logits, size=sem.shape[-2:], mode="bilinear", align_corners=False)
    bce = F.binary_cross_entropy_with_logits(logits[:, 0], target.to(logits.device), reduction="none")
    w = counted.to(logits.device).float()
    return (bce * w).sum() / w.sum().clamp(min=1.0)


def build_cross_reference(cfg, input_shape: dict) -> Optional[CrossReference]:
    """The module from ``WEAKSHOT.CROSS_REFERENCE.*`` (None when disabled).

    input_shape: ``{name: (channels, stride)}`` of the backbone maps; "mask_features" has
    ``MODEL.SEM_SEG_HEAD.MASK_DIM`` channels.
    """
    xr = cfg.WEAKSHOT.CROSS_REFERENCE
    if not xr.ENABLED:
        return None
    name = str(xr.IN_FEATURE)
    if name == MASK_FEATURES:
        channels = int(cfg.MODEL.SEM_SEG_HEAD.MASK_DIM)
    elif name in input_shape:
        channels = int(input_shape[name][0])
    else:
        raise ValueError(f"WEAKSHOT.CROSS_REFERENCE.IN_FEATURE must be one of {sorted(input_shape)} or "
                         f"'{MASK_FEATURES}'; got '{name}'")
    return CrossReference(channels=channels, in_feature=name, head_channels=int(xr.HEAD_CHANNELS),
                          head_convs=int(xr.HEAD_CONVS), gn_groups=int(cfg.MODEL.SEM_SEG_HEAD.GN_GROUPS))
