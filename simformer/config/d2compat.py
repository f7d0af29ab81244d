"""detectron2 / MaskFormer / SimFormer-release config keys, mapped onto simformer's.

``translate(entries)`` takes the flattened keys of a config (after its ``_BASE_`` chain and the
command-line overrides) and returns simformer keys, notes and problems. Each foreign key is:

- **translated**: it becomes one or more simformer keys (``MODEL.META_ARCHITECTURE: MaskFormer``,
  ``MODEL.BACKBONE.NAME: build_resnet_backbone`` + ``MODEL.RESNETS.DEPTH``, ``MODEL.WEIGHTS:
  detectron2://ImageNetPretrained/...``, detectron2 dataset names, the release's loss weights);
- **accepted when equal**: its value is what simformer implements (``SOLVER.OPTIMIZER: ADAMW``);
  any other value is a problem naming the key and the reason;
- **ignored**: it has no effect in MaskFormer's semantic model either (detection heads,
  keys MaskFormer marks "not used"), so any value is accepted and listed in the notes.

Keys of simformer's own schema pass through. A key in none of these is unknown. The full table,
with reasons, is ``RULES`` below and docs/detectron2.md.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from .d2rules import IGNORED_PREFIXES, RULES, Rule

__all__ = ["Entry", "Translation", "translate", "resolve_detectron2_url", "weights_cache_dir", "RULES"]

D2_URL_PREFIXES = ("detectron2://", "https://dl.fbaipublicfiles.com/detectron2/")

# detectron2 / MaskFormer / release dataset names -> (ours, split file or None)
D2_DATASETS = {
    "ade20k_sem_seg_train": "ade20k_train",
    "ade20k_sem_seg_val": "ade20k_val",
    "coco_2017_train_stuff_10k_sem_seg": "coco_stuff_10k_train",
    "coco_2017_test_stuff_10k_sem_seg": "coco_stuff_10k_test",
}
_RELEASE_DATASET = re.compile(r"^(ADE|coco_stuff)_split(\d+)_(train|val)$")


@dataclass
class Entry:
    """One key's value, where it was set, and its precedence (later files and the command line win)."""

    value: Any
    origin: str
    rank: int


@dataclass
class Translation:
    values: Dict[str, Entry] = field(default_factory=dict)  # simformer key -> entry
    notes: List[str] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)

    def set(self, key: str, value: Any, source: Entry, why: str) -> None:
        """Set a simformer key from a translated one; a same-rank contradiction is a problem."""
        old = self.values.get(key)
        if old is not None and old.rank > source.rank:
            self.notes.append(f"{key}: {old.origin} sets {old.value!r}, which wins over {why} from {source.origin}")
            return
        if old is not None and old.rank == source.rank and _norm(old.value) != _norm(value):
            self.problems.append(f"{key}: {old.origin} sets {old.value!r} but {why} ({source.origin}) needs {value!r}")
            return
        self.values[key] = Entry(value, source.origin, source.rank)
        if why != "native":
            self.notes.append(f"{key} = {value!r}  <- {why} ({source.origin})")


def _norm(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, str):
        return v.strip()
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    return v


def weights_cache_dir() -> str:
    """Where ``detectron2://`` files are looked up: $SIMFORMER_WEIGHTS, else detectron2's own
    download cache ($FVCORE_CACHE, default ~/.torch/iopath_cache)."""
    env = os.environ.get("SIMFORMER_WEIGHTS")
    if env:
        return os.path.expanduser(env)
    return os.path.expanduser(os.environ.get("FVCORE_CACHE", os.path.join("~", ".torch", "iopath_cache")))


def resolve_detectron2_url(url: str) -> Tuple[str, bool]:
    """(local path, exists) for ``detectron2://X`` or its https form: CACHE/detectron2/X, the
    layout detectron2 itself downloads to, so a file fetched by detectron2 before is found."""
    rel = next(url[len(p):] for p in D2_URL_PREFIXES if url.startswith(p))
    path = os.path.join(weights_cache_dir(), "detectron2", *rel.split("/"))
    return path, os.path.isfile(path)


