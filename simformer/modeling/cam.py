"""CAM baseline of weakly-supervised semantic segmentation (the "*" protocol for WSSS baselines).

A multi-label classifier on the backbone is trained with image-level labels only (base and novel
classes alike). Its class activation maps (CAMs), max-normalised and cut at a background
threshold, give label maps that `simformer pseudo-label` mixes with the base GT for the same
re-training stage as SimFormer* (simformer/retrain/pseudo_label.py).

Formulation (classic CAM, Zhou et al. 2016, in the 1x1-conv form of IRN / PSA):

    A = W * res5                      activation maps [B,K,h,w] (1x1 conv, no bias)
    s_k = sum_cells m * A_k / sum m   image logits [B,K]: GAP over the real (non-padding) cells
    L = BCE-with-logits(s, image_labels), mean over images and classes

The classifier has no bias: the linear map and the pooling commute, so the score is exactly the
mean of the map and the CAM is each cell's contribution to the logit. A bias would shift every cell
by one constant, which the ReLU + max normalisation of the CAMs would turn into a spurious floor or
cut-off unrelated to localisation.

``m`` is the fraction of a feature cell's stride x stride input pixels that are real image pixels
(1 inside, 0 on pure padding, in between on a cell the image border cuts), so padding added by the
mapper or by the model never dilutes the score.
"""
from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import build_backbone
from .inference import sem_seg_postprocess
from .image_list import normalize_images, pad_batch
from .registry import register_meta_arch

__all__ = ["CAMModel", "build_cam_model", "masked_gap", "valid_cell_weights"]


def valid_cell_weights(valid: torch.Tensor, feature_hw, stride: int) -> torch.Tensor:
    """Share of real pixels in each feature cell.

    valid: bool [B,H,W] at the network-input resolution (False on padding); feature_hw: (h, w) of
    the feature map; stride: its stride, cell (i, j) covering input rows i*s..(i+1)*s-1 and columns
    j*s..(j+1)*s-1 (pixels beyond the input count as padding). Returns float [B,h,w] in [0, 1].
    """
    h, w = int(feature_hw[0]), int(feature_hw[1])
    if valid.dim() != 3:
        raise ValueError(f"valid_cell_weights: valid must be [B,H,W], got {tuple(valid.shape)}.")
    v = valid.float()[:, None]
    # Crop/pad the mask to exactly (h*s, w*s) so that one average-pool window = one cell.
    v = v[..., : h * stride, : w * stride]
    v = F.pad(v, (0, w * stride - v.shape[-1], 0, h * stride - v.shape[-2]), value=0.0)
    return F.avg_pool2d(v, kernel_size=stride, stride=stride)[:, 0]


