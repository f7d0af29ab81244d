"""Dataset catalog: registered semantic-segmentation datasets in the detectron2/MaskFormer layout.

Every dataset is a folder of images plus a folder of single-channel PNG labels with the same file
stems (pixel value = contiguous class id, 255 = ignore), and a list of class names. Built in:

=========================  ==========================================================  =======
name                       folders under the datasets root                              classes
=========================  ==========================================================  =======
coco_stuff_10k_train/test  coco/coco_stuff_10k/{images,annotations}_detectron2/{train,test}  171
ade20k_train/val           ADEChallengeData2016/{images,annotations_detectron2}/{training,validation}  150
toyscenes_train/val        toyscenes/{images,annotations}/{train,val}                  24
=========================  ==========================================================  =======

MaskFormer's names (``ade20k_sem_seg_train``, ``coco_2017_train_stuff_10k_sem_seg``, ...) are
aliases. The datasets root is ``$SIMFORMER_DATASETS``, else ``$DETECTRON2_DATASETS``, else
``./datasets``. Your own datasets in the same layout are added with ``register_folder`` (in code),
``simformer register`` (persisted in ``registry_path()``), or named directly as ``ROOT:SPLIT``
(e.g. ``DATASETS.TRAIN ["/data/mydata:train"]``).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, List, Optional

import yaml

logger = logging.getLogger("simformer")

IGNORE_LABEL = 255
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")

# Release code skips these all-void / broken training images (docs/method.md section 10).
ADE20K_TRAIN_SKIP = frozenset(
    f"ADE_train_000{n}"
    for n in ["05149", "05150", "05152", "05333", "05905", "06510", "13298", "14634", "14636",
              "14884", "15320", "15330", "15928", "19743", "19385", "19873"]
)
COCO_TRAIN_SKIP = frozenset(
    f"COCO_train2014_000000{n}"
    for n in ["016680", "230639", "382127", "429995", "314646", "003518", "058075"]
)


def datasets_root() -> str:
    """``$SIMFORMER_DATASETS``, then ``$DETECTRON2_DATASETS``, then ``./datasets``."""
    for var in ("SIMFORMER_DATASETS", "DETECTRON2_DATASETS"):
        if os.environ.get(var):
            return os.path.expanduser(os.environ[var])
    return "datasets"


def registry_path() -> str:
    """YAML file holding datasets added with ``simformer register``."""
    if os.environ.get("SIMFORMER_REGISTRY"):
        return os.path.expanduser(os.environ["SIMFORMER_REGISTRY"])
    return os.path.join(datasets_root(), "simformer_registry.yaml")


@lru_cache(maxsize=None)
def builtin_class_names(family: str) -> List[str]:
    """Class names of a built-in family shipped as package data (contiguous-id order)."""
    from importlib import resources

    if family == "toyscenes":
        from .datasets.toyscenes import TOYSCENES_CLASSES

        return [c.name for c in TOYSCENES_CLASSES]
    data = json.loads(resources.files("simformer.resources").joinpath("class_names.json").read_text())
    if family not in data:
        raise KeyError(f"No built-in class list for '{family}'; known: {sorted(data)} + ['toyscenes']")
    return list(data[family])


def read_class_names(folder_or_file: str) -> List[str]:
    """Class names from ``classes.json`` (a list, or {"classes": [...]}) or ``classes.txt``."""
    path = folder_or_file
    if os.path.isdir(path):
        for cand in ("classes.json", "classes.txt"):
            if os.path.isfile(os.path.join(path, cand)):
                path = os.path.join(path, cand)
                break
        else:
            raise FileNotFoundError(
                f"No classes.json or classes.txt in {folder_or_file}: write one class name per "
                "contiguous id (pixel value) there."
            )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Class-name file not found: {path}")
    if path.endswith(".json"):
        with open(path) as f:
            data = json.load(f)
        names = data["classes"] if isinstance(data, dict) else data
    else:
        with open(path) as f:
            names = [line.strip() for line in f if line.strip()]
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path} must list class names as strings")
    if len(names) > 255:
        raise ValueError(f"{path} lists {len(names)} classes; at most 255 fit a uint8 label with 255 = ignore")
    return list(names)


@dataclass
class DatasetInfo:
    """Where a dataset lives and what its labels mean.

    ``family`` groups the splits of one dataset (e.g. ``ade20k`` for ade20k_train/val); class
    splits (`simformer split`) are defined per family.
    """

    name: str
    family: str
    image_root: str
    sem_seg_root: str
    classes: List[str]
    is_train: bool
    skip: frozenset = field(default_factory=frozenset)
    ignore_label: int = IGNORE_LABEL
    prepare_hint: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)


_REGISTRY: Dict[str, DatasetInfo] = {}
_ALIASES = {
    "ade20k_sem_seg_train": "ade20k_train",
    "ade20k_sem_seg_val": "ade20k_val",
    "coco_2017_train_stuff_10k_sem_seg": "coco_stuff_10k_train",
    "coco_2017_test_stuff_10k_sem_seg": "coco_stuff_10k_test",
}


def _builtin(name: str) -> Optional[DatasetInfo]:
    root = datasets_root()
    if name.startswith("coco_stuff_10k_") and name.split("_")[-1] in ("train", "test"):
        split = name.split("_")[-1]
        base = os.path.join(root, "coco", "coco_stuff_10k")
        return DatasetInfo(
            name, "coco_stuff_10k", os.path.join(base, "images_detectron2", split),
            os.path.join(base, "annotations_detectron2", split), builtin_class_names("coco_stuff_10k"),
            is_train=split == "train", skip=COCO_TRAIN_SKIP if split == "train" else frozenset(),
            prepare_hint=f"run `simformer prepare coco-stuff-10k --root {base}`",
        )
    if name in ("ade20k_train", "ade20k_val"):
        split = "training" if name.endswith("train") else "validation"
        base = os.path.join(root, "ADEChallengeData2016")
        return DatasetInfo(
            name, "ade20k", os.path.join(base, "images", split),
            os.path.join(base, "annotations_detectron2", split), builtin_class_names("ade20k"),
            is_train=split == "training", skip=ADE20K_TRAIN_SKIP if split == "training" else frozenset(),
            prepare_hint=f"run `simformer prepare ade20k --root {base}`",
        )
    if name in ("toyscenes_train", "toyscenes_val"):
        split = name.split("_")[-1]
        base = os.path.join(root, "toyscenes")
        return DatasetInfo(
            name, "toyscenes", os.path.join(base, "images", split), os.path.join(base, "annotations", split),
            builtin_class_names("toyscenes"), is_train=split == "train",
            prepare_hint=f"run `simformer prepare toyscenes --root {base}`",
        )
    return None


def register_folder(name: str, root: str, split: str, family: Optional[str] = None,
                    images: str = "images", labels: str = "annotations", is_train: Optional[bool] = None) -> DatasetInfo:
    """Register ``root/{images}/{split}`` + ``root/{labels}/{split}`` with ``root/classes.{json,txt}``."""
    root = os.path.expanduser(root)
    info = DatasetInfo(
        name=name,
        family=family or os.path.basename(os.path.normpath(root)),
        image_root=os.path.join(root, images, split),
        sem_seg_root=os.path.join(root, labels, split),
        classes=read_class_names(root),
        is_train=("train" in split) if is_train is None else is_train,
        prepare_hint=f"check the folder given to `simformer register {name}`",
    )
    _REGISTRY[name] = info
    return info


def _load_user_registry() -> Dict[str, dict]:
    path = registry_path()
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"Dataset registry {path} must be a mapping name -> entry")
    return data


def save_user_registration(name: str, entry: dict) -> str:
    """Persist a ``register_folder`` entry (root, split, family, images, labels) to the registry."""
    from simformer.utils.io import atomic_write_text

    data = _load_user_registry()
    data[name] = entry
    path = registry_path()
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=True))
    return path


def get_dataset(name: str) -> DatasetInfo:
    """Look a dataset up by name: in-process registrations, built-ins, then the user registry."""
    name = _ALIASES.get(name, name)
    if name in _REGISTRY:
        return _REGISTRY[name]
    info = _builtin(name)
    if info is not None:
        return info
    user = _load_user_registry()
    if name in user:
        return register_folder(name, **user[name])
    if ":" in name:  # "ROOT:SPLIT" names a folder in the generic layout directly (e.g. in a config)
        root, split = name.rsplit(":", 1)
        if os.path.isdir(os.path.expanduser(root)):
            return register_folder(name, root, split)
    raise KeyError(
        f"Dataset '{name}' is not registered. Built-in: {', '.join(list_datasets())}. Add your own "
        f"with `simformer register {name} --root DIR --split SPLIT` (registry: {registry_path()})."
    )


def list_datasets() -> List[str]:
    names = ["coco_stuff_10k_train", "coco_stuff_10k_test", "ade20k_train", "ade20k_val",
             "toyscenes_train", "toyscenes_val"]
    names += [n for n in _REGISTRY if n not in names]
    try:
        names += [n for n in _load_user_registry() if n not in names]
    except (OSError, ValueError):
        pass
    return names


def family_datasets(family: str) -> List[DatasetInfo]:
    """All registered datasets of a family (used to find the training set of a split's dataset)."""
    out = []
    for n in list_datasets():
        try:
            info = get_dataset(n)
        except (KeyError, FileNotFoundError, ValueError):
            continue
        if info.family == family:
            out.append(info)
    return out


def family_train_dataset(family: str) -> DatasetInfo:
    for info in family_datasets(family):
        if info.is_train:
            return info
    raise KeyError(f"No training dataset registered for family '{family}'")


def class_names(family_or_dataset: str) -> List[str]:
    """Class names of a family ('ade20k') or of a dataset name ('ade20k_val')."""
    try:
        return builtin_class_names(family_or_dataset)
    except KeyError:
        pass
    try:
        return get_dataset(family_or_dataset).classes
    except KeyError:
        pass
    infos = family_datasets(family_or_dataset)
    if infos:
        return infos[0].classes
    raise KeyError(f"Unknown dataset or family '{family_or_dataset}'")


def get_dataset_dicts(name: str) -> List[dict]:
    """detectron2-style records, sorted by file name.

    Each: ``{"file_name", "sem_seg_file_name", "image_id", "index"}``. Images listed in the
    dataset's skip list are dropped (logged, with the count); labels whose image is missing (a
    deleted image) are dropped with a warning naming the count. Raises ``FileNotFoundError`` naming the missing folder or
    label file and how to prepare the data.
    """
    info = get_dataset(name)
    for folder in (info.image_root, info.sem_seg_root):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"Dataset '{name}': folder {folder} does not exist; {info.prepare_hint}.")
    stems = {}
    for fn in os.listdir(info.image_root):
        stem, ext = os.path.splitext(fn)
        if ext.lower() in IMAGE_EXTS and not fn.startswith("."):
            stems[stem] = fn
    if not stems:
        raise FileNotFoundError(f"Dataset '{name}': no images in {info.image_root}; {info.prepare_hint}.")
    records = []
    skipped = sorted(set(stems) & set(info.skip))
    orphans = sorted(os.path.splitext(fn)[0] for fn in os.listdir(info.sem_seg_root)
                     if fn.endswith(".png") and not fn.startswith(".") and os.path.splitext(fn)[0] not in stems)
    if orphans:
        logger.warning(
            "Dataset '%s': dropped %d record(s) whose image is missing from %s although the label exists "
            "in %s (deleted images?), e.g. %s", name, len(orphans), info.image_root, info.sem_seg_root,
            ", ".join(orphans[:3]))
    if skipped:
        logger.info(
            "Dataset '%s': dropped %d image(s) on the dataset's skip list (all-void / broken in the "
            "release), e.g. %s", name, len(skipped), ", ".join(skipped[:3]))
    for stem in sorted(stems):
        if stem in info.skip:
            continue
        label = os.path.join(info.sem_seg_root, stem + ".png")
        if not os.path.isfile(label):
            raise FileNotFoundError(
                f"Dataset '{name}': image {os.path.join(info.image_root, stems[stem])} has no label "
                f"{label}; {info.prepare_hint}."
            )
        records.append({
            "file_name": os.path.join(info.image_root, stems[stem]),
            "sem_seg_file_name": label,
            "image_id": stem,
            "index": len(records),
        })
    return records


def dataset_fingerprint(records: List[dict]) -> dict:
    """What a run read, to tell later whether two runs saw the same files: the number of records,
    the total bytes of their image and label files and a SHA-256 over every (image name, size,
    label name, size) in record order. Names and sizes, not content: a stat per file, so cheap at
    ADE20K scale; regenerated or re-encoded data changes the sizes with near certainty."""
    import hashlib

    digest, total = hashlib.sha256(), 0
    for r in records:
        for path in (r["file_name"], r["sem_seg_file_name"]):
            size = os.path.getsize(path)
            total += size
            digest.update(f"{os.path.basename(path)}\t{size}\n".encode())
    return {"records": len(records), "bytes": total, "sha256": digest.hexdigest()}
