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
