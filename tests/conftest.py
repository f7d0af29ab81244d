
import pytest

from simformer.data.datasets.toyscenes import generate_toyscenes


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    """A tiny ToyScenes (8 train / 4 val images of 64 px) as the datasets root."""
    root = tmp_path_factory.mktemp("datasets")
    generate_toyscenes(str(root / "toyscenes"), num_train=8, num_val=4, size=64, seed=0, progress=False)
    return str(root)


@pytest.fixture
def toy_env(toy_root, monkeypatch, tmp_path):
    monkeypatch.setenv("SIMFORMER_DATASETS", toy_root)
    monkeypatch.setenv("SIMFORMER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SIMFORMER_PROGRESS", "0")
    return toy_root
