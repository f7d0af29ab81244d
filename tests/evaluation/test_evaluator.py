"""evaluation/evaluator.py: the evaluator factory, the protocol and the inference loop."""
import numpy as np
import pytest
import torch
from torch import nn

from simformer.config import get_cfg
from simformer.data.build import build_test_loader
from simformer.data.catalog import class_names
from simformer.data.class_split import all_base_split, make_split
from simformer.evaluation.evaluator import (DatasetEvaluator, build_evaluator, inference_on_dataset,
                                            prediction_label, sem_seg_evaluator)
from simformer.evaluation.sem_seg import confusion_matrix, metrics_from_confusion

NAMES = class_names("toyscenes")
K = len(NAMES)


class OracleModel(nn.Module):
    """Predicts a given function of the full GT (as one-hot scores); records its mode."""

    def __init__(self, fn):
        super().__init__()
        self.fn, self.modes = fn, []
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, batch):
        self.modes.append(self.training)
        outs = []
        for s in batch:
            pred = torch.as_tensor(self.fn(s["sem_seg_full"].numpy().astype(np.int64)))
            outs.append({"sem_seg": nn.functional.one_hot(pred.clamp(0, K - 1), K).permute(2, 0, 1).float()})
        return outs


def test_factory_groups_by_split():
    ev = sem_seg_evaluator(NAMES, make_split("toyscenes", NAMES, [2, 5]), convention="v0.6")
    assert np.flatnonzero(ev.novel_mask).tolist() == [2, 5] and ev.convention == "v0.6" and ev.ignore_label == 255
    assert sem_seg_evaluator(NAMES, all_base_split("toyscenes", NAMES)).novel_mask is None
    assert sem_seg_evaluator(NAMES, None).novel_mask is None
    with pytest.raises(ValueError, match="does not match the class list"):
        sem_seg_evaluator(NAMES[:-1], make_split("toyscenes", NAMES, [2]))


def test_prediction_label_prefers_a_label_map():
    scores = torch.zeros(3, 2, 2)
    scores[1] = 1
    assert (prediction_label({"sem_seg": scores}) == 1).all()
    label = torch.full((2, 2), 255)
    out = prediction_label({"sem_seg": scores, "sem_seg_label": label})
    assert out.dtype == np.uint8 and (out == 255).all()


def test_inference_on_dataset_scores_against_an_independent_count(toy_env):
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = ("toyscenes_train",)
    cfg.INPUT.MIN_SIZE_TEST = 64
    split = make_split("toyscenes", NAMES, [3, 11])
    loader = build_test_loader(cfg, "toyscenes_val")
    gts = [b[0]["sem_seg_full"].numpy() for b in loader]
    counts = np.bincount(np.concatenate([g[g != 255] for g in gts]), minlength=K)
    c = int(counts.argmax())  # the one class predicted right; every other labelled pixel is wrong
    shift = lambda gt: np.where(gt == 255, 0, (gt + 1) % K)  # noqa: E731
    predict = lambda gt: np.where(gt == c, c, np.where(shift(gt) == c, (c + 1) % K, shift(gt)))  # noqa: E731
    model = OracleModel(predict)
    model.train()
    evaluator = build_evaluator(cfg, "toyscenes_val", split)
    first = inference_on_dataset(model, loader, evaluator)
    assert model.training and model.modes and not any(model.modes)  # eval inside, restored after
    again = inference_on_dataset(model, loader, evaluator)  # reset() first: no double counting
    assert again["num_pixels"] == first["num_pixels"]
    # independent: confusion of the same predictions, straight from the samples
    conf = sum(confusion_matrix(predict(g.astype(np.int64)), g, K) for g in gts)
    ref = metrics_from_confusion(conf, class_names=NAMES, novel_mask=split.novel_mask(), convention="current")
    for k in ("miou", "base_miou", "novel_miou", "hm", "pacc"):
        assert first[k] == pytest.approx(ref[k]), k
    assert first["per_class_iou"][NAMES[c]] == pytest.approx(100.0)
    assert first["num_pixels"] == int(counts.sum())


def test_protocol_is_a_base_class():
    class Count(DatasetEvaluator):
        def reset(self):
            self.n = 0

        def process(self, inputs, outputs):
            self.n += len(inputs)

        def evaluate(self):
            return self.n

    model = OracleModel(lambda gt: gt)
    assert inference_on_dataset(model, [[{"sem_seg_full": torch.zeros(2, 2, dtype=torch.long)}]] * 3, Count()) == 3
