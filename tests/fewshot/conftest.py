"""Fixtures of the few-shot tests (helpers in fewshot_helpers.py)."""
import pytest

from fewshot_helpers import write_dataset


@pytest.fixture
def tiny_records(tmp_path):
    return write_dataset(str(tmp_path / "data"))


@pytest.fixture
def fs_cfg():
    from simformer.config import get_cfg

    return get_cfg()