# ------------------------------------------------------------------------------------------------
# Translators: fn(key, entry, all entries, out) for keys whose meaning needs more than a value check
# ------------------------------------------------------------------------------------------------
def _meta(key, e, entries, out):
    v = str(e.value)
    if v in ("SimFormer", "CAM"):
        out.set(key, v, e, "native")
        return
    if v not in ("MaskFormer", "PropFormer"):
        out.problems.append(f"{key} = {v!r} ({e.origin}): simformer builds 'SimFormer' (also for detectron2's "
                            "'MaskFormer' and the release's 'PropFormer') or 'CAM'")
        return
    out.set(key, "SimFormer", e, f"META_ARCHITECTURE {v}")
    if v == "MaskFormer":  # MaskFormer = SimFormer with every weak-shot module off
        for sub in ("SIMNET", "DISTILL", "COMPLEMENTARY"):
            out.set(f"WEAKSHOT.{sub}.ENABLED", False, e, "META_ARCHITECTURE MaskFormer")
        out.set("WEAKSHOT.PAIR_MODE", "none", e, "META_ARCHITECTURE MaskFormer")
    else:  # the release's modules are on when their loss weight is > 0 (its defaults are 0)
        for sub, rkey in (("SIMNET", "CROSS_IMG_SIM.BASE_LOSS"), ("DISTILL", "CROSS_IMG_SIM.DISTILL_LOSS"),
                          ("COMPLEMENTARY", "LOSS.CompSupNovel")):
            if rkey not in entries:
                out.set(f"WEAKSHOT.{sub}.ENABLED", False, e, f"PropFormer with {rkey} unset (release default 0)")
        if "INPUT.DATASET_MAPPER_NAME" not in entries:
            out.set("WEAKSHOT.PAIR_MODE", "none", e, "PropFormer without pair_mapper")


def _backbone(key, e, entries, out):
    name = str(e.value)
    depth_e = entries.get("MODEL.RESNETS.DEPTH")
    depth = depth_e.value if depth_e else 50
    if name == "build_resnet_backbone":
        if depth not in (50, 101):
            out.problems.append(f"MODEL.RESNETS.DEPTH = {depth!r} ({depth_e.origin if depth_e else 'default'}): "
                                "only ResNet-50 and ResNet-101 are implemented")
            return
        out.set(key, f"resnet{depth}", e, f"build_resnet_backbone + RESNETS.DEPTH {depth}")
        return
    if name in ("build_resnet_fpn_backbone", "build_retinanet_resnet_fpn_backbone", "D2SwinTransformer"):
        out.problems.append(f"{key} = {name!r} ({e.origin}): not implemented; MaskFormer's semantic R50/R101 "
                            "use build_resnet_backbone; simformer also has efficientnet_lite0")
        return
    if depth_e is not None and name.startswith("resnet") and name != f"resnet{depth}":
        out.problems.append(f"MODEL.RESNETS.DEPTH = {depth} ({depth_e.origin}) contradicts {key} = {name!r}")
        return
    out.set(key, name, e, "native")


def _depth(key, e, entries, out):
    if e.value not in (50, 101):
        out.problems.append(f"{key} = {e.value!r} ({e.origin}): only ResNet-50 and ResNet-101 are implemented")
    elif "MODEL.BACKBONE.NAME" not in entries:  # detectron2's default backbone is build_resnet_backbone
        out.set("MODEL.BACKBONE.NAME", f"resnet{e.value}", e, f"RESNETS.DEPTH {e.value}")


def _weights(key, e, entries, out):
    v = str(e.value)
    if not v.startswith(D2_URL_PREFIXES):
        out.set(key, v, e, "native")
        return
    if "/ImageNetPretrained/" not in "/" + v.split("//", 1)[1]:
        out.problems.append(f"{key} = {v!r} ({e.origin}): detectron2 model-zoo checkpoints of whole models are not "
                            "read; MODEL.WEIGHTS takes a simformer .pth (ImageNet backbones: ImageNetPretrained/...)")
        return
    path, exists = resolve_detectron2_url(v)
    out.set("MODEL.BACKBONE.WEIGHTS", path, e, f"MODEL.WEIGHTS {v} (an ImageNet backbone, not a full model)")
    out.set(key, "", e, "MODEL.WEIGHTS names ImageNet backbone weights")
    if not exists:
        out.notes.append(f"MODEL.BACKBONE.WEIGHTS {path} is not there yet: download "
                         f"https://dl.fbaipublicfiles.com/detectron2/{v.split('//', 1)[1].split('detectron2/', 1)[-1]} "
                         f"to it (or set $SIMFORMER_WEIGHTS to the folder holding detectron2/...)")


