"""run_fewshot end to end on a tiny synthetic dataset: a ground-truth predictor scores 100 / 100, no
method but the oracle sees the query label, one proposal pass per image, files, `simformer stats`."""
import csv
import json
import os

import numpy as np
import pytest
import torch

from fewshot_helpers import NAMES, FakeSource
from simformer.fewshot.episodes import class_pixel_counts, load_episodes, sample_episodes
from simformer.fewshot.metrics import FewShotEvaluator, episode_counts
from simformer.fewshot.methods import OracleMethod
from simformer.fewshot.proposals import load_view
from simformer.fewshot.runner import format_table, run_fewshot


class GroundTruth:
    """Test-only: returns the query's ground truth."""

    name = "gt"
    needs_query_gt = True

    def predict(self, query, supports):
        return query.mask.float()


class Spy:
    """Records what it sees; predicts the first support's mask area fraction everywhere (a constant)."""

    name = "spy"
    needs_query_gt = False

    def __init__(self):
        self.seen = []

    def predict(self, query, supports):
        assert query.mask is None and query.valid is None, "a method without needs_query_gt saw the query label"
        assert all(s.mask is not None and s.mask.any() and s.valid is not None for s in supports)
        self.seen.append(len(supports))
        return torch.zeros(query.size)


def run(cfg, records, out=None, **kw):
    args = dict(methods=[GroundTruth(), Spy(), "oracle", "prototype"], shots=2, episodes=12, seed=0,
                min_pixels=3, class_names=NAMES, out_dir=out, cache_dir=out and os.path.join(out, "cache"))
    args.update(kw)
    return run_fewshot(cfg, FakeSource(), records, [1, 2, 3], **args)


def test_ground_truth_predictor_scores_100(fs_cfg, tiny_records, tmp_path):
    res = run(fs_cfg, tiny_records, str(tmp_path / "out"))
    assert res["gt"]["miou"] == pytest.approx(100.0) and res["gt"]["fbiou"] == pytest.approx(100.0)
    assert res["gt"]["n_episodes"] == 12
    assert res["spy"]["miou"] == 0.0
    assert 0 < res["oracle"]["miou"] < 100 and res["prototype"]["miou"] is not None
    per = run(fs_cfg, tiny_records, per_episode=True)
    assert per["gt"]["miou"] == pytest.approx(100.0) and per["gt"]["fbiou"] == pytest.approx(100.0)


def test_matches_a_direct_loop_and_writes_its_files(fs_cfg, tiny_records, tmp_path):
    out = str(tmp_path / "out")
    source = FakeSource()
    spy = Spy()
    res = run_fewshot(fs_cfg, source, tiny_records, [1, 2, 3], methods=["oracle", spy], shots=2, episodes=12,
                      seed=3, min_pixels=3, class_names=NAMES, out_dir=out, cache_dir=str(tmp_path / "c"),
                      fold_name="tiny/fold", dataset_label="tiny images")
    # the same episodes, evaluated directly with load_view
    counts = class_pixel_counts(tiny_records, 4, cache_dir=str(tmp_path / "c"))
    eps = sample_episodes(counts, [1, 2, 3], shots=2, num_episodes=12, seed=3, min_pixels=3)
    ev = FewShotEvaluator([1, 2, 3])
    for e in eps:
        q = load_view(tiny_records[e.query], FakeSource(), e.class_id)
        pred = OracleMethod().predict(q, []) > 0.5
        ev.process_counts([e.class_id], episode_counts(pred, q.mask, q.valid)[None])
    assert res["oracle"]["miou"] == pytest.approx(ev.evaluate()["miou"])
    assert spy.seen == [2] * 12
    # every image through the source once, however often it appears in the episodes
    used = {i for e in eps for i in (e.query, *e.supports)}
    assert source.calls == len(used)

    assert load_episodes(os.path.join(out, "episodes.json"))[0] == eps
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    m = metrics["methods"]["oracle"]
    assert (m["fold"], m["dataset"], m["shots"], m["seed"], m["n_episodes"]) == ("tiny/fold", "tiny images", 2, 3, 12)
    assert m["miou"] == pytest.approx(res["oracle"]["miou"]) and metrics["run"]["model_calls"] == len(used)
    rows = list(csv.DictReader(open(os.path.join(out, "per_class.csv"))))
    assert [(r["method"], r["class_name"]) for r in rows] == [(m, n) for m in ("oracle", "spy") for n in NAMES[1:]]
    for r in rows:
        if int(r["union"]):
            assert float(r["iou"]) == pytest.approx(100 * int(r["intersection"]) / int(r["union"]))
    table = format_table(res)
    assert table.splitlines()[1].split()[0] == "oracle" and "tiny images" in table


def test_a_small_view_cache_gives_the_same_result(fs_cfg, tiny_records, tmp_path):
    from simformer.config import get_cfg

    small = get_cfg()
    small.FEWSHOT.VIEW_CACHE_MB = 0  # keeps one view: evicts all the time
    a = run(fs_cfg, tiny_records, methods=["oracle", "prototype"])
    b = run(small, tiny_records, methods=["oracle", "prototype"])
    assert {k: v["miou"] for k, v in a.items()} == {k: v["miou"] for k, v in b.items()}


def test_too_few_images_and_bad_methods(fs_cfg, tiny_records, tmp_path):
    with pytest.raises(ValueError, match="fewer than shots \\+ 1 = 11"):
        run(fs_cfg, tiny_records, shots=10)
    with pytest.raises(ValueError, match="distinct names"):
        run(fs_cfg, tiny_records, methods=["oracle", "oracle"])

    class Wrong:
        name = "wrong"

        def predict(self, query, supports):
            return torch.zeros(2, 2)

    with pytest.raises(ValueError, match="'wrong' returned a \\(2, 2\\) map"):
        run(fs_cfg, tiny_records, methods=[Wrong()])


def test_seeds_feed_simformer_stats(fs_cfg, tiny_records, tmp_path, capsys):
    from simformer.cli import main

    frames = []
    for seed in range(3):
        out = str(tmp_path / f"seed{seed}")
        run(fs_cfg, tiny_records, out, seed=seed, methods=["oracle", "prototype"], fold_name="tiny/f0")
        frames.append(open(os.path.join(out, "results.csv")).read().splitlines())
    both = [frames[0][0]] + [line for f in frames for line in f[1:]]
    path = tmp_path / "all.csv"
    path.write_text("\n".join(both) + "\n")
    import pandas as pd

    df = pd.read_csv(path)
    assert set(df["split"]) == {"tiny/f0:2shot"} and sorted(df["seed"].unique()) == [0, 1, 2]
    assert np.allclose(df["novel_miou"], df["miou"])
    assert main(["stats", str(path), "--baseline", "prototype"]) == 0
    out = capsys.readouterr().out
    assert "oracle" in out and "tiny/f0:2shot" in out
