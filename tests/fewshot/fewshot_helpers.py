"""A tiny synthetic segmentation dataset on disk and a deterministic fake proposal source."""
import os

import numpy as np
import torch
from PIL import Image

from simformer.fewshot.base import View

NAMES = ["bg", "square", "bar", "dot"]


def write_dataset(root, num_images=10, size=16, seed=0):
    """``num_images`` RGB images + uint8 labels (K = 4: 0 background, 1..3 rectangles, 255 void).

    Returns detectron2-style records."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "labels"), exist_ok=True)
    records = []
    for i in range(num_images):
        label = np.zeros((size, size), np.uint8)
        for c in (1, 2, 3):
            if rng.random() < 0.75:
                y, x = rng.integers(0, size - 4, 2)
                h, w = rng.integers(2, 6, 2)
                label[y:y + h, x:x + w] = c
        label[rng.random((size, size)) < 0.05] = 255
        image = (rng.random((size, size, 3)) * 80 + label[..., None].astype(float) * 40).clip(0, 255).astype(np.uint8)
        img_path = os.path.join(root, "images", f"im{i:02d}.png")
        lab_path = os.path.join(root, "labels", f"im{i:02d}.png")
        Image.fromarray(image).save(img_path)
        Image.fromarray(label, mode="L").save(lab_path)
        records.append({"file_name": img_path, "sem_seg_file_name": lab_path, "image_id": f"im{i:02d}", "index": i})
    return records


class FakeSource:
    """image -> View with 6 proposals and a "res4" and a "mask_features" map [5, H/4, W/4], a fixed function of the image."""

    def __init__(self):
        self.calls = 0

    def __call__(self, image):
        self.calls += 1
        h, w = image.shape[-2:]
        g = torch.Generator().manual_seed(int(image.sum().item()) % (2 ** 31))
        proposals = torch.rand(6, h, w, generator=g)
        proposals[0] = (image[0] > 100).float()  # a useful proposal among noisy ones
        feats = torch.nn.functional.avg_pool2d(image[None], 4)[0]
        feats = torch.cat([feats, torch.rand(2, h // 4, w // 4, generator=g)])
        return View(image=image, proposals=proposals, scores=torch.rand(6, generator=g), features={"res4": feats, "mask_features": feats.flip(0)})
