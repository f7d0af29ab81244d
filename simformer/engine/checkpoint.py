"""Atomic checkpoints with keep-last-k and exact resume (model, optimiser, scheduler, iteration,
RNG states). The data order resumes through the sampler offset, which is a function of the
iteration, so nothing about the loader needs saving.

Every checkpoint is read with ``torch.load(weights_only=True)``: a ``.pth`` can come from anyone
(a downloaded model, a file planted in a run folder), and a full unpickle would run whatever code
it carries. So everything we save is tensors and plain Python types, RNG states included."""
from __future__ import annotations

import glob
import logging
import os
import pickle
import random
from typing import Optional

import numpy as np
import torch

from simformer.utils.io import atomic_path, atomic_write_text

logger = logging.getLogger("simformer")

LAST = "last_checkpoint"


class UnsafeCheckpointError(ValueError):
    """A checkpoint whose unpickling would need more than tensors and plain types."""


def rng_state() -> dict:
    """All global RNG states as tensors and plain types (loadable with ``weights_only=True``)."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, torch.tensor(mt, dtype=torch.int64), gauss],
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(int(v) for v in mt.tolist()), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


class Checkpointer:
    """Writes ``model_{iter:07d}.pth`` (and ``model_final.pth``) into ``output_dir``."""

    def __init__(self, output_dir: str, *, keep: int = 2):
        self.output_dir = output_dir
        self.keep = keep

    def save(self, name: str, *, model, optimizer=None, scheduler=None, scaler=None, iteration: int,
             extra: Optional[dict] = None) -> str:
        path = os.path.join(self.output_dir, f"{name}.pth")
        payload = {"model": unwrap(model).state_dict(), "iteration": iteration, "rng": rng_state()}
        if optimizer is not None:
            payload["optimizer"] = optimizer.state_dict()
        if scheduler is not None:
            payload["scheduler"] = scheduler.state_dict()
        if scaler is not None:
            payload["scaler"] = scaler.state_dict()
        payload.update(extra or {})
        with atomic_path(path, ".pth") as tmp:
            torch.save(payload, tmp)
        atomic_write_text(os.path.join(self.output_dir, LAST), os.path.basename(path))
        self._prune()
        return path

    def _prune(self) -> None:
        periodic = sorted(glob.glob(os.path.join(self.output_dir, "model_[0-9]*.pth")))
        for old in periodic[: max(0, len(periodic) - self.keep)]:
            os.unlink(old)

    def last_checkpoint(self) -> Optional[str]:
        marker = os.path.join(self.output_dir, LAST)
        if not os.path.isfile(marker):
            return None
        with open(marker) as f:
            path = os.path.join(self.output_dir, f.read().strip())
        return path if os.path.isfile(path) else None

    @staticmethod
    def load(path: str, *, model, optimizer=None, scheduler=None, scaler=None, restore_rng: bool = False) -> dict:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Checkpoint not found: {path}")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise UnsafeCheckpointError(
                f"Refused to load checkpoint {path}: it holds objects other than tensors and plain types, and "
                f"unpickling them could run code ({str(e).splitlines()[0]}). Use a checkpoint written by "
                "simformer or a plain state dict saved with torch.save(model.state_dict()).") from None
        except (RuntimeError, EOFError) as e:
            raise RuntimeError(f"Cannot read checkpoint {path}: {str(e).splitlines()[0]} (truncated or not a "
                               "torch checkpoint?).") from None
        if not isinstance(ckpt, dict):
            raise ValueError(f"Checkpoint {path} holds a {type(ckpt).__name__}, not a state dict.")
        state = ckpt["model"] if "model" in ckpt else ckpt
        incompatible = unwrap(model).load_state_dict(state, strict=False)
        if incompatible.missing_keys:
            logger.warning("Checkpoint %s lacks %d keys, e.g. %s", path, len(incompatible.missing_keys),
                           incompatible.missing_keys[:5])
        if incompatible.unexpected_keys:
            logger.warning("Checkpoint %s has %d unexpected keys, e.g. %s", path,
                           len(incompatible.unexpected_keys), incompatible.unexpected_keys[:5])
        if optimizer is not None and "optimizer" in ckpt:
            optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and "scheduler" in ckpt:
            scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and "scaler" in ckpt:
            scaler.load_state_dict(ckpt["scaler"])
        if restore_rng and "rng" in ckpt:
            set_rng_state(ckpt["rng"])
        return ckpt
