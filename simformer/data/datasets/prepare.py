"""Convert the raw ADE20K and COCO-Stuff-10K releases to the layout the catalog reads.

Both converters write single-channel uint8 PNGs whose pixel value is the contiguous training id
(``255`` = ignore), exactly as MaskFormer's ``prepare_*_sem_seg.py`` scripts do:

* ADE20K SceneParsing (``ADEChallengeData2016``): ``annotations/{training,validation}/*.png`` with
  raw ``0`` = other and ``1..150`` = classes  ->  ``annotations_detectron2/<split>/*.png`` with
  ``label = raw - 1`` (``0 -> 255``). Images stay in ``images/<split>``.
* COCO-Stuff-10K v1.0: ``annotations/*.mat`` (MATLAB v7.3 = HDF5, field ``S`` stored transposed) and
  ``imageLists/{train,test}.txt``  ->  ``annotations_detectron2/<split>/*.png`` with
  ``label = S - 2`` (``S = 1`` unlabeled -> ``255``; ``S`` in ``2..172`` -> ``0..170``) and
  ``images_detectron2/<split>/*.jpg`` (hard links, copies where linking is impossible).

Conversion is idempotent: an output that exists is skipped (outputs are written atomically, so an
existing file is complete). Every error names the offending file.
"""
from __future__ import annotations

import os
import shutil
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from simformer.utils.io import atomic_path, read_label, save_label_png

ADE20K_SPLITS = ("training", "validation")
ADE20K_NUM_CLASSES = 150
COCO_SPLITS = ("train", "test")
COCO_MIN_S, COCO_MAX_S = 1, 172  # S = 1 unlabeled; 2..172 -> the 171 training ids 0..170
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")

# (converter function name, args) -> "converted" | "skipped"; module-level so workers can pickle it.
Task = Tuple[str, tuple]


# ----------------------------------------------------------------------------------------------
# Pure label conversions (unit-testable without files)
# ----------------------------------------------------------------------------------------------
def ade20k_train_ids(raw: np.ndarray, source: str = "<array>") -> np.ndarray:
    """ADE20K raw label (H, W) with 0 = other, 1..150 = classes -> uint8 (H, W), raw - 1, 0 -> 255."""
    raw = np.asarray(raw)
    if raw.size and int(raw.max()) > ADE20K_NUM_CLASSES:
        bad = np.unique(raw[raw > ADE20K_NUM_CLASSES])
        raise ValueError(
            f"Unexpected label value(s) {bad[:8].tolist()} in {source}: ADE20K annotations hold 0 "
            f"(other) and 1..{ADE20K_NUM_CLASSES}. Is this an ADEChallengeData2016 annotation?"
        )
    lut = np.full(256, 255, dtype=np.uint8)
    lut[1:ADE20K_NUM_CLASSES + 1] = np.arange(ADE20K_NUM_CLASSES, dtype=np.uint8)
    return lut[raw.astype(np.uint8)]


def coco_stuff_train_ids(S: np.ndarray, source: str = "<array>") -> np.ndarray:
    """COCO-Stuff-10K v1.0 ``S`` (H, W), values 1..172 -> uint8 (H, W), ``S - 2`` with 1 -> 255."""
    S = np.asarray(S)
    if not np.issubdtype(S.dtype, np.integer):
        if not np.all(np.isfinite(S)) or not np.all(S == np.round(S)):
            raise ValueError(f"Unexpected label value(s) in {source}: field S holds non-integer numbers")
    Si = S.astype(np.int64)
    bad = (Si < COCO_MIN_S) | (Si > COCO_MAX_S)
    if bad.any():
        raise ValueError(
            f"Unexpected label value(s) {np.unique(Si[bad])[:8].tolist()} in {source}: COCO-Stuff-10K "
            f"v1.0 labels S are {COCO_MIN_S} (unlabeled) .. {COCO_MAX_S}. Is this the v1.0 release?"
        )
    return np.where(Si == 1, 255, Si - 2).astype(np.uint8)


def read_coco_stuff_mat(path: str) -> np.ndarray:
    """Field ``S`` of a COCO-Stuff-10K annotation as an (H, W) array.

    MATLAB v7.3 files are HDF5 and store matrices column-major, so h5py returns (W, H) and the
    array is transposed back; older MATLAB v5 files (scipy.io) are already (H, W).
    """
    import h5py

    if not os.path.isfile(path):
        raise FileNotFoundError(f"Annotation file not found: {path}")
    try:
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as f:
                if "S" not in f:
                    raise ValueError(f"{path} has no field 'S' (fields: {sorted(f.keys())})")
                S = np.asarray(f["S"][()]).T
        else:
            from scipy.io import loadmat

            data = loadmat(path)
            if "S" not in data:
                raise ValueError(f"{path} has no field 'S' (fields: {sorted(k for k in data if not k.startswith('__'))})")
            S = np.asarray(data["S"])
    except (OSError, NotImplementedError) as e:
        raise ValueError(f"Cannot read annotation {path} (corrupt or not a .mat file): {e}") from e
    if S.ndim != 2:
        raise ValueError(f"Field S of {path} has shape {S.shape}; expected a 2-D label map")
    return S


