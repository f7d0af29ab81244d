"""No checkpoint load may run code: a pickle payload planted in a .pth is refused on every entry point."""
import os

import pytest
import torch

from simformer.cli import main
from simformer.engine.checkpoint import Checkpointer, UnsafeCheckpointError, rng_state, set_rng_state

from tiny_config import TINY

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "toyscenes", "simformer.yaml")


class Payload:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def evil_checkpoint(path, marker, valid_model=None):
    """A checkpoint that would otherwise load (a real state dict, if given) plus the payload."""
    payload = {"model": valid_model or {}, "iteration": 1, "extra": Payload(str(marker))}
    torch.save(payload, path)
    return str(path)


def test_checkpointer_refuses_payload_and_runs_nothing(tmp_path):
    model = torch.nn.Linear(2, 2)
    path = evil_checkpoint(tmp_path / "evil.pth", tmp_path / "ran", model.state_dict())
    with pytest.raises(UnsafeCheckpointError, match="evil.pth"):
        Checkpointer.load(path, model=model)
    assert not (tmp_path / "ran").exists()


def test_our_checkpoints_load_with_weights_only_and_restore_rng(tmp_path):
    import random

    import numpy as np

    model = torch.nn.Linear(3, 2)
    state = rng_state()
    Checkpointer(str(tmp_path)).save("model_final", model=model, iteration=5, extra={"rng_all": [state]})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt = torch.load(tmp_path / "model_final.pth", weights_only=True)  # raises if anything is not plain
    set_rng_state(ckpt["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    set_rng_state(ckpt["rng_all"][0])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_every_entry_point_refuses_the_payload(toy_env, tmp_path, capsys):
    opts = TINY + ["SOLVER.MAX_ITER", "1"]
    marker = tmp_path / "ran"
    evil = evil_checkpoint(tmp_path / "evil.pth", marker)
    calls = {
        "eval --weights": ["eval", "--config", CONFIG, "--weights", evil] + opts,
        "train MODEL.WEIGHTS": ["train", "--config", CONFIG, "--output", str(tmp_path / "t1")] + opts
        + ["MODEL.WEIGHTS", evil],
        "train --eval-only": ["train", "--config", CONFIG, "--output", str(tmp_path / "t2"), "--eval-only"] + opts
        + ["MODEL.WEIGHTS", evil],
        "pseudo-label --weights": ["pseudo-label", "--config", CONFIG, "--weights", evil,
                                   "--out", str(tmp_path / "labels")] + opts,
    }
    planted = tmp_path / "t3"
    planted.mkdir()
    evil_checkpoint(planted / "model_0000001.pth", marker)
    (planted / "last_checkpoint").write_text("model_0000001.pth")
    calls["train --resume (planted)"] = ["train", "--config", CONFIG, "--output", str(planted), "--resume"] + opts
    for name, argv in calls.items():
        code = main(argv)
        err = capsys.readouterr().err
        assert code != 0, name
        assert "Refused to load checkpoint" in err, (name, err)
        assert not marker.exists(), f"{name} ran the payload"