def masked_gap(maps: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted global average pooling: maps [B,K,h,w], weights [B,h,w] >= 0 -> [B,K].

    ``sum(w * A_k) / sum(w)``; an image without any weight (no real pixel) scores 0.
    """
    num = torch.einsum("bkhw,bhw->bk", maps, weights.to(maps.dtype))
    den = weights.flatten(1).sum(1, keepdim=True).to(maps.dtype)
    return num / den.clamp_min(torch.finfo(maps.dtype).tiny)


class CAMModel(nn.Module):
    """Multi-label CAM classifier on a backbone's res5.

    Args:
        backbone: module with ``forward(x [B,3,H,W] normalised) -> {"res5": [B,C,h,w], ...}`` and
            dicts ``out_channels`` / ``out_strides`` (``simformer.modeling.backbone`` contract).
        num_classes: K.
        pixel_mean, pixel_std: RGB normalisation on 0..255 inputs (3 values each).
        size_divisibility: the model zero-pads normalised images to a multiple of this.
        bg_threshold: a pixel takes its best considered class when that class's max-normalised
            CAM is >= this, else 255 (background / no class). In [0, 1].

    Attributes:
        use_image_labels: False (default, evaluation): the classes considered at inference are
            those with sigmoid(score) > 0.5. True: the sample's ``image_labels`` (known on training
            images; the pseudo-label step sets it).
        weight_dict: {"loss_cls": 1.0}; ``forward`` already returns weighted losses.

    Training ``forward(batch)`` -> {"loss_cls": scalar}. Inference (``eval()``) -> per image
    {"sem_seg": float [K,height,width] normalised CAMs (0 for classes not considered),
    "sem_seg_label": int64 [height,width] (class id, or 255 = background),
    "scores": float [K] image logits}.
    """

    def __init__(self, *, backbone: nn.Module, num_classes: int, pixel_mean, pixel_std,
                 size_divisibility: int, bg_threshold: float = 0.3, ignore_value: int = 255):
        super().__init__()
        if not 0.0 <= float(bg_threshold) <= 1.0:
            raise ValueError(f"MODEL.CAM.BG_THRESHOLD must be in [0, 1] (CAMs are max-normalised), got {bg_threshold}.")
        if num_classes <= 0 or num_classes > ignore_value:
            raise ValueError(f"CAMModel: num_classes must be in 1..{ignore_value}, got {num_classes}.")
        for name in ("out_channels", "out_strides"):
            if "res5" not in getattr(backbone, name, {}):
                raise ValueError(f"CAMModel: the backbone must describe 'res5' in its `{name}` dict.")
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.size_divisibility = int(size_divisibility)
        self.bg_threshold = float(bg_threshold)
        self.ignore_value = int(ignore_value)
        self.stride = int(backbone.out_strides["res5"])
        self.classifier = nn.Conv2d(backbone.out_channels["res5"], num_classes, kernel_size=1, bias=False)
        nn.init.xavier_uniform_(self.classifier.weight)
        self.weight_dict = {"loss_cls": 1.0}
        self.use_image_labels = False
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def normalize(self, batched_inputs: List[dict]) -> torch.Tensor:
        """The same normalise + pad as every meta-architecture (image_list.py)."""
        return normalize_images(batched_inputs, self.pixel_mean, self.pixel_std, self.size_divisibility)

    # ------------------------------------------------------------------------------------------
    def activation_maps(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised padded images [B,3,H,W] -> class activation maps A [B,K,h,w] (res5 grid)."""
        return self.classifier(self.backbone(images)["res5"])

    def _as_tensors(self, batched_inputs: List[dict]) -> List[dict]:
        """Shallow copies whose "image" is a tensor (the mapper may hand numpy arrays)."""
        return [dict(x, image=torch.as_tensor(x["image"])) for x in batched_inputs]

    def _valid(self, batched_inputs: List[dict], hw) -> torch.Tensor:
        """bool [B,H,W] at the padded input size hw: the samples' "valid" (all True if absent)."""
        masks = []
        for x in batched_inputs:
            v = x.get("valid")
            shape = tuple(x["image"].shape[-2:])
            v = torch.ones(shape, dtype=torch.bool) if v is None else torch.as_tensor(v).bool()
            if tuple(v.shape) != shape:
                raise ValueError(f"CAMModel: sample '{x.get('file_name', '?')}' has valid {tuple(v.shape)} "
                                 f"but image {shape}; the mapper must give them the same size.")
            masks.append(v.to(self.device))
        valid = pad_batch(masks, 1, False)
        return F.pad(valid, (0, hw[1] - valid.shape[-1], 0, hw[0] - valid.shape[-2]), value=False)

    def _image_labels(self, batched_inputs: List[dict]) -> torch.Tensor:
        """bool [B,K] from the samples' "image_labels"."""
        labels = []
        for x in batched_inputs:
            if "image_labels" not in x:
                raise ValueError(f"CAMModel: sample '{x.get('file_name', '?')}' has no 'image_labels' "
                                 "(needed for training and when use_image_labels is True).")
            lab = torch.as_tensor(x["image_labels"]).bool().flatten()
            if lab.numel() != self.num_classes:
                raise ValueError(f"CAMModel: sample '{x.get('file_name', '?')}' has {lab.numel()} image labels, "
                                 f"the model {self.num_classes} classes; check MODEL.SEM_SEG_HEAD.NUM_CLASSES / the split.")
            labels.append(lab)
        return torch.stack(labels).to(self.device)

    def scores(self, maps: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Image logits [B,K] = GAP of ``maps`` [B,K,h,w] over the real cells of ``valid`` [B,H,W]."""
        return masked_gap(maps, valid_cell_weights(valid, maps.shape[-2:], self.stride))

    # ------------------------------------------------------------------------------------------
    def forward(self, batched_inputs: List[dict]):
        """Training: list of sample dicts -> {"loss_cls": weighted BCE}. Eval: see ``inference``."""
        if not self.training:
            return self.inference(batched_inputs)
        batched_inputs = self._as_tensors(batched_inputs)
        images = self.normalize(batched_inputs)
        maps = self.activation_maps(images)
        logits = self.scores(maps, self._valid(batched_inputs, images.shape[-2:]))
        targets = self._image_labels(batched_inputs).to(logits.dtype)
        loss = F.binary_cross_entropy_with_logits(logits, targets)
        return {"loss_cls": loss * self.weight_dict["loss_cls"]}

    @torch.no_grad()
    def normalized_cams(self, maps: torch.Tensor, img_size, out_h: int, out_w: int, padded_hw) -> torch.Tensor:
        """maps [K,h,w] -> ReLU, bilinear to the padded input ``padded_hw``, crop to ``img_size``,
        resize to (out_h, out_w), divide each class by its max (all-zero maps stay 0).
        Returns float [K,out_h,out_w] in [0, 1]."""
        cams = F.interpolate(F.relu(maps)[None], size=tuple(padded_hw), mode="bilinear", align_corners=False)[0]
        cams = sem_seg_postprocess(cams, img_size, out_h, out_w)
        peak = cams.flatten(1).amax(1)[:, None, None]
        return cams / torch.where(peak > 0, peak, torch.ones_like(peak))

    def label_map(self, cams: torch.Tensor, considered: torch.Tensor) -> torch.Tensor:
        """cams [K,H,W] normalised, considered bool [K] -> int64 [H,W]: argmax over the considered
        classes where its CAM >= bg_threshold, else ``ignore_value`` (all of it when none is)."""
        masked = cams.masked_fill(~considered[:, None, None], float("-inf"))
        best, idx = masked.amax(0), masked.argmax(0)
        return torch.where(best >= self.bg_threshold, idx, torch.full_like(idx, self.ignore_value))

    @torch.no_grad()
    def inference(self, batched_inputs: List[dict]) -> List[dict]:
        """Per image (one forward each, so results do not depend on batch composition)."""
        results = []
        for x in self._as_tensors(batched_inputs):
            images = self.normalize([x])
            maps = self.activation_maps(images)
            logits = self.scores(maps, self._valid([x], images.shape[-2:]))[0]
            if self.use_image_labels:
                considered = self._image_labels([x])[0]
            else:
                considered = logits > 0  # sigmoid(score) > 0.5
            cams = self.normalized_cams(maps[0], x["image"].shape[-2:], int(x["height"]), int(x["width"]),
                                        images.shape[-2:])
            cams = cams * considered[:, None, None].to(cams.dtype)
            results.append({"sem_seg": cams, "sem_seg_label": self.label_map(cams, considered), "scores": logits})
        return results


@register_meta_arch("CAM")
def build_cam_model(cfg, num_classes: int, split=None) -> CAMModel:
    """CAMModel from MODEL.BACKBONE.*, MODEL.PIXEL_MEAN/STD, MODEL.MASK_FORMER.SIZE_DIVISIBILITY,
    MODEL.CAM.BG_THRESHOLD and MODEL.SEM_SEG_HEAD.IGNORE_VALUE."""
    return CAMModel(
        backbone=build_backbone(cfg), num_classes=num_classes,
        pixel_mean=list(cfg.MODEL.PIXEL_MEAN), pixel_std=list(cfg.MODEL.PIXEL_STD),
        size_divisibility=cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY,
        bg_threshold=cfg.MODEL.CAM.BG_THRESHOLD, ignore_value=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
    )
