"""A trained mask-classification model (SimFormer / MaskFormer) as a few-shot proposal source.

One forward per image (backbone -> pixel decoder -> transformer predictor) gives:
- proposals: sigmoid of the query mask logits upsampled bilinearly to the padded input size and
  cropped to the image (as ``SimFormer.proposals``: upsample logits, then sigmoid);
- scores: 1 - p(no object) of each query (softmax over the K + 1 class logits);
- features: the backbone maps "res2".."res5" and the pixel decoder's "mask_features", cropped to
  the cells that cover the image (ceil(H / stride) x ceil(W / stride)).
Class logits of the model's own classes are not passed on: a few-shot method sees masks, scores
and features only.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from simformer.modeling.image_list import normalize_images
from simformer.utils.io import read_image, read_label

from .base import View

MASK_FEATURES_STRIDE = 4


class ModelProposalSource:
    """Args:
        model: a built SimFormer-like model with ``backbone``, ``pixel_decoder``, ``predictor``,
            ``pixel_mean``, ``pixel_std`` and ``size_divisibility`` (put in eval mode here).
        feature_keys: the feature maps to keep in each View.
    """

    def __init__(self, model, *, feature_keys: Sequence[str] = ("res2", "res3", "res4", "res5", "mask_features")):
        missing = [a for a in ("backbone", "pixel_decoder", "predictor", "pixel_mean", "pixel_std")
                   if not hasattr(model, a)]
        if missing:
            raise ValueError(f"{type(model).__name__} has no {missing}: few-shot proposals need a mask-classification "
                             "model (MODEL.META_ARCHITECTURE SimFormer), not e.g. the CAM baseline")
        strides = dict(model.backbone.out_strides)
        strides["mask_features"] = MASK_FEATURES_STRIDE
        unknown = [k for k in feature_keys if k not in strides]
        if unknown:
            raise ValueError(f"unknown feature map(s) {unknown}; available: {sorted(strides)}")
        self.model = model.eval()
        self.feature_keys = tuple(feature_keys)
        self.strides = {k: strides[k] for k in self.feature_keys}
        self.size_divisibility = int(getattr(model, "size_divisibility", 1))
        self.calls = 0  # forward passes run (the runner's cache keeps this at one per image)

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> View:
        """image float32 [3,H,W] RGB 0..255 -> View (on the CPU, float32)."""
        self.calls += 1
        m = self.model
        h, w = image.shape[-2:]
        x = normalize_images([{"image": image}], m.pixel_mean, m.pixel_std, self.size_divisibility)
        feats = m.backbone(x)
        mask_features, transformer_in = m.pixel_decoder(feats)
        out = m.predictor(transformer_in, mask_features)
        logits = F.interpolate(out["pred_masks"], size=x.shape[-2:], mode="bilinear", align_corners=False)
        proposals = logits[0, :, :h, :w].sigmoid()
        scores = 1.0 - out["pred_logits"][0].softmax(-1)[:, -1]
        feats = dict(feats, mask_features=mask_features)
        features = {}
        for k, s in self.strides.items():
            features[k] = feats[k][0, :, : -(-h // s), : -(-w // s)].float().cpu().contiguous()
        return View(image=image.float().cpu(), proposals=proposals.float().cpu().contiguous(),
                    scores=scores.float().cpu(), features=features)


def read_image_tensor(record: dict) -> torch.Tensor:
    """float32 [3,H,W] RGB 0..255 of ``record["file_name"]``."""
    return torch.from_numpy(np.ascontiguousarray(read_image(record["file_name"]).transpose(2, 0, 1))).float()


def read_record_label(record: dict, size) -> np.ndarray:
    """uint8 [H,W] label of ``record``; ValueError naming both files if its size is not the image's."""
    label = read_label(record["sem_seg_file_name"])
    if tuple(label.shape) != tuple(size):
        raise ValueError(f"Label {record['sem_seg_file_name']} is {label.shape[1]}x{label.shape[0]} but image "
                         f"{record['file_name']} is {size[1]}x{size[0]}; labels must match their images")
    return label


def mask_from_label(label: np.ndarray, class_id: int, ignore_label: int = 255):
    """(mask, valid) bool tensors [H,W]: the class's pixels, and the labelled (non-void) pixels."""
    t = torch.from_numpy(np.array(label))  # a writable copy (PIL arrays are read-only)
    return t == int(class_id), t != ignore_label


def load_view(record: dict, source, class_id: Optional[int] = None) -> View:
    """The View of ``record``'s image; with ``class_id`` a support View (mask = label == class_id,
    valid = label != 255)."""
    view = source(read_image_tensor(record))
    if class_id is None:
        return view
    mask, valid = mask_from_label(read_record_label(record, view.size), class_id)
    return view.with_mask(mask, valid)
