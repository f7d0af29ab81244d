"""SemSegEvaluator against independent computations (per-class boolean-mask loops, ADE20K's own
benchmark code, hand-computed cases), chunked and distributed accumulation, and the outputs."""
import csv
import json
import os

import numpy as np
import pytest

from simformer.evaluation.evaluator import build_evaluator
from simformer.evaluation.sem_seg import (
    METRIC_KEYS, SemSegEvaluator, confusion_matrix, format_table, harmonic_mean, write_results,
)

K = 7
NAMES = [f"c{i}" for i in range(K)]
NOVEL = np.array([False, False, True, False, True, True, False])
ABSENT_PREDICTED = 5  # never in the GT, but predicted
ABSENT_BOTH = 6       # neither in the GT nor predicted


def random_pairs(seed, n=4):
    """Random (pred, gt) pairs with void GT pixels and 255 ("no class") predictions."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        h, w = 9 + i, 13 - i
        gt = rng.choice([0, 1, 2, 3, 4], size=(h, w)).astype(np.uint8)
        gt[rng.random((h, w)) < 0.15] = 255
        pred = rng.choice([0, 1, 2, 3, 4, 5], size=(h, w)).astype(np.uint8)
        keep = rng.random((h, w)) < 0.4  # correlate pred with gt so IoUs are not all tiny
        pred[keep & (gt != 255)] = gt[keep & (gt != 255)]
        pred[rng.random((h, w)) < 0.1] = 255
        pairs.append((pred, gt))
    assert any((p == ABSENT_PREDICTED).any() for p, _ in pairs)
    return pairs


def reference_metrics(pairs, k, novel_mask, convention):
    """Independent per-class TP/FP/FN counts with boolean masks (no confusion matrix)."""
    tp, fp, fn, n_gt = (np.zeros(k) for _ in range(4))
    for pred, gt in pairs:
        labelled = gt != 255
        for c in range(k):
            tp[c] += np.sum((pred == c) & (gt == c))
            fp[c] += np.sum((pred == c) & (gt != c) & labelled)
            fn[c] += np.sum((gt == c) & (pred != c))  # includes pred == 255 (a miss)
            n_gt[c] += np.sum(gt == c)
    iou = {}
    for c in range(k):
        if n_gt[c] > 0:
            iou[c] = 100 * tp[c] / (tp[c] + fp[c] + fn[c])
        elif convention == "v0.6" and fp[c] > 0:
            iou[c] = 0.0
        else:
            iou[c] = None

    def mean(ids):
        vals = [iou[c] for c in ids if iou[c] is not None]
        return sum(vals) / len(vals) if vals else None

    base = mean([c for c in range(k) if not novel_mask[c]])
    novel = mean([c for c in range(k) if novel_mask[c]])
    total = n_gt.sum()
    with_gt = [c for c in range(k) if n_gt[c] > 0]
    return {
        "miou": mean(range(k)),
        "base_miou": base,
        "novel_miou": novel,
        "hm": 2 * base * novel / (base + novel),
        "fwiou": sum(n_gt[c] / total * iou[c] for c in with_gt),
        "macc": sum(100 * tp[c] / n_gt[c] for c in with_gt) / len(with_gt),
        "pacc": 100 * tp.sum() / total,
        "per_class_iou": iou,
        "num_pixels": int(total),
    }


@pytest.mark.parametrize("convention", ["current", "v0.6"])
def test_matches_independent_per_class_computation(convention):
    pairs = random_pairs(0)
    ev = SemSegEvaluator(class_names=NAMES, novel_mask=NOVEL, convention=convention)
    for i, (p, g) in enumerate(pairs):
        ev.process(p, g, name=f"img{i}.png")
    r = ev.evaluate()
    ref = reference_metrics(pairs, K, NOVEL, convention)
    for key in ("miou", "base_miou", "novel_miou", "hm", "fwiou", "macc", "pacc"):
        assert r[key] == pytest.approx(ref[key], rel=1e-12, abs=1e-12), key
    for c in range(K):
        if ref["per_class_iou"][c] is None:
            assert r["per_class_iou"][NAMES[c]] is None
        else:
            assert r["per_class_iou"][NAMES[c]] == pytest.approx(ref["per_class_iou"][c], rel=1e-12, abs=1e-12)
    assert r["num_pixels"] == ref["num_pixels"]
    assert r["convention"] == convention
    assert list(r)[:len(METRIC_KEYS)] == list(METRIC_KEYS)


def test_conventions_differ_only_through_absent_predicted_class():
    pairs = random_pairs(1)
    res = {}
    for conv in ("current", "v0.6"):
        ev = SemSegEvaluator(class_names=NAMES, novel_mask=NOVEL, convention=conv)
        for p, g in pairs:
            ev.process(p, g)
        res[conv] = ev.evaluate()
    cur, old = res["current"], res["v0.6"]
    assert cur["per_class_iou"][NAMES[ABSENT_PREDICTED]] is None
    assert old["per_class_iou"][NAMES[ABSENT_PREDICTED]] == 0.0
    assert cur["per_class_iou"][NAMES[ABSENT_BOTH]] is None and old["per_class_iou"][NAMES[ABSENT_BOTH]] is None
    # v0.6 adds one zero to the mean over the 5 classes with GT (all and novel groups).
    assert old["miou"] == pytest.approx(cur["miou"] * 5 / 6)
    n_novel_gt = int((NOVEL[:5]).sum())  # novel classes that have GT pixels: 2 and 4
    assert old["novel_miou"] == pytest.approx(cur["novel_miou"] * n_novel_gt / (n_novel_gt + 1))
    assert old["base_miou"] == cur["base_miou"]  # the absent class is novel
    for key in ("fwiou", "macc", "pacc"):  # GT-weighted metrics do not depend on the convention
        assert old[key] == cur[key]


def test_hand_computed_case_with_void_and_no_class_prediction():
    gt = np.array([[0, 0, 1], [1, 255, 2]])
    pred = np.array([[0, 1, 1], [255, 0, 2]])
    ev = SemSegEvaluator(class_names=["a", "b", "c"])
    ev.process(pred, gt)
    r = ev.evaluate()
    # a: TP1 FN1 (pred 1) and no FP (its other prediction is on a void pixel) -> 1/2
    # b: TP1, FN1 (predicted 255 = miss), FP1 (the a pixel predicted b) -> 1/3; c: 1/1
    assert r["per_class_iou"] == pytest.approx({"a": 50.0, "b": 100 / 3, "c": 100.0})
    assert r["miou"] == pytest.approx((50 + 100 / 3 + 100) / 3)
    assert r["pacc"] == pytest.approx(60.0)  # 3 of 5 labelled pixels
    assert r["macc"] == pytest.approx((50 + 50 + 100) / 3)
    assert r["fwiou"] == pytest.approx((2 * 50 + 2 * 100 / 3 + 100) / 5)
    assert r["num_pixels"] == 5
    assert r["base_miou"] is None and r["novel_miou"] is None and r["hm"] is None
    m = confusion_matrix(pred, gt, 3)
    assert m.shape == (4, 4) and m[1, 3] == 1 and m[3, 0] == 1 and m.sum() == 6


def ade_intersection_and_union(im_pred, im_lab, num_class):
    """ADE20K SceneParsing benchmark rule: raw labels, 0 = ignored, classes 1..num_class."""
    im_pred = im_pred * (im_lab > 0)
    inter = im_pred * (im_pred == im_lab)
    area_inter, _ = np.histogram(inter, bins=num_class, range=(1, num_class))
    area_pred, _ = np.histogram(im_pred, bins=num_class, range=(1, num_class))
    area_lab, _ = np.histogram(im_lab, bins=num_class, range=(1, num_class))
    return area_inter, area_pred + area_lab - area_inter


def test_ade20k_benchmark_convention_agrees_after_zero_shift():
    k = 150
    rng = np.random.default_rng(3)
    ev_cur = SemSegEvaluator(class_names=[str(i) for i in range(k)], convention="current")
    ev_old = SemSegEvaluator(class_names=[str(i) for i in range(k)], convention="v0.6")
    inter, union = np.zeros(k), np.zeros(k)
    for _ in range(3):
        raw = rng.integers(0, 101, size=(30, 40))          # raw GT: 0 = other, classes 1..100 only
        pred = rng.integers(0, k, size=(30, 40))           # our ids 0..149 (some never in GT)
        copy = rng.random(pred.shape) < 0.5                # half the pixels right, for non-trivial IoUs
        pred[copy] = np.maximum(raw - 1, 0)[copy]
        i, u = ade_intersection_and_union(pred + 1, raw, k)
        inter += i
        union += u
        gt = np.where(raw == 0, 255, raw - 1)             # the 0 -> 255 shift of `simformer prepare`
        ev_cur.process(pred, gt)
        ev_old.process(pred, gt)
    cur, old = ev_cur.evaluate()["per_class_iou"], ev_old.evaluate()["per_class_iou"]
    n_checked = 0
    for c in range(k):
        if union[c] == 0:
            assert cur[str(c)] is None and old[str(c)] is None
            continue
        ade = 100 * inter[c] / union[c]
        assert old[str(c)] == pytest.approx(ade, rel=1e-12, abs=1e-12)
        if c < 100:  # has GT pixels
            assert cur[str(c)] == pytest.approx(ade, rel=1e-12, abs=1e-12)
            n_checked += 1
        else:
            assert cur[str(c)] is None and ade == 0
    assert n_checked == 100 and any(union[100:] > 0)


def test_chunked_accumulation_equals_one_shot():
    pairs = random_pairs(4)
    one = SemSegEvaluator(class_names=NAMES, novel_mask=NOVEL)
    chunked = SemSegEvaluator(class_names=NAMES, novel_mask=NOVEL)
    for p, g in pairs:
        one.process(p, g)
        for rows in np.array_split(np.arange(g.shape[0]), 3):
            chunked.process(p[rows], g[rows])
    assert np.array_equal(one.confusion, chunked.confusion)
    merged = SemSegEvaluator(class_names=NAMES, novel_mask=NOVEL)
    merged.process_confusion(confusion_matrix(*pairs[0], K))
    merged.process_confusion(sum(confusion_matrix(p, g, K) for p, g in pairs[1:]))
    assert np.array_equal(one.confusion, merged.confusion)
    assert one.evaluate() == chunked.evaluate() == merged.evaluate()
    one.reset()
    assert one.confusion.sum() == 0 and one.evaluate()["miou"] is None


def test_torch_and_int64_inputs_equal_uint8():
    torch = pytest.importorskip("torch")
    p, g = random_pairs(5, n=1)[0]
    a = confusion_matrix(p, g, K)
    assert np.array_equal(a, confusion_matrix(torch.from_numpy(p.astype(np.int64)), torch.from_numpy(g), K))
    assert np.array_equal(a, confusion_matrix(p.astype(np.int32), g.astype(np.int64), K))
    # brute-force matrix: one count per pixel at [gt index, pred index], 255 -> K
    gi, pi = np.where(g == 255, K, g).ravel(), np.where(p == 255, K, p).ravel()
    brute = np.zeros((K + 1, K + 1), dtype=np.int64)
    for x, y in zip(gi, pi):
        brute[x, y] += 1
    assert np.array_equal(a, brute)


def test_bad_inputs_name_the_file():
    ev = SemSegEvaluator(class_names=NAMES)
    gt = np.zeros((4, 5), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"pred_a\.png.*prediction.*\[9\]"):
        ev.process(np.full((4, 5), 9, dtype=np.uint8), gt, name="pred_a.png")
    with pytest.raises(ValueError, match=r"b\.png.*ground truth.*\[7\]"):
        ev.process(np.zeros((4, 5), np.uint8), np.full((4, 5), K, np.uint8), name="b.png")
    with pytest.raises(ValueError, match=r"c\.png.*\(4, 6\).*\(4, 5\)"):
        ev.process(np.zeros((4, 6), np.uint8), gt, name="c.png")
    with pytest.raises(ValueError, match=r"d\.png.*outside 0\.\.255"):
        ev.process(np.full((4, 5), -1), gt, name="d.png")
    with pytest.raises(ValueError, match=r"e\.png.*dtype float"):
        ev.process(np.zeros((4, 5)), gt, name="e.png")
    assert ev.confusion.sum() == 0  # nothing accumulated from rejected images
    with pytest.raises(ValueError, match="convention"):
        SemSegEvaluator(class_names=NAMES, convention="v1")
    with pytest.raises(ValueError, match="shape"):
        ev.process_confusion(np.zeros((K, K), dtype=np.int64))


def test_harmonic_mean_and_groups():
    assert harmonic_mean(40.0, 60.0) == pytest.approx(48.0)
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert harmonic_mean(50.0, None) is None
    pairs = random_pairs(6)
    ev = SemSegEvaluator(class_names=NAMES, novel_mask=np.zeros(K, dtype=bool))  # all base
    for p, g in pairs:
        ev.process(p, g)
    r = ev.evaluate()
    assert r["base_miou"] == r["miou"] and r["novel_miou"] is None and r["hm"] is None


def _sync_worker(rank, init_file, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        ev = SemSegEvaluator(class_names=NAMES, novel_mask=NOVEL)
        for p, g in random_pairs(10 + rank, n=2):
            ev.process(p, g)
        local = ev.confusion.copy()
        ev.synchronize()
        ev.synchronize()  # idempotent: must not double-count
        np.save(os.path.join(out_dir, f"local{rank}.npy"), local)
        np.save(os.path.join(out_dir, f"total{rank}.npy"), ev.confusion)
    finally:
        dist.destroy_process_group()


def test_synchronize_sums_across_two_gloo_ranks(tmp_path):
    torch = pytest.importorskip("torch")
    import torch.multiprocessing as mp

    torch.set_num_threads(1)
    mp.spawn(_sync_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    local = [np.load(tmp_path / f"local{r}.npy") for r in range(2)]
    expected = sum(confusion_matrix(p, g, K) for r in range(2) for p, g in random_pairs(10 + r, n=2))
    assert np.array_equal(local[0] + local[1], expected)
    assert not np.array_equal(local[0], expected)
    for r in range(2):
        assert np.array_equal(np.load(tmp_path / f"total{r}.npy"), expected)


def test_synchronize_without_process_group_is_noop():
    ev = SemSegEvaluator(class_names=NAMES)
    p, g = random_pairs(7, n=1)[0]
    ev.process(p, g)
    before = ev.confusion.copy()
    ev.synchronize()
    assert np.array_equal(ev.confusion, before)


def test_write_results_and_table(tmp_path):
    pairs = random_pairs(8)
    ev = SemSegEvaluator(class_names=NAMES, novel_mask=NOVEL)
    for p, g in pairs:
        ev.process(p, g)
    r = ev.evaluate()
    paths = write_results(r, str(tmp_path / "out"), NAMES, NOVEL)
    with open(paths["metrics"]) as f:
        data = json.load(f)
    assert list(data)[:8] == ["miou", "base_miou", "novel_miou", "hm", "fwiou", "macc", "pacc", "per_class_iou"]
    d2 = {"sem_seg/mIoU", "sem_seg/fwIoU", "sem_seg/mACC", "sem_seg/pACC"}
    d2 |= {f"sem_seg/{m}-{n}" for m in ("IoU", "ACC") for n in NAMES}
    assert set(data) - set(METRIC_KEYS) == {"per_class_acc", "convention", "num_pixels"} | d2
    assert data["miou"] == pytest.approx(r["miou"]) and data["per_class_iou"]["c5"] is None
    with open(paths["per_class_iou"]) as f:
        rows = list(csv.DictReader(f))
    assert [row["class_name"] for row in rows] == NAMES
    assert [row["group"] for row in rows] == ["novel" if n else "base" for n in NOVEL]
    assert float(rows[0]["iou"]) == pytest.approx(r["per_class_iou"]["c0"], abs=1e-6)
    assert float(rows[1]["acc"]) == pytest.approx(r["per_class_acc"]["c1"], abs=1e-6)
    assert rows[ABSENT_PREDICTED]["iou"] == "" and rows[ABSENT_PREDICTED]["acc"] == ""
    assert not [f for f in os.listdir(tmp_path / "out") if f.startswith(".tmp")]
    table = format_table(r, NAMES, NOVEL)
    assert f"HM {r['hm']:.2f}" in table and f"all {r['miou']:.2f}" in table
    assert f"base {r['base_miou']:.2f}" in table and f"novel {r['novel_miou']:.2f}" in table
    line = next(line for line in table.splitlines() if " c2 " in line)
    assert "*" in line and "novel" in line and f"{r['per_class_iou']['c2']:.2f}" in line


def detectron2_sem_seg_metrics(conf, names):
    """detectron2's SemSegEvaluator.evaluate() arithmetic on a [K+1, K+1] [gt, pred] matrix (its
    matrix is [pred, gt]; the sums below are written for ours). NaN = undefined."""
    k = len(names)
    m = conf.astype(float)
    tp = np.diag(m)[:k]
    pos_gt = m[:k, :].sum(1)            # every prediction on a labelled pixel, "no class" included
    pos_pred = m[:k, :k].sum(0)
    acc = np.full(k, np.nan)
    iou = np.full(k, np.nan)
    acc_valid = pos_gt > 0
    acc[acc_valid] = tp[acc_valid] / pos_gt[acc_valid]
    union = pos_gt + pos_pred - tp
    iou_valid = acc_valid & (union > 0)
    iou[iou_valid] = tp[iou_valid] / union[iou_valid]
    res = {"sem_seg/mIoU": 100 * iou[iou_valid].mean(), "sem_seg/fwIoU": 100 * (iou[iou_valid] * (pos_gt / pos_gt.sum())[iou_valid]).sum(),
           "sem_seg/mACC": 100 * acc[acc_valid].mean(), "sem_seg/pACC": 100 * tp.sum() / pos_gt.sum()}
    res.update({f"sem_seg/IoU-{n}": 100 * iou[i] for i, n in enumerate(names)})
    res.update({f"sem_seg/ACC-{n}": 100 * acc[i] for i, n in enumerate(names)})
    return res


def test_metrics_json_has_detectron2_keys(tmp_path):
    pairs = random_pairs(11)
    ev = SemSegEvaluator(class_names=NAMES, novel_mask=NOVEL)
    for p, g in pairs:
        ev.process(p, g)
    r = ev.evaluate()
    data = json.load(open(write_results(r, str(tmp_path), NAMES, NOVEL)["metrics"]))
    expected = detectron2_sem_seg_metrics(ev.confusion, NAMES)
    for key, value in expected.items():
        if np.isnan(value):
            assert data[key] is None, key
        else:
            assert data[key] == pytest.approx(value, rel=1e-9), key
    assert data["sem_seg/IoU-c5"] is None and data["sem_seg/IoU-c6"] is None  # absent from the GT
    assert data["miou"] == data["sem_seg/mIoU"]  # ours are kept


def test_build_evaluator_reads_config(tmp_path):
    from simformer.config import get_cfg
    from simformer.data.catalog import class_names
    from simformer.data.class_split import make_split, save_split

    cfg = get_cfg()
    cfg.TEST.MIOU_CONVENTION = "v0.6"
    ev = build_evaluator(cfg, "toyscenes_val")
    assert ev.convention == "v0.6" and ev.novel_mask is None and ev.class_names == class_names("toyscenes")
    names = class_names("toyscenes")
    path = str(tmp_path / "split.json")
    save_split(make_split("toyscenes", names, [3, 11]), path)
    cfg.WEAKSHOT.SPLIT = path
    ev = build_evaluator(cfg, "toyscenes_val")
    assert np.flatnonzero(ev.novel_mask).tolist() == [3, 11]
    cfg.TEST.MIOU_CONVENTION = "v2"
    with pytest.raises(ValueError, match="MIOU_CONVENTION"):
        build_evaluator(cfg, "toyscenes_val")
