import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from simformer.modeling.cam import CAMModel, build_cam_model, masked_gap, valid_cell_weights

MEAN = [100.0, 110.0, 120.0]
STD = [50.0, 60.0, 70.0]


class FixedBackbone(nn.Module):
    """Stand-in: res5 is a fixed feature map [C,h,w] whatever the image (the input must be
    [B,3,h*s,w*s])."""

    def __init__(self, feat: torch.Tensor, stride: int):
        super().__init__()
        self.register_buffer("feat", feat)
        self.out_channels = {"res5": feat.shape[0]}
        self.out_strides = {"res5": stride}

    def forward(self, x):
        s = self.out_strides["res5"]
        assert tuple(x.shape[-2:]) == (self.feat.shape[1] * s, self.feat.shape[2] * s), x.shape
        return {"res5": self.feat[None].expand(x.shape[0], -1, -1, -1)}


class PoolBackbone(nn.Module):
    """Stand-in: res5 = (optional learnable conv + ReLU) then average pooling by the stride."""

    def __init__(self, stride: int, hidden: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(3, hidden, 3, padding=1) if hidden else None
        self.out_channels = {"res5": hidden or 3}
        self.out_strides = {"res5": stride}

    def forward(self, x):
        if self.conv is not None:
            x = F.relu(self.conv(x))
        return {"res5": F.avg_pool2d(x, self.out_strides["res5"])}


def np_bilinear(a: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """Reference bilinear resize [K,H,W] -> [K,oh,ow] (half-pixel centres, edges clamped)."""
    k, h, w = a.shape
    out = np.zeros((k, oh, ow))
    for i in range(oh):
        sy = max((i + 0.5) * h / oh - 0.5, 0.0)
        y0 = min(int(np.floor(sy)), h - 1)
        y1 = min(y0 + 1, h - 1)
        ly = sy - y0
        for j in range(ow):
            sx = max((j + 0.5) * w / ow - 0.5, 0.0)
            x0 = min(int(np.floor(sx)), w - 1)
            x1 = min(x0 + 1, w - 1)
            lx = sx - x0
            out[:, i, j] = ((1 - ly) * (1 - lx) * a[:, y0, x0] + (1 - ly) * lx * a[:, y0, x1]
                            + ly * (1 - lx) * a[:, y1, x0] + ly * lx * a[:, y1, x1])
    return out


def manual_weighted_gap(maps: np.ndarray, valid: np.ndarray, s: int) -> np.ndarray:
    """maps [K,h,w], valid [H,W] bool (H <= h*s, W <= w*s): cell weight = share of real pixels."""
    k, h, w = maps.shape
    num, den = np.zeros(k), 0.0
    for i in range(h):
        for j in range(w):
            cell = np.zeros((s, s), dtype=bool)
            block = valid[i * s:(i + 1) * s, j * s:(j + 1) * s]
            cell[: block.shape[0], : block.shape[1]] = block
            wt = cell.mean()
            num += wt * maps[:, i, j]
            den += wt
    return num / den


# ------------------------------------------------------------------------------------------------
def test_masked_gap_over_valid_cells_equals_manual_mean():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    valid = torch.zeros(2, 16, 20, dtype=torch.bool)
    valid[0, :11, :13] = True  # image border cuts cells: partial weights
    valid[1, :8, :12] = True  # exactly 2x3 full cells
    out = masked_gap(maps, valid_cell_weights(valid, (4, 5), 4))
    for b in range(2):
        ref = manual_weighted_gap(maps[b].numpy(), valid[b].numpy(), 4)
        np.testing.assert_allclose(out[b].numpy(), ref, rtol=1e-12)
    # Whole cells only: the plain mean over the real cells, padding ignored.
    np.testing.assert_allclose(out[1].numpy(), maps[1, :, :2, :3].mean((1, 2)).numpy(), rtol=1e-12)
    # A mask smaller than h*s (model padding beyond the mask) counts as padding.
    w_small = valid_cell_weights(valid[:, :10, :10], (4, 5), 4)
    assert w_small[0, 2, 2].item() == pytest.approx(0.25)  # rows 8,9 x cols 8,9 of a 4x4 cell
    assert w_small[0, 3].sum().item() == 0.0


def test_training_loss_equals_manual_bce():
    torch.manual_seed(0)
    s, k = 4, 3
    model = CAMModel(backbone=PoolBackbone(s), num_classes=k, pixel_mean=MEAN, pixel_std=STD,
                     size_divisibility=8)
    w = torch.tensor([[1.0, -2.0, 0.5], [-1.0, 0.3, 2.0], [0.2, 0.2, -0.7]])
    model.classifier.weight.data.copy_(w[:, :, None, None])
    g = torch.Generator().manual_seed(1)
    imgs = [torch.rand(3, 12, 10, generator=g) * 255, torch.rand(3, 7, 14, generator=g) * 255]
    valids = [torch.ones(12, 10, dtype=torch.bool), torch.ones(7, 14, dtype=torch.bool)]
    valids[0][9:, :] = False  # mapper padding inside the image tensor
    labels = [torch.tensor([True, False, True]), torch.tensor([False, False, True])]
    batch = [{"image": im.numpy() if i else im, "valid": v, "image_labels": lab}  # numpy accepted
             for i, (im, v, lab) in enumerate(zip(imgs, valids, labels))]
    loss = model(batch)["loss_cls"]

    # Independent computation in numpy: normalise, zero-pad to 16x16, pool, classify, GAP, BCE.
    mean, std = np.array(MEAN)[:, None, None], np.array(STD)[:, None, None]
    total = []
    for im, v, lab in zip(imgs, valids, labels):
        x = np.zeros((3, 16, 16))
        x[:, : im.shape[1], : im.shape[2]] = (im.numpy() - mean) / std
        feat = x.reshape(3, 4, s, 4, s).mean((2, 4))
        maps = np.einsum("kc,chw->khw", w.numpy(), feat)
        z = manual_weighted_gap(maps, v.numpy(), s)
        y = lab.numpy().astype(float)
        p = 1 / (1 + np.exp(-z))
        total.append(-(y * np.log(p) + (1 - y) * np.log(1 - p)))
    assert loss.item() == pytest.approx(float(np.mean(total)), rel=1e-5)
    assert model.weight_dict == {"loss_cls": 1.0}


def _fixed_model(bg=0.3):
    # res5 grid 2x3 at stride 4 -> padded input 8x12; image 8x10 (last column half padding).
    feat = torch.tensor([[[1.0, 2.0, 0.0], [0.0, 1.0, 3.0]],
                         [[0.5, 0.0, 1.0], [2.0, 0.0, 0.0]]])
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0], [0.5, -2.0]])  # K = 4
    model = CAMModel(backbone=FixedBackbone(feat, 4), num_classes=4, pixel_mean=MEAN, pixel_std=STD,
                     size_divisibility=4, bg_threshold=bg)
    model.classifier.weight.data.copy_(w[:, :, None, None])
    return model.eval(), feat.numpy(), w.numpy()


