import pytest

from simformer.config import ConfigError, get_cfg, load_cfg


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_base_inheritance_and_overrides(tmp_path):
    write(tmp_path, "base.yaml", "SOLVER:\n  MAX_ITER: 123\n  BASE_LR: 0.5\n")
    child = write(tmp_path, "child.yaml", "_BASE_: base.yaml\nSOLVER:\n  BASE_LR: 0.25\n")
    cfg = load_cfg(child, ["SOLVER.IMS_PER_BATCH", "4"])
    assert cfg.SOLVER.MAX_ITER == 123 and cfg.SOLVER.BASE_LR == 0.25 and cfg.SOLVER.IMS_PER_BATCH == 4
    assert get_cfg().SOLVER.MAX_ITER == 60000  # defaults untouched


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    write(tmp_path, "base.yaml", "SOLVER:\n  MAX_ITERS: 5\n")
    child = write(tmp_path, "child.yaml", "_BASE_: base.yaml\n")
    with pytest.raises(ConfigError) as e:
        load_cfg(child)
    assert "SOLVER.MAX_ITERS" in str(e.value) and "base.yaml" in str(e.value)
    assert "Did you mean: SOLVER.MAX_ITER" in str(e.value)


def test_unknown_override_and_bad_type(tmp_path):
    with pytest.raises(ConfigError, match="WEAKSHOT.SIMNET.POINTS"):
        load_cfg(None, ["WEAKSHOT.SIMNET.POINTS", "10"])
    with pytest.raises(ConfigError):
        load_cfg(None, ["SOLVER.MAX_ITER"])
    bad = write(tmp_path, "bad.yaml", "SOLVER:\n  MAX_ITER: [1, 2]\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_cfg(bad)


def test_repo_configs_load():
    import glob
    import os

    root = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
    files = sorted(glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True))
    assert len(files) >= 10
    for f in files:
        load_cfg(f)


def test_toyscenes_stacked_variant_combines_the_two_variant_configs_unchanged():
    """simformer_cmt_crossref.yaml = the CMT decoder of simformer_cmt.yaml + the cross-reference
    module of simformer_crossref.yaml, every key of each (its first definition switched the module
    on over simformer_cmt.yaml and left the co-occurrence head at the default 256 channels)."""
    import os

    root = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "toyscenes")
    both, cmt, xref = (load_cfg(os.path.join(root, f"{n}.yaml"))
                       for n in ("simformer_cmt_crossref", "simformer_cmt", "simformer_crossref"))
    assert both.WEAKSHOT.CROSS_REFERENCE == xref.WEAKSHOT.CROSS_REFERENCE
    assert both.WEAKSHOT.CROSS_REFERENCE.HEAD_CHANNELS == 128
    assert both.MODEL.MASK_FORMER == cmt.MODEL.MASK_FORMER
    both.defrost()
    both.WEAKSHOT.CROSS_REFERENCE = cmt.WEAKSHOT.CROSS_REFERENCE  # everything else is simformer_cmt.yaml's
    assert both == cmt
