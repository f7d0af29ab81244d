"""Smoke test of the benchmark scripts: each runs with its tiniest settings and its RESULT line
parses and is consistent with the figures it is computed from. Timings themselves are not
checked (these are not timed tests). Scripts run in-process (saves the torch import) except
ddp_check, which must spawn ranks from a script file."""
from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(REPO, "benchmarks")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(BENCH, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


C = _load("_common")


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _run(name: str, argv, capsys, device: str = "cpu") -> dict:
    code = _load(name).main(["--quick", "--threads", "1", "--device", device, *argv])
    out = capsys.readouterr().out
    assert code == 0, out
    result = C.parse_result(out)
    assert out.strip().splitlines()[-1].startswith("RESULT "), "RESULT must be the last line"
    return result


def _close(a: float, b: float, rel: float = 2e-3) -> bool:
    """Equal up to the 4-significant-digit rounding of RESULT values (both sides rounded)."""
    return math.isclose(a, b, rel_tol=rel)


# ------------------------------------------------------------------------------ helpers
def test_result_line_round_trip_and_rounding():
    line = C.result_line({"a_s": 0.123456, "n": 20210, "ok": True, "name": "gloo", "big": 123456.7})
    assert line == "RESULT a_s=0.1235 n=20210 ok=1 name=gloo big=1.235e+05"
    assert C.parse_result("noise\n" + line + "\n") == {"a_s": 0.1235, "n": 20210, "ok": 1, "name": "gloo",
                                                        "big": 123500.0}
    with pytest.raises(ValueError):
        C.result_line({"bad": "two words"})
    with pytest.raises(ValueError):
        C.parse_result("no result here")


def test_quartiles_match_numpy():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 10):
        v = rng.random(n).tolist()
        assert np.allclose(C.quartiles(v), np.percentile(v, [25, 50, 75]))


def test_synthetic_batch_contract():
    from simformer.data.class_split_gen import paper_split

    split = paper_split("ade20k/split1")
    sf = C.synthetic_batch(split, 4, 40, 48, seed=3, pairs=True, novel_masks=False)
    mf = C.synthetic_batch(split, 4, 40, 48, seed=3, pairs=False, novel_masks=True)
    novel = torch.from_numpy(split.novel_mask())
    for a, b in zip(sf, mf):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["sem_seg_full"], b["sem_seg_full"])
        full = a["sem_seg_full"]
        is_novel = (full < 150) & novel[full.clamp(max=149)]
        # SimFormer target: novel pixels ignored; MaskFormer target: the full labels
        assert torch.equal(a["sem_seg"], torch.where(is_novel, torch.full_like(full, 255), full))
        assert torch.equal(b["sem_seg"], full)
        ids = torch.unique(full)
        assert torch.equal(torch.nonzero(a["image_labels"]).flatten(), ids[ids < 150])
    assert [s["pair_role"] for s in sf] == ["anchor", "reference"] * 2
    assert "pair_role" not in mf[0]
    for i in (0, 2):  # each pair shares a novel class
        shared = sf[i]["image_labels"] & sf[i + 1]["image_labels"] & novel
        assert shared.any()


# ------------------------------------------------------------------------------ scripts
def test_step_time(capsys):
    r = _run("step_time", ["--batch", "2", "--size", "32", "--repeats", "1", "--warmup", "0"], capsys)
    assert r["maskformer_s"] > 0 and r["simformer_s"] > 0
    assert _close(r["ratio"], r["simformer_s"] / r["maskformer_s"])  # one round: median ratio = ratio
    assert _close(r["simformer_img_s"], 2 / r["simformer_s"])


def test_step_time_breakdown(capsys):
    r = _run("step_time", ["--breakdown", "--batch", "2", "--size", "32", "--repeats", "1", "--warmup", "0"],
             capsys)
    assert r["mode"] == "breakdown"
    assert r["maskformer_loss_sim_s"] == 0 and r["simformer_loss_sim_s"] > 0  # only SimFormer has SimNet
    top = ("inputs_targets", "backbone", "pixel_decoder", "transformer_decoder", "backward", "optimizer")
    inner = ("matching", "loss_ce", "loss_mask_dice", "loss_complementary", "loss_sim", "loss_distill",
             "criterion_other")
    for n in ("maskformer", "simformer"):
        assert r[f"{n}_backbone_s"] > 0 and r[f"{n}_matching_s"] > 0
        # the step total is the sum of the parts (criterion = its inner parts + the rest)
        assert _close(r[f"{n}_s"], sum(r[f"{n}_{p}_s"] for p in top + inner), rel=0.01)


def test_cmt_step_time(capsys):
    r = _run("cmt_step_time", ["--batch", "2", "--size", "32", "--variants", "cmt_off"], capsys)
    assert r["maskformer_s"] > 0 and r["cmt_s"] > 0 and r["cmt_off_s"] > 0
    assert _close(r["ratio"], r["cmt_s"] / r["maskformer_s"])  # one round: median ratio = ratio
    assert _close(r["cmt_off_ratio"], r["cmt_off_s"] / r["maskformer_s"])
    assert r["cmt_mib"] >= 0 and (r["batch"], r["size"]) == (2, 32)