def image_size(path: str) -> Tuple[int, int]:
    """(height, width) of an image from its header only (the pixels are not decoded)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Image file not found: {path}")
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"Cannot read image {path} (corrupt or not an image): {e}") from e
    return h, w


def _check_shape(label: np.ndarray, label_path: str, image_path: str) -> None:
    h, w = image_size(image_path)
    if label.shape != (h, w):
        raise ValueError(
            f"Label {label_path} has shape {label.shape[0]}x{label.shape[1]} (HxW) but its image "
            f"{image_path} is {h}x{w}; the annotation does not belong to this image."
        )


# ----------------------------------------------------------------------------------------------
# Per-file workers
# ----------------------------------------------------------------------------------------------
def _convert_ade20k_file(label_path: str, image_path: str, out_path: str) -> str:
    if os.path.exists(out_path):
        return "skipped"
    raw = read_label(label_path)
    _check_shape(raw, label_path, image_path)
    save_label_png(out_path, ade20k_train_ids(raw, label_path))
    return "converted"


def link_or_copy(src: str, dst: str) -> bool:
    """Hard-link ``src`` to ``dst`` (atomic), copying atomically where linking fails. False if dst exists."""
    if os.path.exists(dst):
        return False
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    try:
        os.link(src, dst)
        return True
    except FileExistsError:
        return False
    except OSError:  # cross-device, unsupported by the file system, or not permitted
        pass
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return True


def _convert_coco_file(mat_path: str, image_path: str, out_label: str, out_image: str) -> str:
    wrote = False
    if not os.path.exists(out_label):
        S = read_coco_stuff_mat(mat_path)
        _check_shape(S, mat_path, image_path)
        save_label_png(out_label, coco_stuff_train_ids(S, mat_path))
        wrote = True
    if not os.path.exists(out_image):
        if not os.path.isfile(image_path):
            raise FileNotFoundError(f"Image file not found: {image_path}")
        wrote = link_or_copy(image_path, out_image) or wrote
    return "converted" if wrote else "skipped"


_WORKERS: Dict[str, Callable[..., str]] = {"ade20k": _convert_ade20k_file, "coco": _convert_coco_file}


def _run_task(task: Task) -> str:
    kind, args = task
    return _WORKERS[kind](*args)


def _run_tasks(tasks: Sequence[Task], *, desc: str, workers: Optional[int], progress: bool) -> Dict[str, int]:
    """Run tasks serially or in a process pool; on the first error stop, let running ones finish."""
    from tqdm import tqdm

    counts = {"converted": 0, "skipped": 0, "total": len(tasks)}
    bar = tqdm(total=len(tasks), desc=desc, unit="img", disable=not progress or not tasks)
    try:
        if not workers or workers <= 1 or len(tasks) < 2:
            for t in tasks:
                counts[_run_task(t)] += 1
                bar.update(1)
            return counts
        # Chunks keep the per-future overhead small; cancel_futures drops queued chunks on error so
        # no worker is killed half-way through a write.
        chunk = max(1, min(64, len(tasks) // (4 * workers)))
        chunks = [tasks[i:i + chunk] for i in range(0, len(tasks), chunk)]
        with ProcessPoolExecutor(max_workers=workers) as ex:
            pending = {ex.submit(_run_chunk, c) for c in chunks}
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for fut in done:
                        for r in fut.result():  # re-raises a worker's error here
                            counts[r] += 1
                        bar.update(len(fut.result()))
            except BaseException:
                ex.shutdown(wait=True, cancel_futures=True)
                raise
        return counts
    finally:
        bar.close()


def _run_chunk(tasks: Sequence[Task]) -> List[str]:
    return [_run_task(t) for t in tasks]


def _find_image(folder: str, stem: str) -> str:
    for ext in _IMAGE_EXTS:
        p = os.path.join(folder, stem + ext)
        if os.path.isfile(p):
            return p
    raise FileNotFoundError(f"No image {os.path.join(folder, stem)}.jpg for its annotation; is the dataset complete?")


def format_summary(name: str, summary: Dict[str, Dict[str, int]]) -> str:
    parts = [f"{split}: {c['converted']} converted / {c['skipped']} skipped / {c['total']} total"
             for split, c in summary.items()]
    return f"{name}: " + "; ".join(parts)


# ----------------------------------------------------------------------------------------------
# Dataset converters
# ----------------------------------------------------------------------------------------------
def prepare_ade20k(root: str, *, workers: Optional[int] = None, progress: bool = True,
                   log: Callable[[str], None] = print) -> Dict[str, Dict[str, int]]:
    """Write ``root/annotations_detectron2/<split>/*.png`` for every split folder that exists.

    Returns ``{split: {"converted", "skipped", "total"}}``. Raises ``FileNotFoundError`` if
    ``root/annotations`` or every split is missing, ``ValueError`` naming the file on bad labels.
    """
    root = os.path.expanduser(root)
    ann_root = os.path.join(root, "annotations")
    if not os.path.isdir(ann_root):
        raise FileNotFoundError(
            f"{ann_root} does not exist: --root must be the ADEChallengeData2016 folder of the "
            "SceneParsing release (with images/ and annotations/)."
        )
    splits = [s for s in ADE20K_SPLITS if os.path.isdir(os.path.join(ann_root, s))]
    missing = [s for s in ADE20K_SPLITS if s not in splits]
    if not splits:
        raise FileNotFoundError(f"No split folder ({', '.join(ADE20K_SPLITS)}) in {ann_root}")
    if missing:
        log(f"ade20k: split(s) {', '.join(missing)} not found in {ann_root}; converting {', '.join(splits)} only")
    summary = {}
    for split in splits:
        img_dir = os.path.join(root, "images", split)
        if not os.path.isdir(img_dir):
            raise FileNotFoundError(f"Image folder {img_dir} is missing (needed for the {split} annotations)")
        src_dir = os.path.join(ann_root, split)
        out_dir = os.path.join(root, "annotations_detectron2", split)
        os.makedirs(out_dir, exist_ok=True)
        names = sorted(n for n in os.listdir(src_dir) if n.lower().endswith(".png") and not n.startswith("."))
        if not names:
            log(f"ade20k: warning: no PNG annotations in {src_dir}")
        tasks = []
        for n in names:
            stem = os.path.splitext(n)[0]
            tasks.append(("ade20k", (os.path.join(src_dir, n), _find_image(img_dir, stem),
                                     os.path.join(out_dir, stem + ".png"))))
        summary[split] = _run_tasks(tasks, desc=f"ade20k {split}", workers=workers, progress=progress)
    log(format_summary("ade20k", summary))
    return summary


def read_image_list(path: str) -> List[str]:
    """Image stems listed in a COCO-Stuff ``imageLists/*.txt`` (names with or without extension)."""
    stems, seen = [], set()
    with open(path) as f:
        for line in f:
            name = line.strip()
            if not name:
                continue
            stem, ext = os.path.splitext(os.path.basename(name))
            if ext.lower() not in ("", ".jpg", ".jpeg", ".png", ".mat"):
                stem = os.path.basename(name)  # a dot inside the name, not an extension
            if stem not in seen:
                seen.add(stem)
                stems.append(stem)
    return stems


def prepare_coco_stuff_10k(root: str, *, workers: Optional[int] = None, progress: bool = True,
                           log: Callable[[str], None] = print) -> Dict[str, Dict[str, int]]:
    """Write ``root/{images,annotations}_detectron2/<split>/`` for every ``imageLists/<split>.txt``.

    Returns ``{split: {"converted", "skipped", "total"}}``; errors name the offending file.
    """
    root = os.path.expanduser(root)
    for sub in ("images", "annotations", "imageLists"):
        if not os.path.isdir(os.path.join(root, sub)):
            raise FileNotFoundError(
                f"{os.path.join(root, sub)} does not exist: --root must be the COCO-Stuff-10K v1.0 folder "
                "(with images/, annotations/ and imageLists/)."
            )
    lists = {s: os.path.join(root, "imageLists", s + ".txt") for s in COCO_SPLITS}
    splits = [s for s in COCO_SPLITS if os.path.isfile(lists[s])]
    missing = [s for s in COCO_SPLITS if s not in splits]
    if not splits:
        raise FileNotFoundError(f"No image list ({', '.join(s + '.txt' for s in COCO_SPLITS)}) in {os.path.join(root, 'imageLists')}")
    if missing:
        log(f"coco-stuff-10k: image list(s) {', '.join(missing)} not found; converting {', '.join(splits)} only")
    summary = {}
    for split in splits:
        stems = read_image_list(lists[split])
        if not stems:
            log(f"coco-stuff-10k: warning: {lists[split]} lists no images")
        out_lbl = os.path.join(root, "annotations_detectron2", split)
        out_img = os.path.join(root, "images_detectron2", split)
        os.makedirs(out_lbl, exist_ok=True)
        os.makedirs(out_img, exist_ok=True)
        tasks = []
        for stem in stems:
            mat = os.path.join(root, "annotations", stem + ".mat")
            if not os.path.isfile(mat):
                raise FileNotFoundError(f"Annotation {mat} (listed in {lists[split]}) does not exist")
            image = _find_image(os.path.join(root, "images"), stem)
            tasks.append(("coco", (mat, image, os.path.join(out_lbl, stem + ".png"),
                                   os.path.join(out_img, stem + os.path.splitext(image)[1].lower()))))
        summary[split] = _run_tasks(tasks, desc=f"coco-stuff-10k {split}", workers=workers, progress=progress)
    log(format_summary("coco-stuff-10k", summary))
    return summary
