"""Atomic file writes and image/label reading with errors that name the file."""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError


@contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path in ``path``'s folder; rename it onto ``path`` only on success.

    A crash or Ctrl-C therefore never leaves a half-written ``path`` behind (a ``kill -9`` may leave
    the temporary, ``.tmp-XXXXXXXX``: see :func:`simformer.utils.run_dir.remove_stale_temps`). A full
    disk (ENOSPC, or torch.save's "unexpected pos" RuntimeError) is re-raised as an OSError naming
    ``path`` and the free space (:func:`disk_full_error`).
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix or os.path.splitext(path)[1], dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if is_disk_full(e):
            raise disk_full_error(path, e) from e
        raise


# torch.save reports a failed write (a full disk) as "[enforce fail at inline_container.cc:NNN]
# . unexpected pos N vs M" or "... PytorchStreamWriter failed writing file ...".
_TORCH_WRITE_FAILED = ("unexpected pos", "failed writing")


def is_disk_full(exc: BaseException) -> bool:
    """True for ENOSPC / EDQUOT and for torch.save's write-failure RuntimeError."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    if isinstance(exc, RuntimeError):
        text = str(exc)
        return "inline_container" in text and any(t in text for t in _TORCH_WRITE_FAILED)
    return False


def disk_full_error(path: str, cause: BaseException | None = None) -> OSError:
    """``OSError(ENOSPC)`` whose message names the file and the free space of its folder."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free in {folder}"
    except OSError:
        free = f"free space of {folder} unknown"
    err = OSError(f"No space left on device writing {path} ({free})")
    err.errno = errno.ENOSPC
    return err


def atomic_write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def atomic_write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_label_png(path: str, label: np.ndarray) -> None:
    """Write a single-channel uint8 label map atomically."""
    if label.dtype != np.uint8:
        if label.min() < 0 or label.max() > 255:
            raise ValueError(f"Label map for {path} has values outside 0..255")
        label = label.astype(np.uint8)
    with atomic_path(path, ".png") as tmp:
        Image.fromarray(label, mode="L").save(tmp, format="PNG")


def read_image(path: str) -> np.ndarray:
    """RGB uint8 array (H, W, 3). Raises FileNotFoundError / ValueError naming the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Image file not found: {path}")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"Cannot decode image {path} (corrupt or not an image): {e}") from e


def read_label(path: str) -> np.ndarray:
    """Single-channel uint8 label array (H, W). Raises naming the file on any problem."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Label file not found: {path}")
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16"):
                raise ValueError(
                    f"Label {path} has mode {im.mode}; expected a single-channel PNG "
                    "(one class id per pixel, 255 = ignore)."
                )
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"Cannot decode label {path} (corrupt or not an image): {e}") from e
    if arr.dtype != np.uint8:
        if arr.min() < 0 or arr.max() > 255:
            raise ValueError(f"Label {path} has values outside 0..255")
        arr = arr.astype(np.uint8)
    return arr
