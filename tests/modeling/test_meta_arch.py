"""The meta-architecture registry, build_model and the shared input handling (image_list.py)."""
import pytest
import torch
from torch import nn

from simformer.config import get_cfg
from simformer.modeling.image_list import normalize_images, pad_batch
from simformer.modeling.meta_arch import build_model, restricted_to_image_labels
from simformer.modeling.registry import META_ARCH_REGISTRY, register_meta_arch


def test_builtin_meta_architectures_registered():
    assert {"SimFormer", "CAM"} <= set(META_ARCH_REGISTRY)


def test_registry_builds_a_new_meta_architecture():
    seen = {}

    class Toy(nn.Module):
        pass

    @register_meta_arch("ToyArch_test")
    def build_toy(cfg, num_classes, split):
        seen.update(num_classes=num_classes, split=split)
        return Toy()

    try:
        cfg = get_cfg()
        cfg.MODEL.META_ARCHITECTURE = "ToyArch_test"
        assert isinstance(build_model(cfg, 7, None), Toy) and seen == {"num_classes": 7, "split": None}
        with pytest.raises(KeyError, match="already registered"):
            register_meta_arch("ToyArch_test")(lambda cfg, k, s: None)
    finally:
        META_ARCH_REGISTRY.pop("ToyArch_test")


def test_unknown_meta_architecture_names_the_key():
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "Nope"
    with pytest.raises(ValueError, match=r"MODEL.META_ARCHITECTURE must be .*'CAM'.*'SimFormer'.*got 'Nope'"):
        build_model(cfg, 3, None)


def test_pad_batch_and_normalize_images():
    a = torch.arange(2 * 3 * 5, dtype=torch.float32).reshape(3, 2, 5)
    b = torch.ones(3, 4, 3)
    out = pad_batch([a, b], 4, -1.0)
    assert out.shape == (2, 3, 4, 8)
    assert torch.equal(out[0, :, :2, :5], a) and (out[0, :, 2:, :] == -1).all() and (out[0, :, :, 5:] == -1).all()
    assert torch.equal(out[1, :, :4, :3], b) and (out[1, :, :, 3:] == -1).all()
    mean = torch.tensor([1.0, 2.0, 3.0]).view(-1, 1, 1)
    std = torch.tensor([2.0, 4.0, 8.0]).view(-1, 1, 1)
    norm = normalize_images([{"image": a}, {"image": b}], mean, std, 4)
    expect_a = torch.stack([(a[c] - mean[c, 0, 0]) / std[c, 0, 0] for c in range(3)])
    torch.testing.assert_close(norm[0, :, :2, :5], expect_a)
    assert (norm[0, :, 2:, :] == 0).all() and norm.shape == (2, 3, 4, 8)


def test_restricted_to_image_labels_restores_the_flag():
    m = nn.Linear(1, 1)
    m.use_image_labels = False
    with restricted_to_image_labels(m):
        assert m.use_image_labels is True
    assert m.use_image_labels is False
    plain = nn.Linear(1, 1)
    with restricted_to_image_labels(plain):
        assert not hasattr(plain, "use_image_labels")
