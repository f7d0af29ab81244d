"""Cross-key config rules, checked once when a config is loaded (``load_cfg``).

A single key's range is checked where it is used; a rule that ties two or more keys together
lives here, so that an invalid combination fails at load time with one message naming every key
involved. The derived decisions that several packages share (e.g. whether novel classes have
masks) are functions here too, so that each is made in one place.
"""
from __future__ import annotations

PAIR_MODES = ("cross", "self", "none")


class ConfigCheckError(ValueError):
    """An invalid combination of config keys; the message names the keys."""


def novel_masks(cfg) -> bool:
    """Novel classes have masks in the training labels: the fully supervised oracle
    (``WEAKSHOT.NOVEL_MASKS``) or re-training on pseudo labels (``WEAKSHOT.PSEUDO_LABEL_DIR``)."""
    return bool(cfg.WEAKSHOT.NOVEL_MASKS) or bool(cfg.WEAKSHOT.PSEUDO_LABEL_DIR)


def uses_pairs(cfg) -> bool:
    """Training batches are (image, reference) pairs (``WEAKSHOT.PAIR_MODE`` != 'none')."""
    return str(cfg.WEAKSHOT.PAIR_MODE) != "none"


def check_cfg(cfg, where: str = "config") -> None:
    """Raise :class:`ConfigCheckError` for an invalid combination of keys.

    Rules: pairing (``WEAKSHOT.PAIR_MODE`` vs ``WEAKSHOT.SIMNET.ENABLED`` / ``WEAKSHOT.DISTILL.ENABLED`` /
    ``WEAKSHOT.CROSS_REFERENCE.ENABLED``), the distillation teacher (``DISTILL`` needs ``SIMNET``),
    base-only training (``WEAKSHOT.DROP_NOVEL``: :func:`_check_drop_novel`), the CMT decoder's
    reference masks (``CMT.LOCATION`` needs ``CMT.APPROX_WEIGHT`` > 0), and the batch layout
    (``SOLVER.IMS_PER_BATCH`` vs ``SOLVER.GRAD_ACCUM_STEPS`` and pairs). The world size is known
    only at launch; ``simformer.data.loader.micro_batch_layout`` checks the batch against it.
    """
    ws, solver = cfg.WEAKSHOT, cfg.SOLVER
    if ws.PAIR_MODE not in PAIR_MODES:
        raise ConfigCheckError(f"{where}: WEAKSHOT.PAIR_MODE must be cross, self or none; got '{ws.PAIR_MODE}'")
    if ws.PAIR_MODE == "none" and (ws.SIMNET.ENABLED or ws.DISTILL.ENABLED):
        raise ConfigCheckError(
            f"{where}: WEAKSHOT.PAIR_MODE 'none' provides no image pairs, but WEAKSHOT.SIMNET.ENABLED="
            f"{ws.SIMNET.ENABLED} / WEAKSHOT.DISTILL.ENABLED={ws.DISTILL.ENABLED} need them: set both False "
            "(or use PAIR_MODE 'cross' / 'self')")
    if ws.PAIR_MODE == "none" and ws.CROSS_REFERENCE.ENABLED:
        raise ConfigCheckError(
            f"{where}: WEAKSHOT.CROSS_REFERENCE.ENABLED re-weights each image by its reference, but "
            "WEAKSHOT.PAIR_MODE 'none' provides no pairs: use PAIR_MODE 'cross' (or 'self') or set "
            "WEAKSHOT.CROSS_REFERENCE.ENABLED False")
    if ws.DISTILL.ENABLED and not ws.SIMNET.ENABLED:
        raise ConfigCheckError(
            f"{where}: WEAKSHOT.DISTILL.ENABLED needs SimNet as teacher: set WEAKSHOT.SIMNET.ENABLED True "
            "or WEAKSHOT.DISTILL.ENABLED False")
    if ws.DROP_NOVEL:
        _check_drop_novel(ws, where)
    cmt = cfg.MODEL.MASK_FORMER.CMT
    if cfg.MODEL.MASK_FORMER.DECODER == "cmt" and cmt.LOCATION and not cmt.APPROX_WEIGHT > 0:
        raise ConfigCheckError(
            f"{where}: MODEL.MASK_FORMER.CMT.LOCATION needs the mask approximation loss that teaches the "
            f"reference masks: set MODEL.MASK_FORMER.CMT.APPROX_WEIGHT > 0 (got {cmt.APPROX_WEIGHT}) or LOCATION False")
    accum, ims = int(solver.GRAD_ACCUM_STEPS), int(solver.IMS_PER_BATCH)
    if accum < 1:
        raise ConfigCheckError(f"{where}: SOLVER.GRAD_ACCUM_STEPS must be >= 1, got {accum}")
    denom = accum * (2 if uses_pairs(cfg) else 1)
    if ims <= 0 or ims % denom:
        raise ConfigCheckError(
            f"{where}: SOLVER.IMS_PER_BATCH={ims} must be a positive multiple of SOLVER.GRAD_ACCUM_STEPS"
            f"={accum}" + (" x 2 (WEAKSHOT.PAIR_MODE pairs: anchor + reference)" if uses_pairs(cfg) else "")
            + f" = {denom}")


def _check_drop_novel(ws, where: str) -> None:
    """``WEAKSHOT.DROP_NOVEL`` trains on base classes only, so that novel classes are truly unseen.

    * Novel masks (``NOVEL_MASKS``, ``PSEUDO_LABEL_DIR``) contradict it.
    * ``PAIR_MODE`` must be 'none': the reference rule picks pairs by their shared *novel* classes
      (image-level presence), which would leak novel information; with no pairs, SimNet and
      distillation are off too (the rule above).
    * ``COMPLEMENTARY`` must be off: it acts only on images with a novel image-level label, of
      which there are none; an enabled loss that can never act would only mislead.
    * A split (``WEAKSHOT.SPLIT``) must name the classes to drop.
    The result is plain MaskFormer on the base classes (configs/*/base_only.yaml).
    """
    if ws.NOVEL_MASKS or ws.PSEUDO_LABEL_DIR:
        raise ConfigCheckError(
            f"{where}: WEAKSHOT.DROP_NOVEL drops the novel classes from training, but WEAKSHOT.NOVEL_MASKS="
            f"{ws.NOVEL_MASKS} / WEAKSHOT.PSEUDO_LABEL_DIR='{ws.PSEUDO_LABEL_DIR}' supervise them with masks: "
            "set DROP_NOVEL False, or NOVEL_MASKS False and PSEUDO_LABEL_DIR ''")
    if ws.PAIR_MODE != "none" or ws.COMPLEMENTARY.ENABLED:
        raise ConfigCheckError(
            f"{where}: WEAKSHOT.DROP_NOVEL (base-only training) needs WEAKSHOT.PAIR_MODE none (pairs are chosen "
            f"by shared novel classes; got '{ws.PAIR_MODE}') and WEAKSHOT.COMPLEMENTARY.ENABLED False (no novel "
            f"image labels to act on; got {ws.COMPLEMENTARY.ENABLED}); SIMNET and DISTILL then off too")
    if not ws.SPLIT:
        raise ConfigCheckError(f"{where}: WEAKSHOT.DROP_NOVEL needs WEAKSHOT.SPLIT (the split names the novel "
                               "classes to drop)")
