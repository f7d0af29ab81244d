"""ModelProposalSource against the model's own proposals() and backbone; load_view's support mask."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from simformer.fewshot.proposals import ModelProposalSource, load_view
from tiny_config import TINY

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "toyscenes", "simformer.yaml")


@pytest.fixture(scope="module")
def tiny_model():
    from simformer.config import load_cfg
    from simformer.modeling.meta_arch import build_model

    torch.manual_seed(0)
    return build_model(load_cfg(CONFIG, TINY + ["MODEL.BACKBONE.WEIGHTS", ""]), 24, None).eval()


def test_view_equals_the_models_proposals(tiny_model):
    image = torch.rand(3, 50, 70) * 255  # not a multiple of the padding (64): crops matter
    view = ModelProposalSource(tiny_model)(image)
    ref = tiny_model.proposals({"image": image})
    assert torch.allclose(view.proposals, ref["mask_probs"], atol=1e-6)
    assert torch.allclose(view.scores, 1 - ref["class_probs"][:, -1], atol=1e-6)
    assert view.proposals.shape == (16, 50, 70) and view.mask is None and view.valid is None
    with torch.no_grad():
        x = tiny_model.normalize([{"image": image}])
        feats = tiny_model.backbone(x)
    for key, stride in (("res2", 4), ("res4", 16), ("res5", 32)):
        h, w = -(-50 // stride), -(-70 // stride)
        assert torch.allclose(view.features[key], feats[key][0, :, :h, :w], atol=1e-5)
    assert view.features["mask_features"].shape[-2:] == (13, 18)
    with pytest.raises(ValueError, match="unknown feature map"):
        ModelProposalSource(tiny_model, feature_keys=("res7",))
    with pytest.raises(ValueError, match="mask-classification model"):
        ModelProposalSource(torch.nn.Linear(2, 2))


def test_load_view_support_mask(tiny_model, tmp_path):
    label = np.zeros((20, 24), np.uint8)
    label[2:8, 3:9] = 5
    label[0, :] = 255
    Image.fromarray((np.random.default_rng(0).random((20, 24, 3)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(label, mode="L").save(tmp_path / "a_l.png")
    rec = {"file_name": str(tmp_path / "a.png"), "sem_seg_file_name": str(tmp_path / "a_l.png")}
    source = ModelProposalSource(tiny_model)
    v = load_view(rec, source, 5)
    assert torch.equal(v.mask, torch.from_numpy(label == 5)) and torch.equal(v.valid, torch.from_numpy(label != 255))
    assert load_view(rec, source).mask is None and source.calls == 2
    Image.fromarray(label[:10], mode="L").save(tmp_path / "a_l.png")
    with pytest.raises(ValueError, match="must match their images"):
        load_view(rec, source, 5)
