"""Dataset mapper: a catalog record + an explicit RNG -> the sample dict of docs/design.md.

Training::

    image         float32 [3,H,W]  RGB 0..255 after resize/crop/colour/flip, padding = pixel mean
    sem_seg       int64   [H,W]    base-only target: novel (unless novel_masks), void, padding = 255
    sem_seg_full  int64   [H,W]    full GT augmented like the image, padding = 255
    valid         bool    [H,W]    True on real pixels, False on padding
    image_labels  bool    [K]      classes in the whole original label map (or in the crop, option)

With ``drop_novel`` (``WEAKSHOT.DROP_NOVEL``, base-only training) novel pixels are 255 in
``sem_seg_full`` too and novel classes are never in ``image_labels``: nothing a training step reads
mentions them.

Test: ``image`` is only short-side resized (no crop/flip/pad), ``sem_seg_full`` is the untouched
original-resolution label, ``valid`` is all True, ``image_labels`` come from the whole image.
Both also carry ``file_name``, ``image_id``, ``index`` and the original ``height``/``width``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from simformer.config.checks import novel_masks
from simformer.utils.io import read_image, read_label

from . import transforms as T

__all__ = ["WeakShotDatasetMapper", "build_mapper"]


class WeakShotDatasetMapper:
    """Reads, checks and augments one record; all randomness comes from the ``rng`` argument."""

    def __init__(
        self,
        *,
        is_train: bool,
        num_classes: int,
        novel_mask: Optional[np.ndarray] = None,
        min_size_train: Sequence[int] = (512,),
        min_size_train_sampling: str = "choice",
        max_size_train: int = 2048,
        min_size_test: int = 512,
        max_size_test: int = 2048,
        crop_enabled: bool = True,
        crop_size: Sequence[int] = (512, 512),
        color_aug_ssd: bool = True,
        random_flip: bool = True,
        size_divisibility: int = 512,
        pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
        image_labels_from_crop: bool = False,
        novel_masks: bool = False,
        drop_novel: bool = False,
        ignore_label: int = 255,
    ):
        """
        Args:
            num_classes: K; label ids must be < K or equal ``ignore_label``.
            novel_mask: bool ``[K]``, True for novel classes; None = every class is base.
            novel_masks: keep novel ids in ``sem_seg`` (FullyOracle, pseudo-label retraining).
            drop_novel: training only: novel pixels -> ``ignore_label`` in every label map of the
                sample and novel classes out of ``image_labels`` (needs ``novel_mask``).
            image_labels_from_crop: image-level labels from the augmented crop instead of the
                whole image (release-code behaviour).
            Other arguments mirror the ``INPUT.*`` config keys.
        """
        if num_classes <= 0 or num_classes > 255:
            raise ValueError(f"num_classes must be in 1..255 (uint8 labels with 255 = ignore), got {num_classes}")
        if not 0 <= ignore_label <= 255 or ignore_label < num_classes:
            raise ValueError(f"ignore_label {ignore_label} must be in {num_classes}..255")
        if novel_mask is not None:
            novel_mask = np.asarray(novel_mask, dtype=bool)
            if novel_mask.shape != (num_classes,):
                raise ValueError(f"novel_mask must have shape ({num_classes},), got {novel_mask.shape}")
        if len(crop_size) != 2 or min(crop_size) <= 0:
            raise ValueError(f"INPUT.CROP.SIZE must be [height, width] > 0, got {list(crop_size)}")
        if len(pixel_mean) != 3:
            raise ValueError(f"MODEL.PIXEL_MEAN must have 3 (RGB) values, got {list(pixel_mean)}")
        if size_divisibility < 0:
            raise ValueError(f"INPUT.SIZE_DIVISIBILITY must be >= 0, got {size_divisibility}")
        if min_size_train_sampling not in ("choice", "range"):
            raise ValueError(
                f"INPUT.MIN_SIZE_TRAIN_SAMPLING must be 'choice' or 'range', got {min_size_train_sampling!r}"
            )
        self.is_train = bool(is_train)
        self.num_classes = int(num_classes)
        self.novel_mask = novel_mask
        self.min_size_train = [int(s) for s in min_size_train]
        self.min_size_train_sampling = min_size_train_sampling
        self.max_size_train = int(max_size_train)
        self.min_size_test = int(min_size_test)
        self.max_size_test = int(max_size_test)
        self.crop_enabled = bool(crop_enabled)
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.color_aug_ssd = bool(color_aug_ssd)
        self.random_flip = bool(random_flip)
        self.size_divisibility = int(size_divisibility)
        self.pixel_mean = tuple(float(m) for m in pixel_mean)
        self.image_labels_from_crop = bool(image_labels_from_crop)
        self.novel_masks = bool(novel_masks)
        self.drop_novel = bool(drop_novel) and self.is_train
        if self.drop_novel and (novel_mask is None or self.novel_masks):
            raise ValueError("drop_novel needs a novel_mask (the split's novel classes) and novel_masks False")
        self.ignore_label = int(ignore_label)
        # Lookup table id -> base-only target id (applied to uint8 labels, so 256 entries).
        lut = np.arange(256, dtype=np.int64)
        if novel_mask is not None and not self.novel_masks:
            lut[:num_classes][novel_mask] = self.ignore_label
        self._base_lut = lut

    # --------------------------------------------------------------------------------------------
    def _read(self, record: dict):
        img_path, lbl_path = record["file_name"], record["sem_seg_file_name"]
        image = read_image(img_path)
        label = read_label(lbl_path)
        if image.shape[:2] != label.shape:
            raise ValueError(
                f"Image {img_path} is {image.shape[0]}x{image.shape[1]} (HxW) but its label {lbl_path} is "
                f"{label.shape[0]}x{label.shape[1]}; regenerate the label at the image's size "
                "(or fix the pairing of image and label files)."
            )
        counts = np.bincount(label.ravel(), minlength=256)
        bad = np.flatnonzero(counts[self.num_classes:])
        bad = bad[bad + self.num_classes != self.ignore_label] + self.num_classes
        if bad.size:
            raise ValueError(
                f"Label {lbl_path} contains ids {bad.tolist()[:10]} outside 0..{self.num_classes - 1} "
                f"(and != {self.ignore_label}); the dataset has {self.num_classes} classes. Check that the "
                "labels were converted to contiguous ids (`simformer prepare`) and that the class list / "
                "MODEL.SEM_SEG_HEAD.NUM_CLASSES match the dataset."
            )
        return image, label, counts[: self.num_classes] > 0

    def _present(self, label: np.ndarray) -> np.ndarray:
        """bool [K]: ids present in an integer label map (ignore and padding excluded)."""
        ids = label[label < self.num_classes]
        out = np.zeros(self.num_classes, dtype=bool)
        out[ids] = True
        return out

    def __call__(self, record: dict, rng: Optional[np.random.Generator] = None) -> dict:
        """Map one record (``get_dataset_dicts`` entry) to a sample dict; ``rng`` None = fresh."""
        if rng is None:
            rng = np.random.default_rng()
        image, label, whole_labels = self._read(record)
        if self.drop_novel:  # base-only training: the novel classes vanish before any augmentation
            label = self._base_lut[label].astype(np.uint8)
            whole_labels = whole_labels & ~self.novel_mask
        h0, w0 = label.shape
        out = {
            "file_name": record["file_name"],
            "image_id": record["image_id"],
            "index": record["index"],
            "height": int(h0),
            "width": int(w0),
        }
        if not self.is_train:
            img, _ = T.resize_short_side(image, None, self.min_size_test, self.max_size_test)
            out["image"] = np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)
            out["sem_seg_full"] = label.astype(np.int64)
            out["valid"] = np.ones(img.shape[:2], dtype=bool)
            out["image_labels"] = whole_labels
            return _to_torch(out)

        # Draw order is fixed (size, crop, colour, flip) so disabling a later step leaves the
        # earlier draws of the same generator unchanged.
        short = T.sample_short_side(rng, self.min_size_train, self.min_size_train_sampling)
        img, lbl = T.resize_short_side(image, label, short, self.max_size_train)
        if self.crop_enabled:
            box = T.sample_crop_box(img.shape[0], img.shape[1], self.crop_size, rng)
            img, lbl = T.crop(img, box), T.crop(lbl, box)
        img = T.color_aug_ssd(img, rng) if self.color_aug_ssd else img.astype(np.float32)
        if self.random_flip and rng.random() < 0.5:
            img, lbl = T.hflip(img), T.hflip(lbl)
        img, full, valid = T.pad_to_divisible(img, lbl, self.size_divisibility, self.pixel_mean, self.ignore_label)
        out["image"] = np.ascontiguousarray(img.transpose(2, 0, 1))
        out["sem_seg_full"] = full
        out["sem_seg"] = self._base_lut[full]
        out["valid"] = valid
        out["image_labels"] = self._present(full) if self.image_labels_from_crop else whole_labels
        return _to_torch(out)


def _to_torch(sample: dict) -> dict:
    """numpy arrays -> tensors (image float32, label maps int64, masks bool), per the contract in
    docs/design.md; tensors share memory with the arrays (no copy)."""
    for key, value in sample.items():
        if isinstance(value, np.ndarray):
            sample[key] = torch.from_numpy(np.ascontiguousarray(value))
    return sample


def build_mapper(cfg, is_train: bool, split=None, num_classes: Optional[int] = None) -> WeakShotDatasetMapper:
    """Mapper from the config (``INPUT.*``, ``MODEL.PIXEL_MEAN``, ``WEAKSHOT.*``) and a split.

    ``split`` (``simformer.data.class_split.Split``) gives K and the novel classes; None = all base.
    K comes from ``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` when set (>0), else from the split, else from
    the class list of ``DATASETS.TRAIN[0]``; ``num_classes`` (the class count of the dataset being
    read, e.g. an evaluation set) replaces the last two. Pseudo-label retraining (``WEAKSHOT.PSEUDO_LABEL_DIR``)
    supervises every class with masks, like ``WEAKSHOT.NOVEL_MASKS``.
    """
    k = int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
    if split is not None:
        if k > 0 and k != split.num_classes:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES = {k} but the split of '{split.dataset}' has "
                f"{split.num_classes} classes; set NUM_CLASSES to -1 or to {split.num_classes}."
            )
        k = split.num_classes
    elif num_classes is not None:
        k = int(num_classes)
    elif k <= 0:
        from .catalog import get_dataset

        k = len(get_dataset(cfg.DATASETS.TRAIN[0]).classes)
    return WeakShotDatasetMapper(
        is_train=is_train,
        num_classes=k,
        novel_mask=None if split is None else split.novel_mask(),
        min_size_train=list(cfg.INPUT.MIN_SIZE_TRAIN),
        min_size_train_sampling=cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING,
        max_size_train=cfg.INPUT.MAX_SIZE_TRAIN,
        min_size_test=cfg.INPUT.MIN_SIZE_TEST,
        max_size_test=cfg.INPUT.MAX_SIZE_TEST,
        crop_enabled=cfg.INPUT.CROP.ENABLED,
        crop_size=list(cfg.INPUT.CROP.SIZE),
        color_aug_ssd=cfg.INPUT.COLOR_AUG_SSD,
        random_flip=cfg.INPUT.RANDOM_FLIP,
        size_divisibility=cfg.INPUT.SIZE_DIVISIBILITY,
        pixel_mean=list(cfg.MODEL.PIXEL_MEAN),
        image_labels_from_crop=cfg.WEAKSHOT.IMAGE_LABELS_FROM_CROP,
        novel_masks=novel_masks(cfg),
        drop_novel=bool(cfg.WEAKSHOT.DROP_NOVEL) and is_train,
        ignore_label=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
    )
