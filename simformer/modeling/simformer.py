"""The SimFormer meta-architecture: MaskFormer + weak-shot targets + SimNet / complementary losses.

With every WEAKSHOT module off and an all-base split it is exactly MaskFormer; the switches in
``WEAKSHOT.*`` reproduce the paper's ablations (see configs/).
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from simformer.config.checks import novel_masks as cfg_novel_masks
from simformer.data.class_split import Split

from .backbone import build_backbone
from .criterion import build_criterion
from .cross_reference import CrossReference, build_cross_reference
from .image_list import normalize_images, pad_batch
from .inference import sem_seg_postprocess, semantic_inference, tta_inference
from .pixel_decoder import build_pixel_decoder
from .registry import register_meta_arch
from . import cmt_decoder  # noqa: F401  (registers MODEL.MASK_FORMER.DECODER "cmt")
from .transformer_decoder import build_transformer_predictor


class SimFormer(nn.Module):
    """Args:
        backbone, pixel_decoder, predictor, criterion: the built components.
        num_classes: K.
        novel_class_ids: int64 [Kn] ids trained from image-level labels only (empty = none).
        novel_masks: novel classes have masks in the training labels (FullyOracle / re-training).
        pixel_mean, pixel_std: RGB normalisation.
        size_divisibility: images are padded to a multiple of this.
        tta: dict(min_sizes, max_size, flip) to enable multi-scale + flip test-time augmentation.
        cross_reference: CRCNet's cross-reference module + co-occurrence head (None = off; the
            model is then exactly SimFormer).
    """

    def __init__(self, *, backbone: nn.Module, pixel_decoder: nn.Module, predictor: nn.Module,
                 criterion: nn.Module, num_classes: int, novel_class_ids: torch.Tensor,
                 novel_masks: bool, pixel_mean, pixel_std, size_divisibility: int,
                 ignore_value: int = 255, tta: Optional[dict] = None,
                 cross_reference: Optional[CrossReference] = None):
        super().__init__()
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.predictor = predictor
        self.criterion = criterion
        self.cross_reference = cross_reference  # None: a plain attribute, the state dict is unchanged
        self.num_classes = num_classes
        self.novel_masks = novel_masks
        self.size_divisibility = size_divisibility
        self.ignore_value = ignore_value
        self.tta = tta
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        novel = torch.zeros(num_classes, dtype=torch.bool)
        novel[novel_class_ids] = True
        self.register_buffer("novel_class_mask", novel, False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ------------------------------------------------------------------------------------------
    def forward_features(self, images: torch.Tensor, pairs: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """images: normalised [B,3,H,W] -> predictor outputs + "mask_features" [B,C,H/4,W/4].

        pairs: ``int64 [P,2]`` (image, reference) indices for the cross-reference module (images in
        no pair, e.g. at test time, are paired with themselves); ignored when the module is off."""
        features = self.backbone(images)
        if self.cross_reference is not None:
            return self._forward_cross_reference(features, pairs)
        mask_features, transformer_in = self.pixel_decoder(features)
        outputs = self.predictor(transformer_in, mask_features)
        outputs["mask_features"] = mask_features
        return outputs

    def _forward_cross_reference(self, features: Dict[str, torch.Tensor], pairs) -> Dict[str, torch.Tensor]:
        """forward_features with CRCNet's re-weighting of ``cross_reference.in_feature``: a backbone
        map before the pixel decoder, or the mask features after it (also the transformer input when
        that is "pixel_embedding"). In training mode adds "cooc_logits" [B,1,h,w] of that map."""
        xref = self.cross_reference
        if xref.in_feature != "mask_features":
            features = dict(features)
            features[xref.in_feature] = reweighted = xref(features[xref.in_feature], pairs)
            mask_features, transformer_in = self.pixel_decoder(features)
        else:
            mask_features, transformer_in = self.pixel_decoder(features)
            reweighted = xref(mask_features, pairs)
            if transformer_in is mask_features:
                transformer_in = reweighted
            mask_features = reweighted
        outputs = self.predictor(transformer_in, mask_features)
        outputs["mask_features"] = mask_features
        if self.training and xref.head is not None:
            outputs["cooc_logits"] = xref.head(reweighted)
        return outputs

    def normalize(self, batched_inputs: List[dict]) -> torch.Tensor:
        return normalize_images(batched_inputs, self.pixel_mean, self.pixel_std, self.size_divisibility)

    def forward(self, batched_inputs: List[dict]):
        """Training: a list of sample dicts (docs/design.md) -> dict of weighted loss terms.
        Inference: -> list of {"sem_seg": [K, height, width] class probabilities}."""
        if not self.training:
            return self.inference(batched_inputs)
        images = self.normalize(batched_inputs)
        pairs = self.pair_indices(batched_inputs)
        outputs = self.forward_features(images, pairs)
        targets = self.prepare_targets(batched_inputs, images.shape[-2:])
        losses = self.criterion(outputs, targets, pairs)
        weights = self.criterion.weight_dict
        return {k: v * weights[k] for k, v in losses.items() if k in weights}

    # ------------------------------------------------------------------------------------------
    def padded_maps(self, batched_inputs: List[dict], key: str, hw, value) -> torch.Tensor:
        """``x[key]`` of every sample ``[H_i,W_i]`` stacked and padded with ``value`` to the padded
        batch size ``hw`` of the normalised images -> ``[B,*hw]`` on the model's device."""
        maps = pad_batch([x[key].to(self.device) for x in batched_inputs], 1, value)
        return F.pad(maps, (0, hw[1] - maps.shape[-1], 0, hw[0] - maps.shape[-2]), value=value)

    def prepare_targets(self, batched_inputs: List[dict], hw) -> List[dict]:
        """Per image: mask targets for every class labelled in ``sem_seg`` (base, or all classes
        in oracle/pseudo-label mode) followed by mask-less targets for the novel classes of the
        image-level label set. Masks are at the padded batch resolution."""
        sem = self.padded_maps(batched_inputs, "sem_seg", hw, self.ignore_value)
        valid = self.padded_maps(batched_inputs, "valid", hw, False)
        image_labels = torch.stack([x["image_labels"].to(self.device) for x in batched_inputs])
        # Which classes have pixels in each image's target: one vectorised histogram per batch.
        flat = sem.flatten(1)
        labelled = flat != self.ignore_value
        counts = torch.zeros(len(batched_inputs), self.num_classes, dtype=torch.long, device=self.device)
        counts.scatter_add_(1, torch.where(labelled, flat, 0), labelled.long())
        has_pixels = counts > 0
        if self.novel_masks:
            maskless = torch.zeros_like(has_pixels)
        else:
            maskless = image_labels & self.novel_class_mask & ~has_pixels
        targets = []
        for b in range(len(batched_inputs)):
            mask_ids = torch.nonzero(has_pixels[b]).flatten()
            novel_ids = torch.nonzero(maskless[b]).flatten()
            masks = (sem[b][None] == mask_ids[:, None, None]).float()
            masks = torch.cat([masks, masks.new_zeros(len(novel_ids), *masks.shape[1:])])
            targets.append({
                "labels": torch.cat([mask_ids, novel_ids]),
                "has_mask": torch.cat([torch.ones_like(mask_ids, dtype=torch.bool),
                                       torch.zeros_like(novel_ids, dtype=torch.bool)]),
                "masks": masks,
                "sem_seg": sem[b],
                "valid": valid[b],
                "image_labels": image_labels[b],
            })
        return targets

    @staticmethod
    def pair_indices(batched_inputs: List[dict]) -> Optional[torch.Tensor]:
        """[P, 2] batch indices (image, reference) from the loader's "pair_role" tags."""
        roles = [x.get("pair_role") for x in batched_inputs]
        if "reference" not in roles:
            return None
        anchors = [i for i, r in enumerate(roles) if r == "anchor"]
        return torch.tensor([[i, i + 1] for i in anchors], dtype=torch.long)

    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_probs(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised padded images [B,3,H,W] -> class probabilities [B,K,H,W] (padded size).

        As MaskFormer: the stride-4 mask *logits* are upsampled to the input size before the
        sigmoid. Taking the sigmoid first and upsampling probabilities blurs thin regions (measured
        on ToyScenes: docs/convergence.md)."""
        outputs = self.forward_features(images)
        masks = F.interpolate(outputs["pred_masks"], size=images.shape[-2:], mode="bilinear", align_corners=False)
        return semantic_inference(outputs["pred_logits"], masks)

    @torch.no_grad()
    def inference(self, batched_inputs: List[dict]) -> List[dict]:
        results = []
        for x in batched_inputs:
            out_h, out_w = int(x["height"]), int(x["width"])
            if self.tta:
                def predict_fn(images: torch.Tensor) -> torch.Tensor:
                    """[N,3,h,w] RGB 0..255 -> class probabilities [N,K,h,w]."""
                    norm = (images.to(self.device) - self.pixel_mean) / self.pixel_std
                    padded = pad_batch(list(norm), self.size_divisibility, 0.0)
                    return self.predict_probs(padded)[:, :, : images.shape[-2], : images.shape[-1]]

                probs = tta_inference(predict_fn, x["image"], out_h=out_h, out_w=out_w, **self.tta)
            else:
                images = self.normalize([x])
                probs = self.predict_probs(images)[0]
                probs = sem_seg_postprocess(probs, x["image"].shape[-2:], out_h, out_w)
            results.append({"sem_seg": probs})
        return results

    @torch.no_grad()
    def proposals(self, batched_input: dict) -> dict:
        """Per-query class probabilities [Q, K+1] and mask probabilities [Q, H, W] for one image
        (at the input resolution): what `simformer visualize` draws."""
        images = self.normalize([batched_input])
        outputs = self.forward_features(images)
        h, w = batched_input["image"].shape[-2:]
        masks = F.interpolate(outputs["pred_masks"], size=images.shape[-2:], mode="bilinear",
                              align_corners=False)[0, :, :h, :w].sigmoid()
        return {"class_probs": outputs["pred_logits"][0].softmax(-1), "mask_probs": masks}


@register_meta_arch("SimFormer")
def build_simformer(cfg, num_classes: int, split: Optional[Split]) -> SimFormer:
    """SimFormer from the config; ``split`` None = every class base (plain MaskFormer targets)."""
    novel_ids = torch.tensor(list(split.novel) if split is not None else [], dtype=torch.long)
    backbone = build_backbone(cfg)
    input_shape = {k: (backbone.out_channels[k], backbone.out_strides[k]) for k in ("res2", "res3", "res4", "res5")}
    pixel_decoder = build_pixel_decoder(cfg, input_shape)
    predictor = build_transformer_predictor(cfg, pixel_decoder.transformer_in_channels, num_classes)
    novel_masks = cfg_novel_masks(cfg)
    criterion = build_criterion(cfg, num_classes, novel_ids if not novel_masks else novel_ids[:0])
    cross_reference = build_cross_reference(cfg, input_shape)
    tta = None
    if cfg.TEST.AUG.ENABLED:
        tta = {"min_sizes": list(cfg.TEST.AUG.MIN_SIZES), "max_size": cfg.TEST.AUG.MAX_SIZE, "flip": cfg.TEST.AUG.FLIP}
    return SimFormer(
        backbone=backbone, pixel_decoder=pixel_decoder, predictor=predictor, criterion=criterion,
        num_classes=num_classes, novel_class_ids=novel_ids, novel_masks=novel_masks,
        pixel_mean=list(cfg.MODEL.PIXEL_MEAN), pixel_std=list(cfg.MODEL.PIXEL_STD),
        size_divisibility=cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY,
        ignore_value=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE, tta=tta, cross_reference=cross_reference,
    )