def _expected(feat, w, considered, bg, out_hw=(16, 20)):
    maps = np.einsum("kc,chw->khw", w, feat)
    cams = np_bilinear(np.maximum(maps, 0), 8, 12)[:, :8, :10]
    cams = np_bilinear(cams, *out_hw)
    peak = cams.reshape(len(w), -1).max(1)
    cams = np.where(peak[:, None, None] > 0, cams / np.where(peak > 0, peak, 1)[:, None, None], 0)
    cams = cams * considered[:, None, None]
    masked = np.where(considered[:, None, None], cams, -np.inf)
    label = np.where(masked.max(0) >= bg, masked.argmax(0), 255)
    return maps, cams, label


def test_inference_restricted_to_predicted_classes():
    model, feat, w = _fixed_model()
    sample = {"image": torch.zeros(3, 8, 10), "height": 16, "width": 20,
              "image_labels": torch.tensor([False, True, True, False])}
    out = model([sample])[0]
    maps = np.einsum("kc,chw->khw", w, feat)
    valid = np.ones((8, 10), dtype=bool)
    scores = manual_weighted_gap(maps, valid, 4)
    np.testing.assert_allclose(out["scores"].numpy(), scores, rtol=1e-6)
    considered = scores > 0
    assert considered.tolist() == [True, True, False, False]  # differs from the image labels
    _, cams, label = _expected(feat, w, considered, 0.3)
    assert out["sem_seg"].shape == (4, 16, 20)
    np.testing.assert_allclose(out["sem_seg"].numpy(), cams, atol=1e-6)
    assert out["sem_seg_label"].dtype == torch.long
    np.testing.assert_array_equal(out["sem_seg_label"].numpy(), label)
    assert {0, 1, 255} <= set(np.unique(label).tolist())  # both classes and background occur
    assert out["sem_seg"][0].max().item() == pytest.approx(1.0)


