"""The ``simformer`` logger: console (rank 0) and ``OUTPUT_DIR/log.txt``."""
from __future__ import annotations

import logging
import os
import sys
from typing import Optional

logger = logging.getLogger("simformer")


def setup_logging(output_dir: Optional[str], rank: int = 0) -> None:
    """Send the ``simformer`` logger to stdout and ``output_dir/log.txt`` on rank 0; silence the
    other ranks. Replaces handlers from an earlier call (one process may train twice)."""
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
    if rank != 0:
        logger.addHandler(logging.NullHandler())
        return
    fmt = logging.Formatter("[%(asctime)s simformer] %(message)s", "%H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    logger.addHandler(console)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        fh = logging.FileHandler(os.path.join(output_dir, "log.txt"))
        fh.setFormatter(fmt)
        logger.addHandler(fh)