def _datasets(key, e, entries, out):
    names = [e.value] if isinstance(e.value, str) else list(e.value)
    mapped, splits = [], set()
    for n in names:
        m = _RELEASE_DATASET.match(str(n))
        if m:
            family = "ade20k" if m.group(1) == "ADE" else "coco_stuff_10k"
            part = m.group(3) if m.group(3) == "train" else ("val" if family == "ade20k" else "test")
            mapped.append(f"{family}_{part}")
            splits.add(f"splits/{family}/split{m.group(2)}.json")
        else:
            mapped.append(D2_DATASETS.get(str(n), n))
    out.set(key, mapped, e, "native" if mapped == names else f"{key} {names}")
    for split in sorted(splits):
        out.set("WEAKSHOT.SPLIT", split, e, f"release dataset name in {key}")


def _flip(key, e, entries, out):
    v = e.value
    if isinstance(v, bool):
        out.set(key, v, e, "native")
    elif str(v).lower() in ("horizontal", "none"):
        out.set(key, str(v).lower() == "horizontal", e, f"RANDOM_FLIP {v!r}")
    else:
        out.problems.append(f"{key} = {v!r} ({e.origin}): only horizontal flipping ('horizontal'/True) or none")


def _size_div(key, e, entries, out):
    out.set(key, 0 if e.value == -1 else e.value, e, "native" if e.value != -1 else "MaskFormer's -1 (no padding)")


def _mapper(key, e, entries, out):
    v = str(e.value)
    if v == "pair_mapper":
        out.set("WEAKSHOT.PAIR_MODE", "cross", e, "DATASET_MAPPER_NAME pair_mapper")
    elif v in ("mask_former_semantic", "weakshot_sem_seg_mapper"):
        meta = entries.get("MODEL.META_ARCHITECTURE")
        if meta is not None and meta.value in ("MaskFormer", "PropFormer"):
            out.set("WEAKSHOT.PAIR_MODE", "none", e, f"DATASET_MAPPER_NAME {v} (no reference images)")
    else:
        out.problems.append(f"{key} = {v!r} ({e.origin}): simformer's mapper is MaskFormer's semantic one "
                            "(mask_former_semantic; the release's weakshot_sem_seg_mapper / pair_mapper)")


def _loss_weight(target: str) -> Callable:
    def fn(key, e, entries, out):
        w = float(e.value)
        if w < 0:
            out.problems.append(f"{key} = {w} ({e.origin}) must be >= 0")
            return
        out.set(f"WEAKSHOT.{target}.ENABLED", w > 0, e, f"{key} {w}")
        if w > 0:
            out.set(f"WEAKSHOT.{target}.LOSS_WEIGHT", w, e, f"{key} {w}")
    return fn


def _rename(target: str, convert: Callable = lambda v: v) -> Callable:
    def fn(key, e, entries, out):
        try:
            value = convert(e.value)
        except (TypeError, ValueError) as err:
            out.problems.append(f"{key} = {e.value!r} ({e.origin}): {err}")
            return
        out.set(target, value, e, key)
    return fn


def _ignore_logit(v):
    v = float(v)
    if v <= -50:
        raise ValueError("a disabled ignore proposal (<= -50) is not implemented; IGNORE_PROB must be > 0")
    return round(1.0 / (1.0 + math.exp(-v)), 6)


def _novel_points(key, e, entries, out):
    base = entries.get("CROSS_IMG_SIM.BASE_POINT_NUM")
    if e.value != (base.value if base else 100):
        out.problems.append(f"{key} = {e.value} ({e.origin}): simformer samples the same number of points J for "
                            "base and novel pairs; set CROSS_IMG_SIM.BASE_POINT_NUM (WEAKSHOT.SIMNET.NUM_POINTS)")