def test_inference_restricted_to_image_labels_and_threshold():
    model, feat, w = _fixed_model(bg=0.5)
    model.use_image_labels = True
    labels = np.array([False, True, True, True])  # class 2 has an all-negative map
    sample = {"image": np.zeros((3, 8, 10), np.float32), "height": 16, "width": 20,
              "image_labels": torch.from_numpy(labels)}
    out = model([sample])[0]
    _, cams, label = _expected(feat, w, labels, 0.5)
    np.testing.assert_allclose(out["sem_seg"].numpy(), cams, atol=1e-6)
    np.testing.assert_array_equal(out["sem_seg_label"].numpy(), label)
    assert out["sem_seg"][0].abs().max().item() == 0.0  # not an image label
    assert out["sem_seg"][2].abs().max().item() == 0.0  # max 0 stays 0
    assert set(np.unique(label).tolist()) <= {1, 3, 255} and 0 not in label
    # No class considered -> everything background.
    sample["image_labels"] = torch.zeros(4, dtype=torch.bool)
    assert (model([sample])[0]["sem_seg_label"] == 255).all()


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="BG_THRESHOLD"):
        CAMModel(backbone=PoolBackbone(4), num_classes=2, pixel_mean=MEAN, pixel_std=STD,
                 size_divisibility=4, bg_threshold=1.5)
    model = CAMModel(backbone=PoolBackbone(4), num_classes=2, pixel_mean=MEAN, pixel_std=STD, size_divisibility=4)
    with pytest.raises(ValueError, match="image labels"):
        model([{"image": torch.zeros(3, 8, 8), "image_labels": torch.ones(3, dtype=torch.bool)}])


def _synthetic_batch(g, n=8, size=16):
    """Noise images; class 0 = a red 6x6 square, class 1 = a blue 6x6 square (random places)."""
    batch = []
    for _ in range(n):
        img = torch.rand(3, size, size, generator=g) * 60 + 90
        lab = torch.rand(2, generator=g) < 0.5
        boxes = {}
        for c, channel in enumerate((0, 2)):
            if lab[c]:
                y, x = torch.randint(0, size - 6, (2,), generator=g).tolist()
                img[channel, y:y + 6, x:x + 6] = 255.0
                boxes[c] = (y, x)
        batch.append({"image": img, "valid": torch.ones(size, size, dtype=torch.bool), "image_labels": lab,
                      "height": size, "width": size, "boxes": boxes})
    return batch


def test_short_training_decreases_loss_and_localises():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    model = CAMModel(backbone=PoolBackbone(4, hidden=8), num_classes=2, pixel_mean=MEAN, pixel_std=STD,
                     size_divisibility=4, bg_threshold=0.3)
    batch = _synthetic_batch(g)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    losses = []
    for _ in range(60):
        loss = sum(model(batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])
    # The CAM of a present class lands on its square: most of the square's pixels get its label.
    model.eval()
    model.use_image_labels = True
    outs = model(batch)
    hits = []
    for x, out in zip(batch, outs):
        for c, (y, xx) in x["boxes"].items():
            hits.append((out["sem_seg_label"][y:y + 6, xx:xx + 6] == c).float().mean().item())
    assert np.mean(hits) > 0.6, hits


def test_build_cam_model_from_config_with_real_backbone():
    from simformer.config import get_cfg
    from simformer.modeling.meta_arch import build_model

    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "CAM"
    cfg.MODEL.BACKBONE.NAME = "efficientnet_lite0"
    cfg.MODEL.BACKBONE.WEIGHTS = ""
    cfg.MODEL.CAM.BG_THRESHOLD = 0.4
    model = build_model(cfg, 5, None)
    assert isinstance(model, CAMModel) and model.bg_threshold == 0.4 and model.size_divisibility == 32
    assert model.device.type == "cpu"
    batch = [{"image": torch.rand(3, 40, 52) * 255, "valid": torch.ones(40, 52, dtype=torch.bool),
              "image_labels": torch.tensor([1, 0, 1, 0, 0], dtype=torch.bool), "height": 20, "width": 26}]
    losses = model(batch)
    assert set(losses) == {"loss_cls"} and torch.isfinite(losses["loss_cls"])
    losses["loss_cls"].backward()
    assert model.classifier.weight.grad.abs().sum() > 0
    model.eval()
    out = model(batch)[0]
    assert out["sem_seg"].shape == (5, 20, 26) and out["sem_seg_label"].shape == (20, 26)
    assert build_cam_model(cfg, 5).classifier.out_channels == 5
