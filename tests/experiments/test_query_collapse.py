"""experiments/toyscenes/query_collapse.py: the query-correlation figure by hand, and which modules
the dropout switch puts in train mode."""
import importlib.util
import os

import torch

PATH = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "toyscenes", "query_collapse.py")
spec = importlib.util.spec_from_file_location("query_collapse", PATH)
qc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(qc)


class FakeModel(torch.nn.Module):
    """forward_features returns fixed mask logits [1, Q, H, W]."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.drop = torch.nn.Dropout(0.1)
        self.attn = torch.nn.MultiheadAttention(4, 1, dropout=0.1)
        self.norm = torch.nn.BatchNorm1d(4)

    def normalize(self, xs):
        return xs

    def forward_features(self, _):
        return {"pred_masks": self.logits[None]}


def test_identical_queries_correlate_at_one_and_opposite_pairs_at_minus_one():
    base = torch.tensor([[-2.0, 0.0], [1.0, 3.0]])
    same = FakeModel(torch.stack([base, base * 1.0, base]))
    assert abs(qc.mask_correlation(same, [[None]]) - 1.0) < 1e-6
    # two queries whose probabilities are mirror images: sigmoid(-x) = 1 - sigmoid(x) -> r = -1
    mirror = FakeModel(torch.stack([base, -base]))
    assert abs(qc.mask_correlation(mirror, [[None], [None]]) + 1.0) < 1e-6


def test_hand_pearson_for_three_queries():
    logits = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(0))
    p = logits.flatten(1).sigmoid().numpy()
    import numpy as np

    r = np.corrcoef(p)
    expected = (r.sum() - 3) / 6  # mean of the off-diagonal entries
    assert abs(qc.mask_correlation(FakeModel(logits), [[None]]) - expected) < 1e-5


def test_dropout_switch_leaves_normalisation_in_eval():
    model = FakeModel(torch.zeros(1, 2, 2))
    qc.set_dropout(model, True)
    assert model.drop.training and model.attn.training and not model.norm.training and not model.training
    qc.set_dropout(model, False)
    assert not any(m.training for m in model.modules())
