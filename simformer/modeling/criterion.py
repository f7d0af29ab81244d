"""The weak-shot training criterion of SimFormer (docs/method.md sections 2-6).

Each term is looked up by name in ``WeakShotCriterion.get_loss`` (MaskFormer's
``SetCriterion.get_loss``); the mask and complementary terms are in ``mask_terms.py`` (their loss
functions in ``losses.py``), the pair terms (SimNet, distillation) in ``pair_losses.py``, the CMT
terms in ``cmt_losses.py``.

Terms returned by ``WeakShotCriterion.forward`` (unweighted; ``weight_dict`` holds the weights):

* ``loss_ce``     cross-entropy of every query: matched -> its target class (base and novel alike),
                  unmatched -> "no object" (class weight ``eos_coef``).
* ``loss_mask``   sigmoid focal loss (alpha 0.25, gamma 2) and
  ``loss_dice``   dice loss of queries matched to targets WITH a mask, at target resolution
                  (padding counts as background, as in MaskFormer), normalised by the number of mask
                  targets averaged over ranks.
* ``loss_comp_mask`` / ``loss_comp_dice``  complementary loss (paper 3.5) on images with a novel
                  (mask-less) target: prediction = pixel-wise max of the novel-matched masks and the
                  constant ``ignore_prob``; target = 1 - union of the base masks; valid pixels only.
* ``loss_sim``    SimNet on class-aware sampled base pixel pairs across the two images of a pair
                  (pixel embeddings detached).
* ``loss_dist``   distillation of SimNet's cross-image similarity of non-base pixels into the
                  novel score maps (gradient into the segmenter only).
* ``loss_cooc``   CRCNet's co-occurrence BCE on ``outputs["cooc_logits"]``: base pixels whose class
                  is / is not in the pair partner's labels (``cross_reference.py``, docs/crcnet.md).
* ``loss_approx`` CMT decoder: mask approximation loss of the matched queries' reference points
                  (per decoder layer); ``loss_contrast``: pixel-wise contrastive loss on the mask
                  features (``cmt_losses.py``, docs/cmt.md).

Auxiliary decoder layers add ``loss_ce_i``, ``loss_mask_i``, ``loss_dice_i`` (and
``loss_comp_*_i``) with their own matching. A term with nothing to work on is a zero that is still
connected to the parameters it normally trains (DDP without ``find_unused_parameters``).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from simformer.config.checks import check_cfg
from simformer.utils.comm import get_world_size

from .matcher import HungarianMatcher
from .point_sampling import PointSampler
from . import cmt_losses, mask_terms, pair_losses
from .cross_reference import cooccurrence_loss, partner_index
from .losses import LossWeights
from .mask_terms import flat_indices, has_mask
from .simnet import SimNet

__all__ = ["WeakShotCriterion", "build_criterion"]

class WeakShotCriterion(nn.Module):
    """MaskFormer set criterion extended with the SimFormer weak-shot terms.

    Args:
        num_classes: K (logits have K+1 entries, the last = no object).
        matcher: callable ``(outputs, targets) -> [(query_idx, target_idx)]``.
        novel_class_ids: ``int64 [C_n]`` novel classes (empty = fully supervised).
        eos_coef: class weight of "no object".
        class_weight, mask_weight, dice_weight: loss weights (``weight_dict``).
        deep_supervision: add the per-layer losses of ``outputs["aux_outputs"]``.
        complementary, comp_weight, ignore_prob, comp_deep_supervision: L_comp, beta, gamma, aux.
        simnet: the SimNet module (None = no L_sim and no L_dist); sim_weight: its weight.
        num_points: J points per image for the pair losses; focus_ratio: share of L_sim points
            from one shared base class.
        distill, distill_weight: L_dist and alpha.
        cooccurrence, cooc_weight: CRCNet's co-occurrence loss and lambda.
        point_sampler: where the mask terms read masks (default: full resolution; or
            importance-sampled points).
        num_aux_layers: auxiliary layers listed explicitly in ``weight_dict`` (more still work).
        approx_weight: weight of the CMT mask approximation loss (0 = off; needs ``pred_refs``).
        contrast_weight, contrast_samples, contrast_temperature: the CMT pixel-wise contrastive
            loss (0 = off), |A| pixels per image and tau.
        ignore_value: label of non-base / void pixels in ``targets[b]["sem_seg"]``.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        matcher,
        novel_class_ids: torch.Tensor,
        eos_coef: float = 0.1,
        class_weight: float = 1.0,
        mask_weight: float = 20.0,
        dice_weight: float = 1.0,
        deep_supervision: bool = True,
        complementary: bool = True,
        comp_weight: float = 0.2,
        ignore_prob: float = 0.1,
        comp_deep_supervision: bool = True,
        simnet: Optional[SimNet] = None,
        sim_weight: float = 1.0,
        num_points: int = 100,
        focus_ratio: float = 0.8,
        distill: bool = True,
        distill_weight: float = 0.1,
        distill_clamp: float = 0.01,
        cooccurrence: bool = False,
        cooc_weight: float = 0.1,
        point_sampler: Optional[PointSampler] = None,
        num_aux_layers: int = 5,
        ignore_value: int = 255,
        approx_weight: float = 0.0,
        contrast_weight: float = 0.0,
        contrast_samples: int = 4096,
        contrast_temperature: float = 0.3,
    ):
        super().__init__()
        if num_classes <= 0:
            raise ValueError(f"WeakShotCriterion: num_classes must be > 0, got {num_classes}")
        if not 0 < ignore_prob < 1:
            raise ValueError(
                f"WEAKSHOT.COMPLEMENTARY.IGNORE_PROB must be in (0, 1), got {ignore_prob}"
            )
        if not 0 <= focus_ratio <= 1:
            raise ValueError(f"WEAKSHOT.SIMNET.FOCUS_RATIO must be in [0, 1], got {focus_ratio}")
        if num_points <= 0:
            raise ValueError(f"WEAKSHOT.SIMNET.NUM_POINTS must be > 0, got {num_points}")
        if distill and simnet is None:
            raise ValueError(
                "Distillation needs SimNet: set WEAKSHOT.SIMNET.ENABLED True or WEAKSHOT.DISTILL.ENABLED False"
            )
        novel = torch.as_tensor(novel_class_ids, dtype=torch.long).reshape(-1)
        if novel.numel() and (novel.min() < 0 or novel.max() >= num_classes):
            raise ValueError(f"novel_class_ids {novel.tolist()} outside 0..{num_classes - 1}")
        self.num_classes = num_classes
        self.matcher = matcher
        self.eos_coef = eos_coef
        self.deep_supervision = deep_supervision
        self.complementary = complementary
        self.comp_deep_supervision = comp_deep_supervision
        self.ignore_prob = ignore_prob
        self.simnet = simnet
        self.num_points = num_points
        self.focus_ratio = focus_ratio
        self.distill = distill and simnet is not None
        if not 0 < distill_clamp < 0.5:
            raise ValueError(f"WEAKSHOT.DISTILL.CLAMP must be in (0, 0.5), got {distill_clamp}")
        self.distill_clamp = distill_clamp
        self.cooccurrence = bool(cooccurrence)
        self.point_sampler = point_sampler or PointSampler()
        self.ignore_value = ignore_value
        if approx_weight < 0 or contrast_weight < 0:
            raise ValueError("MODEL.MASK_FORMER.CMT.APPROX_WEIGHT / CONTRAST_WEIGHT must be >= 0, got "
                             f"{approx_weight} / {contrast_weight}")
        if contrast_weight > 0 and (contrast_samples < 2 or contrast_temperature <= 0):
            raise ValueError("MODEL.MASK_FORMER.CMT.CONTRAST_SAMPLES must be >= 2 and CONTRAST_TEMPERATURE > 0, "
                             f"got {contrast_samples} / {contrast_temperature}")
        self.approx = approx_weight > 0
        self.contrast = contrast_weight > 0
        self.contrast_samples = int(contrast_samples)
        self.contrast_temperature = float(contrast_temperature)
        self.register_buffer("novel_class_ids", novel, persistent=False)
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight, persistent=False)

        per_layer = {"loss_ce": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
        if complementary:
            per_layer["loss_comp_mask"] = comp_weight * mask_weight
            per_layer["loss_comp_dice"] = comp_weight * dice_weight
        if self.approx:
            per_layer["loss_approx"] = approx_weight
        weights = LossWeights(per_layer)
        if self.contrast:
            weights["loss_contrast"] = contrast_weight
        if simnet is not None:
            weights["loss_sim"] = sim_weight
        if self.distill:
            weights["loss_dist"] = distill_weight
        if self.cooccurrence:
            weights["loss_cooc"] = cooc_weight
        if deep_supervision:
            for i in range(num_aux_layers):
                for k, v in per_layer.items():
                    if k.startswith("loss_comp") and not comp_deep_supervision:
                        continue
                    weights[f"{k}_{i}"] = v
        self.weight_dict = weights

    # ------------------------------------------------------------------ helpers
    def _num_masks(self, targets: Sequence[dict], device) -> float:
        n = sum(int(has_mask(t).sum()) for t in targets)
        num = torch.tensor([float(n)], device=device)
        if get_world_size() > 1:
            dist.all_reduce(num)
        return max(num.item() / get_world_size(), 1.0)

    # ------------------------------------------------------------------ per-layer terms
    def loss_labels(self, outputs, targets, indices) -> torch.Tensor:
        logits = outputs["pred_logits"].float()  # [B, Q, K+1]
        B, Q, _ = logits.shape
        b, q, _ = flat_indices(indices, logits.device)
        labels = torch.cat([tg["labels"][ti.to(tg["labels"].device)] for tg, (_, ti) in zip(targets, indices)])
        target_classes = torch.full((B, Q), self.num_classes, dtype=torch.long, device=logits.device)
        target_classes[b, q] = labels.to(logits.device)
        weight = self.empty_weight.to(logits.device)
        losses = F.cross_entropy(logits.transpose(1, 2), target_classes, weight, reduction="none")
        # Weighted mean with the weight total averaged over ranks, so that DDP's gradient average
        # equals the single-process loss on the whole global batch (the plain per-rank weighted
        # mean would not, as ranks have different numbers of matched queries).
        total = weight[target_classes].sum().detach()
        if get_world_size() > 1:
            total = total.clone()
            dist.all_reduce(total)
            total = total / get_world_size()
        return losses.sum() / total.clamp(min=1e-6)

    # ------------------------------------------------------------------ the term table
    def get_loss(self, loss: str, outputs, targets, indices=None, num_masks: float = 1.0,
                 pairs: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """One term by name (``labels``, ``masks``, ``complementary``, ``approx`` per decoder layer;
        ``sim``, ``distill``, ``cooccurrence`` on the final layer's pairs; ``contrast`` on the mask
        features) -> its dict of loss tensors."""
        loss_map = {
            "labels": lambda: {"loss_ce": self.loss_labels(outputs, targets, indices)},
            "masks": lambda: mask_terms.loss_masks(outputs["pred_masks"], targets, indices, num_masks,
                                                   self.point_sampler),
            "complementary": lambda: mask_terms.loss_complementary(
                outputs["pred_masks"], targets, indices, ignore_prob=self.ignore_prob, sampler=self.point_sampler),
            "sim": lambda: {"loss_sim": self.loss_sim(outputs, targets, pairs)},
            "distill": lambda: {"loss_dist": self.loss_distill(outputs, targets, pairs)},
            "cooccurrence": lambda: {"loss_cooc": self.loss_cooccurrence(outputs, targets, pairs)},
            "approx": lambda: {"loss_approx": cmt_losses.loss_approx(outputs, targets, indices, num_masks)},
            "contrast": lambda: {"loss_contrast": cmt_losses.loss_contrast(
                outputs, targets, num_samples=self.contrast_samples, temperature=self.contrast_temperature,
                ignore_value=self.ignore_value)},
        }
        if loss not in loss_map:
            raise KeyError(f"WeakShotCriterion: unknown loss '{loss}'; known: {sorted(loss_map)}")
        return loss_map[loss]()

    def layer_loss_names(self, comp: bool) -> List[str]:
        return ["labels", "masks"] + (["complementary"] if comp else []) + (["approx"] if self.approx else [])

    def pair_loss_names(self) -> List[str]:
        """Terms computed once per batch from the final outputs (pairs, mask features)."""
        names = ["contrast"] if self.contrast else []
        if self.simnet is not None:
            names += ["sim"] + (["distill"] if self.distill else [])
        return names + (["cooccurrence"] if self.cooccurrence else [])

    def _layer_losses(self, outputs, targets, num_masks: float, comp: bool, deferred: Optional[list] = None,
                      suffix: str = "") -> Dict[str, torch.Tensor]:
        """The per-layer terms of one decoder layer's ``outputs``. With ``deferred`` (a list), the
        approximation loss is left for ``_deferred_approx``: its key gets a placeholder (so that
        the terms keep their order, and the summed loss its bits) and ``(key, refs, indices)`` is
        appended."""
        indices = self.matcher(outputs, targets)
        losses = {}
        for name in self.layer_loss_names(comp):
            if name == "approx" and deferred is not None:
                losses["loss_approx"] = None
                deferred.append(("loss_approx" + suffix, outputs.get("pred_refs"), indices))
            else:
                losses.update(self.get_loss(name, outputs, targets, indices, num_masks))
        return losses

    @staticmethod
    def _deferred_approx(losses: dict, deferred: list, targets, num_masks: float) -> None:
        """Every layer's approximation loss in one batched computation (cmt_losses.loss_approx_layers)."""
        if not deferred:
            return
        values = cmt_losses.loss_approx_layers([r for _, r, _ in deferred], targets, [i for _, _, i in deferred],
                                               num_masks)
        for (key, _, _), value in zip(deferred, values):
            losses[key] = value

    # ------------------------------------------------------------------ pair terms (pair_losses.py)
    def loss_sim(self, outputs, targets, pairs: Optional[torch.Tensor]) -> torch.Tensor:
        return pair_losses.loss_sim(self.simnet, outputs, targets, pairs, num_points=self.num_points,
                                    focus_ratio=self.focus_ratio, num_classes=self.num_classes,
                                    ignore_value=self.ignore_value)

    def distill_loss_at_points(self, outputs, pairs: torch.Tensor, idx_i: torch.Tensor,
                               idx_j: torch.Tensor) -> torch.Tensor:
        return pair_losses.distill_loss_at_points(self.simnet, outputs, self.novel_class_ids, pairs, idx_i, idx_j,
                                                  clamp=self.distill_clamp)

    def loss_distill(self, outputs, targets, pairs: Optional[torch.Tensor]) -> torch.Tensor:
        return pair_losses.loss_distill(self.simnet, outputs, targets, pairs, novel_class_ids=self.novel_class_ids,
                                        num_classes=self.num_classes, num_points=self.num_points,
                                        clamp=self.distill_clamp, ignore_value=self.ignore_value)

    def loss_cooccurrence(self, outputs, targets, pairs: Optional[torch.Tensor]) -> torch.Tensor:
        if "cooc_logits" not in outputs:
            raise KeyError("WeakShotCriterion: the co-occurrence loss needs outputs['cooc_logits'] (a model built "
                           "with WEAKSHOT.CROSS_REFERENCE.ENABLED, in training mode)")
        logits = outputs["cooc_logits"]
        sem = torch.stack([t["sem_seg"] for t in targets]).to(logits.device)
        valid = torch.stack([t["valid"] for t in targets]).to(logits.device)
        partner = partner_index(pairs, logits.shape[0], logits.device)
        return cooccurrence_loss(logits, sem, valid, partner, self.num_classes, self.ignore_value)

    # ------------------------------------------------------------------ forward
    def forward(self, outputs: dict, targets: Sequence[dict], pairs: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Compute every enabled loss term (unweighted).

        Args:
            outputs: ``pred_logits [B,Q,K+1]``, ``pred_masks [B,Q,h,w]``, ``aux_outputs`` (list of
                the same two keys), ``mask_features [B,C,h,w]`` (needed by the pair terms),
                ``cooc_logits [B,1,h',w']`` (the co-occurrence term).
            targets: B dicts with ``labels int64 [T]`` (mask targets first), ``has_mask bool [T]``,
                ``masks [T,H,W]``, ``sem_seg int64 [H,W]``, ``valid bool [H,W]``, ``image_labels bool [K]``.
            pairs: ``int64 [P,2]`` (image, reference) batch indices, or None.
        """
        if len(targets) != outputs["pred_logits"].shape[0]:
            raise ValueError(
                f"WeakShotCriterion: {len(targets)} targets for a batch of {outputs['pred_logits'].shape[0]}"
            )
        device = outputs["pred_logits"].device
        # losses in float32 even when the model runs under autocast
        with torch.autocast(device_type=device.type, enabled=False):
            return self._forward(outputs, targets, pairs)

    def _forward(self, outputs, targets, pairs) -> Dict[str, torch.Tensor]:
        device = outputs["pred_logits"].device
        num_masks = self._num_masks(targets, device)
        # per-batch constants of the per-layer terms, computed once for all decoder layers
        if self.complementary:
            targets = mask_terms.with_complement(targets)
        if self.approx:
            targets = cmt_losses.with_mask_geometry(targets)
        final = {k: outputs[k] for k in ("pred_logits", "pred_masks", "pred_refs") if k in outputs}
        deferred = [] if self.approx else None
        losses = self._layer_losses(final, targets, num_masks, self.complementary, deferred)
        for name in self.pair_loss_names():
            losses.update(self.get_loss(name, outputs, targets, pairs=pairs))
        if self.deep_supervision:
            comp = self.complementary and self.comp_deep_supervision
            for i, aux in enumerate(outputs.get("aux_outputs") or []):
                layer = self._layer_losses(aux, targets, num_masks, comp, deferred, suffix=f"_{i}")
                losses.update({f"{k}_{i}": v for k, v in layer.items()})
        self._deferred_approx(losses, deferred, targets, num_masks)
        return losses


def build_criterion(cfg, num_classes: int, novel_class_ids) -> WeakShotCriterion:
    """Build the criterion (and its SimNet) from ``MODEL.MASK_FORMER.*`` and ``WEAKSHOT.*``."""
    mf, ws = cfg.MODEL.MASK_FORMER, cfg.WEAKSHOT
    cmt, is_cmt = mf.CMT, mf.DECODER == "cmt"
    check_cfg(cfg)  # pairing rules (a config from load_cfg has passed them already)
    matcher = HungarianMatcher(cost_class=mf.CLASS_WEIGHT, cost_mask=mf.MASK_WEIGHT, cost_dice=mf.DICE_WEIGHT)
    simnet = None
    if ws.SIMNET.ENABLED:
        simnet = SimNet(
            in_dim=cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
            hidden_dim=ws.SIMNET.HIDDEN_DIM,
            num_blocks=ws.SIMNET.NUM_BLOCKS,
        )
    return WeakShotCriterion(
        num_classes=num_classes,
        matcher=matcher,
        novel_class_ids=torch.as_tensor(novel_class_ids, dtype=torch.long),
        eos_coef=mf.NO_OBJECT_WEIGHT,
        class_weight=mf.CLASS_WEIGHT,
        mask_weight=mf.MASK_WEIGHT,
        dice_weight=mf.DICE_WEIGHT,
        deep_supervision=mf.DEEP_SUPERVISION,
        complementary=ws.COMPLEMENTARY.ENABLED,
        comp_weight=ws.COMPLEMENTARY.LOSS_WEIGHT,
        ignore_prob=ws.COMPLEMENTARY.IGNORE_PROB,
        comp_deep_supervision=ws.COMPLEMENTARY.DEEP_SUPERVISION,
        simnet=simnet,
        sim_weight=ws.SIMNET.LOSS_WEIGHT,
        num_points=ws.SIMNET.NUM_POINTS,
        focus_ratio=ws.SIMNET.FOCUS_RATIO,
        distill=ws.DISTILL.ENABLED,
        distill_weight=ws.DISTILL.LOSS_WEIGHT,
        distill_clamp=ws.DISTILL.CLAMP,
        cooccurrence=ws.CROSS_REFERENCE.ENABLED,
        cooc_weight=ws.CROSS_REFERENCE.LOSS_WEIGHT,
        point_sampler=PointSampler(enabled=mf.POINT_LOSS, num_points=mf.TRAIN_NUM_POINTS,
                                   oversample_ratio=mf.OVERSAMPLE_RATIO,
                                   importance_sample_ratio=mf.IMPORTANCE_SAMPLE_RATIO),
        num_aux_layers=max(mf.DEC_LAYERS - 1, 0),
        ignore_value=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
        # the CMT decoder's terms (docs/cmt.md); read only with that decoder
        approx_weight=cmt.APPROX_WEIGHT if is_cmt and cmt.LOCATION else 0.0,
        contrast_weight=cmt.CONTRAST_WEIGHT if is_cmt and cmt.CONTRAST else 0.0,
        contrast_samples=cmt.CONTRAST_SAMPLES,
        contrast_temperature=cmt.CONTRAST_TEMPERATURE,
    )