def test_dispatch_counter_counts_each_operator_once():
    counter = _load("dispatch_count").op_counter()
    x = torch.ones(3, requires_grad=True)
    with counter:
        y = (x * 2 + 1).sum()  # mul, add, sum
    assert dict(counter.counts) == {"aten.mul": 1, "aten.add": 1, "aten.sum": 1}


def test_dispatch_count(capsys):
    r = _run("dispatch_count", ["--batch", "2", "--size", "32", "--variants", "cmt_off"], capsys)
    assert r["maskformer_ops"] > 0 and r["batch"] == 2
    assert _close(r["ratio"], r["cmt_ops"] / r["maskformer_ops"])
    # the CMT decoder with every term off is MaskFormer's decoder on another map: its step
    # dispatches the same operators give or take the pooling of that map
    assert abs(r["cmt_off_ops"] - r["maskformer_ops"]) < 0.01 * r["maskformer_ops"]
    assert r["cmt_ops"] > 1.05 * r["maskformer_ops"]  # the clustering terms add operators


def test_pair_statistics(capsys):
    r = _run("pair_statistics", ["--images", "600", "--loop-anchors", "10"], capsys)
    assert r["agree"] == 1
    assert _close(r["loop_s_extrapolated"], r["loop_subset_s"] * 600 / 10)
    assert _close(r["speedup"], r["loop_s_extrapolated"] / r["vectorised_s"])


def test_pair_statistics_loop_matches_hand_case():
    ps = _load("pair_statistics")
    # classes 0,1,2 novel; 3,4 base. image 0: novel {0,1}, base {3}
    presence = np.array([[1, 1, 0, 1, 0],   # 0
                         [1, 0, 0, 0, 0],   # 1 shares exactly {0}
                         [1, 1, 0, 0, 0],   # 2 shares {0,1}
                         [0, 0, 1, 1, 0],   # 3 shares base 3 only
                         [0, 0, 0, 0, 1]],  # 4 shares nothing with 0
                        dtype=bool)
    novel = np.array([1, 1, 1, 0, 0], dtype=bool)
    level, cand, deconf = ps.loop_statistics(presence, novel, [0, 4])
    assert level.tolist() == [0, 3]                 # image 4 has nobody to pair with
    assert cand.tolist() == [1, 1]                  # one de-confounded reference (image 1)
    assert deconf.tolist() == [[1, 0, 0], [0, 0, 0]]


def test_eval_throughput(capsys):
    r = _run("eval_throughput", ["--images", "10", "--height", "64", "--width", "80"], capsys)
    assert r["correct"] == 1
    assert _close(r["mpix_per_s"], 10 * 64 * 80 / 1e6 / r["val_set_s"])


def test_loader_throughput(capsys):
    r = _run("loader_throughput", ["--workers", "0", "--batches", "1", "--toy-step-s", "2.0",
                                   "--ade-images", "2", "--toy-images", "4"], capsys)
    assert _close(r["toy_step_img_s"], 4 / 2.0)  # quick batch 4
    assert _close(r["toy_ratio"], r["toy_w0_img_s"] / r["toy_step_img_s"])
    assert _close(r["ade_step_img_s"], 8 / 0.25)  # --target-step-s default, per image
    assert r["ade_w0_img_s"] > 0


def test_point_loss(capsys):
    r = _run("point_loss", ["--sizes", "32", "--points", "256", "--warmup", "0"], capsys)
    for v in ("full", "point"):
        assert r[f"{v}32_s"] > 0 and r[f"{v}32_mib"] >= 0
    assert _close(r["time_ratio32"], r["full32_s"] / r["point32_s"])


def test_gpu_script(capsys):
    r = _run("gpu", ["--crops", "32", "--queries", "4", "--points", "8", "--size", "32"], capsys, device="auto")
    if torch.cuda.is_available():
        assert r["simformer_img_s"] > 0
    else:
        assert r == {"gpu": "none"}


def test_ddp_check():
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "ddp_check.py"), "--quick", "--threads", "2",
                           "--steps", "2", "--device", "cpu"], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = C.parse_result(proc.stdout)
    assert r["ranks"] == 2 and r["backend"] == "gloo"
    assert r["identical"] == 1 and r["max_param_diff"] == 0 and r["param_change"] > 0 and r["ranks_differ"] == 1


def test_cpu_isa_probe_references_and_committed_rows():
    """Every probe case's committed reference loss resolves on a clean clone, and the committed
    probe rows agree with those references and with their own ``equal`` column."""
    import csv

    probe = _load("cpu_isa_probe")
    refs = {(case, machine): probe.committed_loss(curves, run)
            for case, (_, machines) in probe.CASES.items() for machine, curves, run in machines}
    with open(os.path.join(REPO, "docs", "results", "cpu_isa", "probe.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and {r["setting"] for r in rows} <= set(probe.SETTINGS)
    for r in rows:
        assert float(r["machine_loss"]) == refs[(r["case"], r["machine"])]
        assert (r["equal"] == "True") == (float(r["total_loss"]) == float(r["machine_loss"]))
        if r["setting"] == "avx2" and "AVX2" in r["machine"]:
            assert r["equal"] == "True" and r["cpu_capability"] == "AVX2"  # the pin repeats the AVX2 machine
