"""The table of detectron2 / MaskFormer / SimFormer-release keys that simformer accepts by value.

``RULES[key]`` is ``Rule("equal", reason, values)`` (accepted when the value is one of ``values``,
otherwise rejected with ``reason``) or ``Rule("ignored", reason)`` (any value: it changes nothing
in MaskFormer's semantic model either). Keys that change meaning are translated in d2compat.py.
docs/detectron2.md lists all of them; tests check that the two agree.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple


@dataclass(frozen=True)
class Rule:
    kind: str  # "equal" | "ignored"
    reason: str
    values: Tuple = ()


def _eq(reason: str, *values) -> Rule:
    return Rule("equal", reason, tuple(values))


def _ign(reason: str) -> Rule:
    return Rule("ignored", reason)


RES = ["res2", "res3", "res4", "res5"]
_UNUSED_MF = "MaskFormer marks it 'not used' (its build_resnet_backbone / head never reads it)"
_DETECTION = "a detectron2 component MaskFormer's semantic model does not build"

RULES = {
    # --- detectron2 MODEL ------------------------------------------------------------------
    "MODEL.MASK_ON": _eq("no instance masks in semantic segmentation", False),
    "MODEL.KEYPOINT_ON": _eq("no keypoints in semantic segmentation", False),
    "MODEL.LOAD_PROPOSALS": _eq("no precomputed proposals", False),
    "MODEL.RESNETS.OUT_FEATURES": _eq("the pixel decoder always reads res2..res5", RES),
    "MODEL.RESNETS.NUM_GROUPS": _eq("plain ResNet (no ResNeXt groups)", 1),
    "MODEL.RESNETS.WIDTH_PER_GROUP": _eq("plain ResNet bottleneck width", 64),
    "MODEL.RESNETS.RES2_OUT_CHANNELS": _eq("plain ResNet channels", 256),
    "MODEL.RESNETS.STEM_OUT_CHANNELS": _eq("plain ResNet stem", 64),
    "MODEL.RESNETS.RES5_DILATION": _eq("no dilation in res5 (stride-32 features)", 1),
    "MODEL.RESNETS.NORM": _eq("BatchNorm of the backbone is frozen (detectron2's FrozenBN)", "FrozenBN"),
    "MODEL.RESNETS.DEFORM_ON_PER_STAGE": _eq("no deformable convolutions", [False] * 4),
    "MODEL.RESNETS.DEFORM_MODULATED": _eq("no deformable convolutions", False),
    "MODEL.RESNETS.DEFORM_NUM_GROUPS": _eq("no deformable convolutions", 1),
    "MODEL.RESNETS.STEM_TYPE": _ign(_UNUSED_MF + " (DeepLab key)"),
    "MODEL.RESNETS.RES5_MULTI_GRID": _ign(_UNUSED_MF + " (DeepLab key)"),
    "MODEL.SEM_SEG_HEAD.NAME": _eq("the head is MaskFormer's (the release's PropFormerHead adds the weak-shot "
                                   "modules, switched by WEAKSHOT.*)", "MaskFormerHead", "PropFormerHead"),
    "MODEL.SEM_SEG_HEAD.IN_FEATURES": _eq("the pixel decoder always reads res2..res5", RES),
    "MODEL.SEM_SEG_HEAD.NORM": _eq("the pixel decoder uses GroupNorm (groups: SEM_SEG_HEAD.GN_GROUPS)", "GN"),
    "MODEL.SEM_SEG_HEAD.COMMON_STRIDE": _ign("MaskFormer marks it 'not used, hard-coded' (mask features at stride 4)"),
    "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT": _ign("MaskFormer's head stores it but never applies it"),
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS": _eq("the pixel decoder has no transformer encoder", 0),
    "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME": _eq("MaskFormer's FPN-like pixel decoder", "BasePixelDecoder"),
    "MODEL.SEM_SEG_HEAD.LOSS_TYPE": _ign("DeepLab head key; MaskFormer's head does not read it"),
    "MODEL.SEM_SEG_HEAD.PROJECT_FEATURES": _ign("DeepLab head key; MaskFormer's head does not read it"),
    "MODEL.SEM_SEG_HEAD.PROJECT_CHANNELS": _ign("DeepLab head key; MaskFormer's head does not read it"),
    "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS": _ign("DeepLab head key; MaskFormer's head does not read it"),
    "MODEL.SEM_SEG_HEAD.ASPP_DILATIONS": _ign("DeepLab head key; MaskFormer's head does not read it"),
    "MODEL.SEM_SEG_HEAD.ASPP_DROPOUT": _ign("DeepLab head key; MaskFormer's head does not read it"),
    "MODEL.SEM_SEG_HEAD.USE_DEPTHWISE_SEPARABLE_CONV": _ign("DeepLab head key; MaskFormer's head does not read it"),
    # --- MaskFormer MODEL.MASK_FORMER ------------------------------------------------------
    "MODEL.MASK_FORMER.ENC_LAYERS": _eq("no transformer encoder on res5 (MaskFormer's semantic configs)", 0),
    "MODEL.MASK_FORMER.PRE_NORM": _eq("post-norm decoder layers, as MaskFormer", False),
    "MODEL.MASK_FORMER.TEST.PANOPTIC_ON": _eq("semantic segmentation only", False),
    "MODEL.MASK_FORMER.TEST.SEMANTIC_INFERENCE_METHOD": _eq("score = sum over queries of class prob x mask prob",
                                                            "probabilistic"),
    "MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE": _eq(
        "score maps are combined first, then cropped and resized", False),
    "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD": _ign("read only by panoptic / iterative inference"),
    "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD": _ign("read only by panoptic inference"),
    # --- INPUT -----------------------------------------------------------------------------
    "INPUT.FORMAT": _eq("images are read as RGB (PIXEL_MEAN/STD in RGB order)", "RGB"),
    "INPUT.CROP.TYPE": _eq("crops of a fixed (height, width) = INPUT.CROP.SIZE", "absolute"),
    "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": _eq("one random crop, no retry on single-class crops", 1.0),
    "INPUT.MASK_FORMAT": _ign("instance-mask format; no instance masks here"),
    # --- SOLVER ----------------------------------------------------------------------------
    "SOLVER.OPTIMIZER": _eq("AdamW, as MaskFormer", "ADAMW"),
    "SOLVER.LR_SCHEDULER_NAME": _eq("poly schedule with warmup (SOLVER.POLY_LR_POWER)", "WarmupPolyLR"),
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": _eq("the norm of all parameters together is clipped", "full_model"),
    "SOLVER.POLY_LR_CONSTANT_ENDING": _eq("the poly schedule decays to 0", 0.0),
    "SOLVER.WARMUP_METHOD": _eq("linear warmup from WARMUP_FACTOR x lr", "linear"),
    "SOLVER.BIAS_LR_FACTOR": _eq("biases use the base learning rate", 1.0),
    "SOLVER.WEIGHT_DECAY_BIAS": _eq("biases use SOLVER.WEIGHT_DECAY (detectron2's None)", None),
    "SOLVER.REFERENCE_WORLD_SIZE": _eq("batch and lr are never rescaled by the number of GPUs", 0),
    "SOLVER.MOMENTUM": _ign("SGD only; the optimiser is AdamW"),
    "SOLVER.NESTEROV": _ign("SGD only; the optimiser is AdamW"),
    "SOLVER.GAMMA": _ign("step schedule only; the schedule is poly"),
    "SOLVER.STEPS": _ign("step schedule only; the schedule is poly"),
    "SOLVER.BASE_LR_END": _ign("cosine schedule only; the schedule is poly"),
    "SOLVER.NUM_DECAYS": _ign("step schedule only; the schedule is poly"),
    "SOLVER.RESCALE_INTERVAL": _ign("step schedule only; the schedule is poly"),
    # --- DATASETS / DATALOADER / TEST / misc ------------------------------------------------
    "DATALOADER.FILTER_EMPTY_ANNOTATIONS": _ign("detectron2 filters only instance annotations; no effect on "
                                                "semantic segmentation datasets"),
    "DATALOADER.ASPECT_RATIO_GROUPING": _ign("all training crops have the same size; batches are not grouped"),
    "DATALOADER.SAMPLER_TRAIN": _eq("infinite shuffled sampler, seeded by SEED", "TrainingSampler"),
    "DATALOADER.REPEAT_THRESHOLD": _ign("read only by RepeatFactorTrainingSampler"),
    "DATALOADER.REPEAT_SQRT": _ign("read only by RepeatFactorTrainingSampler"),
    "TEST.EXPECTED_RESULTS": _eq("no result verification after training", []),
    "TEST.DETECTIONS_PER_IMAGE": _ign(_DETECTION),
    "TEST.KEYPOINT_OKS_SIGMAS": _ign(_DETECTION),
    "TEST.PRECISE_BN.ENABLED": _eq("BatchNorm is frozen; no precise BN", False),
    "TEST.PRECISE_BN.NUM_ITER": _ign("read only with TEST.PRECISE_BN.ENABLED"),
    "VIS_PERIOD": _eq("no training-time visualisation (use `simformer visualize`)", 0),
    "GLOBAL.HACK": _ign("detectron2 internal"),
    "FLOAT32_PRECISION": _eq("default float32 matmul precision", ""),
    # --- SimFormer release (prop_former/config.py) ------------------------------------------
    "OUTPUT_PREFIX": _ign("release output naming; use OUTPUT_DIR / --output"),
    "MODEL.OUT_TASK": _eq("semantic segmentation", "SEG"),
    "MODEL.MASK_FORMER.MAKE_CLS": _eq("every query has a class head", True),
    "MODEL.MASK_FORMER.CLS_WEIGHT": _eq("class loss weight is LOSS.AssignCls / MODEL.MASK_FORMER.CLASS_WEIGHT", 1.0),
    "MODEL.MASK_FORMER.FIXED_MATCHER": _eq("Hungarian matching at every step", False),
    "MODEL.MASK_FORMER.FREEZE_QUERY": _eq("queries are learned", False),
    "MODEL.MASK_FORMER.TRANS_QUERY": _eq("randomly initialised learned queries", "RAND"),
    "MODEL.MASK_FORMER.CLS_LOSS_TYPE": _ign("read only by the release's image-level pooling loss (LOSS.MILCls, "
                                            "which must be 0)"),
    "CROSS_IMG_SIM.BASE_DETACH": _eq("pixel embeddings are detached for the SimNet loss", True),
    "CROSS_IMG_SIM.TEACH_DETACH": _eq("the SimNet teacher gets no gradient from distillation", True),
    "CROSS_IMG_SIM.BN": _eq("SimNet blocks use BatchNorm", True),
    "CROSS_IMG_SIM.PAIR_TYPE": _eq("the de-confounded cross-image rule (WEAKSHOT.PAIR_MODE cross)", "Deconf0.01"),
    "CROSS_IMG_SIM.DISTILL_TO": _eq("distillation into the novel score maps", "NovelScore"),
    "CROSS_IMG_SIM.DISTILL_FUNC": _eq("binary cross-entropy between student and teacher (the paper's L_dist)", "ce"),
    "CROSS_IMG_SIM.FOCUS_K": _eq("release default; the class-aware share is WEAKSHOT.SIMNET.FOCUS_RATIO", 0.0),
    "CROSS_IMG_SIM.DISTILL_VALID": _eq("release default", False),
    "ALL_EXISTING": _eq("image-level labels list every class present", True),
    "ASM.HasMaskCls": _eq("matching class cost weight 1 for every target", 1.0),
    "ASM.NoMaskCls": _eq("matching class cost weight 1 for every target", 1.0),
    "ASM.HasMaskMask": _eq("mask cost for targets with masks", 1.0),
    "ASM.NoMaskMask": _eq("no mask cost for targets without masks (novel classes)", 0.0),
    "LOSS.MILCls": _eq("no image-level pooling class loss", 0.0),
    "LOSS.CompSupNovelType": _eq("the complementary loss as in the paper", "EQ"),
    "LOSS.IgnoreLearnable": _eq("the ignore proposal is a constant (WEAKSHOT.COMPLEMENTARY.IGNORE_PROB)", False),
    "LOSS.PoolMask": _eq("no pooled-mask loss", 0.0),
    "LOSS.EntroRegNovel": _eq("no entropy regulariser", 0.0),
    "LOSS.PER_PROP_ENTROPY": _eq("no entropy regulariser", 0.0),
    "LOSS.CAT_MASK_ENTROPY": _eq("no entropy regulariser", 0.0),
    "EVAL.BIAS": _eq("no score bias between background / base / novel", ["1_1_1"]),
    "GeneratePseudoLabel": _eq("pseudo labels are made by `simformer pseudo-label` / `simformer pipeline`", False),
    "VIZ.EVAL_HEAD": _ign("release visualisation switch; use `simformer visualize`"),
}

# Whole sub-trees of detectron2 components that MaskFormer's semantic model never builds: any value.
IGNORED_PREFIXES = [
    (p, _ign(_DETECTION)) for p in (
        "MODEL.ANCHOR_GENERATOR.", "MODEL.PROPOSAL_GENERATOR.", "MODEL.RPN.", "MODEL.ROI_HEADS.",
        "MODEL.ROI_BOX_HEAD.", "MODEL.ROI_BOX_CASCADE_HEAD.", "MODEL.ROI_MASK_HEAD.", "MODEL.ROI_KEYPOINT_HEAD.",
        "MODEL.RETINANET.", "MODEL.PANOPTIC_FPN.", "MODEL.FPN.", "DATASETS.PROPOSAL_FILES_",
        "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_")
] + [("MODEL.SWIN.", _ign("Swin backbone settings; the Swin backbone is not implemented (MODEL.BACKBONE.NAME "
                           "D2SwinTransformer is rejected)"))]