def _seed(key, e, entries, out):
    if isinstance(e.value, int) and e.value < 0:
        out.problems.append(f"{key} = {e.value} ({e.origin}): detectron2 draws a random seed for SEED < 0; "
                            "simformer runs are always seeded: give a number >= 0")
    else:
        out.set(key, e.value, e, "native")


def _version(key, e, entries, out):
    if e.value == 2:
        out.notes.append(f"VERSION 2 ({e.origin}): detectron2's config version; ignored")
    else:
        out.set(key, e.value, e, "native")


TRANSLATORS: Dict[str, Callable] = {
    "MODEL.META_ARCHITECTURE": _meta,
    "MODEL.BACKBONE.NAME": _backbone,
    "MODEL.RESNETS.DEPTH": _depth,
    "MODEL.WEIGHTS": _weights,
    "DATASETS.TRAIN": _datasets,
    "DATASETS.TEST": _datasets,
    "INPUT.RANDOM_FLIP": _flip,
    "INPUT.SIZE_DIVISIBILITY": _size_div,
    "INPUT.DATASET_MAPPER_NAME": _mapper,
    "SEED": _seed,
    "VERSION": _version,
    # SimFormer release (prop_former/config.py)
    "CROSS_IMG_SIM.BASE_LOSS": _loss_weight("SIMNET"),
    "CROSS_IMG_SIM.DISTILL_LOSS": _loss_weight("DISTILL"),
    "LOSS.CompSupNovel": _loss_weight("COMPLEMENTARY"),
    "CROSS_IMG_SIM.BASE_POINT_NUM": _rename("WEAKSHOT.SIMNET.NUM_POINTS", int),
    "CROSS_IMG_SIM.NOVEL_POINT_NUM": _novel_points,
    "CROSS_IMG_SIM.LayerNum": _rename("WEAKSHOT.SIMNET.NUM_BLOCKS", int),
    "NOVEL_HAS_MASK": _rename("WEAKSHOT.NOVEL_MASKS", bool),
    "PSEUDO_LABEL_PATH": _rename("WEAKSHOT.PSEUDO_LABEL_DIR", str),
    "LOSS.AssignCls": _rename("MODEL.MASK_FORMER.CLASS_WEIGHT", float),
    "LOSS.AssignMaskDICE": _rename("MODEL.MASK_FORMER.DICE_WEIGHT", float),
    "LOSS.AssignMaskMASK": _rename("MODEL.MASK_FORMER.MASK_WEIGHT", float),
    "LOSS.IgnoreInit": _rename("WEAKSHOT.COMPLEMENTARY.IGNORE_PROB", _ignore_logit),
}


def _rule_for(key: str) -> Optional[Rule]:
    if key in RULES:
        return RULES[key]
    for prefix, rule in IGNORED_PREFIXES:
        if key.startswith(prefix):
            return rule
    return None


def translate(entries: Dict[str, Entry], is_native: Callable[[str], bool],
              unknown: Callable[[str, Entry], str]) -> Translation:
    """Map flattened ``entries`` (key -> Entry) onto simformer keys; see the module docstring."""
    out = Translation()
    # native keys first, so translations can detect contradictions with them
    for key, e in entries.items():
        if key not in TRANSLATORS and _rule_for(key) is None and is_native(key):
            out.values[key] = e
    for key, e in entries.items():
        if key in TRANSLATORS:
            TRANSLATORS[key](key, e, entries, out)
            continue
        rule = _rule_for(key)
        if rule is None:
            if not is_native(key):
                out.problems.append(unknown(key, e))
            continue
        if rule.kind == "ignored":
            out.notes.append(f"{key} = {e.value!r} ({e.origin}): ignored - {rule.reason}")
        elif any(_norm(e.value) == _norm(a) for a in rule.values):
            out.notes.append(f"{key} = {e.value!r} ({e.origin}): accepted - {rule.reason}")
        else:
            allowed = " or ".join(repr(a) for a in rule.values)
            out.problems.append(f"{key} = {e.value!r} ({e.origin}): only {allowed} is implemented - {rule.reason}")
    out.problems = list(dict.fromkeys(out.problems))  # one key can be checked by two translators
    return out
