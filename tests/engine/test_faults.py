"""The training loop under faults: stop signals and exact resume, the final evaluation in
TensorBoard, one writer per folder, config changes on resume, restarts in a used folder, stale
temporaries, test datasets checked up front, NaN / disk-full / unpickling errors named and logged."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from simformer.config import dump_cfg, load_cfg
from simformer.engine import run_folder
from simformer.engine.hooks import HookBase
from simformer.engine.trainer import Trainer, TrainingStopped, check_test_datasets
from simformer.utils.run_dir import RunDirBusyError

from tiny_config import TINY

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "toyscenes", "simformer.yaml")
NO_TEST = ["DATASETS.TEST", "[]"]


def cfg_for(out, *extra):
    return load_cfg(CONFIG, TINY + ["OUTPUT_DIR", str(out)] + list(extra))


class SignalAt(HookBase):
    """Sends ``signum`` to this process once ``trainer.iter`` (finished iterations) reaches ``at``."""

    def __init__(self, at, signum):
        self.at, self.signum = at, signum

    def after_step(self):
        if self.trainer.iter == self.at:
            os.kill(os.getpid(), self.signum)


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def assert_bit_identical(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------------------------------------
# signals
# ---------------------------------------------------------------------------------------------
def test_signal_mid_run_then_resume_is_bit_identical(toy_env, tmp_path):
    torch.set_num_threads(1)
    common = ["SOLVER.MAX_ITER", "6", *NO_TEST]
    Trainer(cfg_for(tmp_path / "a", *common)).train()

    before = signal.getsignal(signal.SIGUSR2)
    first = Trainer(cfg_for(tmp_path / "b", *common))
    first.register_hooks([SignalAt(3, signal.SIGUSR2)])
    with pytest.raises(TrainingStopped) as e:
        first.train()
    assert e.value.iteration == 3 and e.value.exit_code == 128 + signal.SIGUSR2
    assert e.value.checkpoint == str(tmp_path / "b" / "model_0000003.pth")
    assert signal.getsignal(signal.SIGUSR2) is before  # the handlers are given back
    assert not os.path.exists(tmp_path / "b" / "model_final.pth")
    assert open(tmp_path / "b" / "last_checkpoint").read().strip() == "model_0000003.pth"
    log = open(tmp_path / "b" / "log.txt").read()
    assert "stopped by SIGUSR2 after iteration 3 of 6" in log and "--resume" in log

    resumed = Trainer(cfg_for(tmp_path / "b", *common), resume=True)
    assert resumed.start_iter == 3
    resumed.train()
    assert_bit_identical(weights(tmp_path / "a" / "model_final.pth"), weights(tmp_path / "b" / "model_final.pth"))
    its = [json.loads(line)["iteration"] for line in open(tmp_path / "b" / "metrics.jsonl")]
    assert its == sorted(set(its))


def test_final_evaluation_reaches_tensorboard_without_eval_period(toy_env, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    torch.set_num_threads(1)
    Trainer(cfg_for(tmp_path / "r", "SOLVER.MAX_ITER", "2", "TEST.EVAL_PERIOD", "0")).train()
    final = json.load(open(tmp_path / "r" / "metrics.json"))
    acc = EventAccumulator(str(tmp_path / "r"))
    acc.Reload()
    assert "eval/miou" in acc.Tags()["scalars"]
    (event,) = acc.Scalars("eval/miou")
    assert event.step == 2 and event.value == pytest.approx(final["miou"], rel=1e-6)
    last = [json.loads(line) for line in open(tmp_path / "r" / "metrics.jsonl")][-1]
    assert last["iteration"] == 2 and last["eval"]["miou"] == pytest.approx(final["miou"])


# ---------------------------------------------------------------------------------------------
# the run folder
# ---------------------------------------------------------------------------------------------
HOLD_LOCK = """
import sys, time
from simformer.utils.run_dir import lock_run_dir
lock = lock_run_dir(sys.argv[1])
print("locked", flush=True)
time.sleep(60)
"""


def test_second_writer_is_refused_and_deletes_nothing(toy_env, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"iteration": 20}\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd()] + sys.path))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirBusyError) as e:
            Trainer(cfg_for(out, *NO_TEST))
        assert str(e.value) == (f"another simformer process (pid {holder.pid}) is writing to {out}; "
                                "wait for it or choose another --output")
        assert (out / "metrics.jsonl").read_text() == '{"iteration": 20}\n'
        assert sorted(os.listdir(out)) == [".lock", "metrics.jsonl"]
    finally:
        holder.kill()
        holder.wait()


def _fake_run(folder, cfg, checkpoint=True):
    os.makedirs(folder, exist_ok=True)
    dump_cfg(cfg, os.path.join(folder, "config.yaml"))
    for name in ("log.txt", "metrics.jsonl", "events.out.tfevents.1.host.1.0", "stdout.log"):
        open(os.path.join(folder, name), "w").write(name)
    if checkpoint:
        open(os.path.join(folder, "model_0000003.pth"), "w").write("w")
        open(os.path.join(folder, "last_checkpoint"), "w").write("model_0000003.pth")


def test_resume_with_another_config_is_refused_unless_forced(toy_env, tmp_path):
    out = tmp_path / "run"
    _fake_run(out, cfg_for(out, *NO_TEST))
    saved = (out / "config.yaml").read_text()
    lr = f"SOLVER.BASE_LR: {cfg_for(out).SOLVER.BASE_LR!r} -> 0.5"
    changed = cfg_for(out, *NO_TEST, "SOLVER.BASE_LR", "0.5")
    with pytest.raises(run_folder.ConfigMismatchError) as e:
        Trainer(changed, resume=True)
    assert lr in str(e.value) and "--force-config" in str(e.value)
    assert (out / "config.yaml").read_text() == saved
    assert "cannot start training: ConfigMismatchError: --resume: the config differs" in (out / "log.txt").read_text()
    lock = run_folder.acquire(str(out))  # the failed trainer gave the lock back
    try:
        resume, message = run_folder.prepare(str(out), changed, resume=True, force_config=True, lock=lock)
    finally:
        run_folder.release(str(out))
    assert resume and "--force-config" in message and lr in message
    # the operational keys do not count as a change
    assert run_folder.config_differences(cfg_for(tmp_path / "elsewhere", *NO_TEST, "DIST_TIMEOUT_S", "5"),
                                         str(out / "config.yaml")) == []


def test_restart_resumes_the_same_config_and_moves_another_aside(toy_env, tmp_path):
    out = str(tmp_path / "run")
    cfg = cfg_for(out, *NO_TEST)
    _fake_run(out, cfg)
    with run_folder.acquire(out) as lock:
        assert run_folder.prepare(out, cfg, resume=False, force_config=False, lock=lock) == (
            True, f"{out} holds a run of the same config (checkpoint model_0000003.pth): resuming it. To start over, "
                  "delete the folder or choose another --output")
        resume, message = run_folder.prepare(out, cfg_for(out, *NO_TEST, "SEED", "7"), resume=False,
                                             force_config=False, lock=lock)
    run_folder.release(out)
    assert not resume
    (old,) = glob.glob(out + ".old-*")
    assert message == f"moved the earlier run in {out} (another config: SEED: 1 -> 7) to {old}; starting from iteration 0"
    assert sorted(os.listdir(old)) == ["config.yaml", "events.out.tfevents.1.host.1.0", "last_checkpoint", "log.txt",
                                       "metrics.jsonl", "model_0000003.pth"]
    assert sorted(os.listdir(out)) == [".lock", "stdout.log"]  # not ours (a sweep's log) stays

    # same config but nothing to resume from (stopped before the first checkpoint): moved aside too
    _fake_run(out, cfg, checkpoint=False)
    with run_folder.acquire(out) as lock:
        resume, message = run_folder.prepare(out, cfg, resume=False, force_config=False, lock=lock)
    run_folder.release(out)
    assert not resume and "(no checkpoint to resume from)" in message
    assert len(glob.glob(out + ".old-*")) == 2


def test_stale_temporaries_of_ours_are_removed_on_start(toy_env, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale, fresh, other = out / ".tmp-ab12cd34.pth", out / ".tmp-zz99yy88.pth", out / ".tmp-not-ours.txt"
    for p in (stale, fresh, other):
        p.write_text("partial")
    hour_ago = time.time() - 3600
    os.utime(stale, (hour_ago, hour_ago))
    os.utime(other, (hour_ago, hour_ago))
    with run_folder.acquire(str(out)) as lock:
        run_folder.prepare(str(out), cfg_for(out, *NO_TEST), resume=False, force_config=False, lock=lock)
    run_folder.release(str(out))
    assert not stale.exists() and fresh.exists() and other.exists()


# ---------------------------------------------------------------------------------------------
# errors before iteration 0, errors named and logged
# ---------------------------------------------------------------------------------------------
def _folder_dataset(root, classes, images):
    (root / "images" / "val").mkdir(parents=True)
    (root / "annotations" / "val").mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    for i in range(images):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / "val" / f"{i}.jpg")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "annotations" / "val" / f"{i}.png")
    return f"{root}:val"


def test_test_datasets_are_checked_before_iteration_0(toy_env, tmp_path):
    three = _folder_dataset(tmp_path / "three", ["a", "b", "c"], 1)
    empty = _folder_dataset(tmp_path / "empty", [f"c{i}" for i in range(24)], 0)
    with pytest.raises(KeyError, match="Dataset 'nope' is not registered"):
        check_test_datasets(["nope"], 24)
    with pytest.raises(ValueError, match=f"DATASETS.TEST '{three}' has 3 classes but the model is trained on 24"):
        check_test_datasets([three], 24)
    with pytest.raises(FileNotFoundError, match="no images in"):
        check_test_datasets([empty], 24)
    check_test_datasets(["toyscenes_val"], 24)
    # in the trainer: before the model is built, nothing trained
    with pytest.raises(ValueError, match="has 3 classes"):
        Trainer(cfg_for(tmp_path / "run", "DATASETS.TEST", f"['{three}']"))
    assert not glob.glob(str(tmp_path / "run" / "*.pth")) and not (tmp_path / "run" / "metrics.jsonl").exists()
    assert "cannot start training: ValueError: DATASETS.TEST" in (tmp_path / "run" / "log.txt").read_text()


def test_nan_predictions_give_one_error_naming_iteration_and_terms(toy_env, tmp_path):
    torch.set_num_threads(1)
    trainer = Trainer(cfg_for(tmp_path / "nan", "SOLVER.MAX_ITER", "2", *NO_TEST))
    with torch.no_grad():  # NaN predictions: the matcher sees them first
        for p in trainer.model.predictor.parameters():
            p.fill_(float("nan"))
    with pytest.raises(FloatingPointError) as e:
        trainer.train()
    msg = str(e.value)
    assert msg.startswith("Loss is nan at iteration 0 (non-finite terms: {") and "'loss_ce': nan" in msg
    log = (tmp_path / "nan" / "log.txt").read_text()
    assert "training stopped at iteration 0: FloatingPointError: Loss is nan at iteration 0" in log


def test_disk_full_is_named_logged_and_exits_1(toy_env, tmp_path, monkeypatch, capsys):
    from simformer.cli import main
    from simformer.engine import checkpoint

    def full_disk(obj, path, *a, **k):
        with open(path, "wb") as f:
            f.write(b"x" * 10)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 470")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    out = tmp_path / "full"
    code = main(["train", "--config", CONFIG, "--output", str(out), *TINY, "SOLVER.MAX_ITER", "1", *NO_TEST])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"simformer train: error: No space left on device writing {out / 'model_final.pth'} (")
    assert "MiB free in" in err and "Traceback" not in err and len(err.splitlines()) == 1
    log = (out / "log.txt").read_text()
    assert f"training stopped at iteration 1: OSError: No space left on device writing {out / 'model_final.pth'}" in log
    assert not glob.glob(str(out / ".tmp-*"))


def test_unsafe_checkpoint_on_resume_reaches_log(toy_env, tmp_path):
    out = tmp_path / "run"
    _fake_run(out, cfg_for(out, *NO_TEST))

    class Payload:
        def __reduce__(self):
            return (os.makedirs, (str(tmp_path / "ran"),))

    torch.save({"model": {}, "iteration": 3, "x": Payload()}, out / "model_0000003.pth")
    with pytest.raises(ValueError, match="Refused to load checkpoint"):
        Trainer(cfg_for(out, *NO_TEST))  # no --resume: the same config resumes by itself
    assert not (tmp_path / "ran").exists()
    log = (out / "log.txt").read_text()
    assert f"{out} holds a run of the same config (checkpoint model_0000003.pth): resuming it" in log
    assert "cannot start training: UnsafeCheckpointError: Refused to load checkpoint" in log


class SignalProcessTreeAt(HookBase):
    """Before step ``at``: ``signum`` to every child process (data-loader workers), then to us, as
    SLURM or a terminal's Ctrl-C do. The step then needs more micro-batches than were prefetched, so
    a worker killed by the signal would fail it (workers ignore SIGINT / SIGUSR2; forked ones also
    inherit the trainer's handler)."""

    def __init__(self, at, signum):
        self.at, self.signum = at, signum

    def before_step(self):
        if self.trainer.iter != self.at:
            return
        children = []
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/children") as f:
                children += [int(p) for p in f.read().split()]
        assert children, "no data-loader worker"
        for pid in children:
            os.kill(pid, self.signum)
        os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum", [signal.SIGUSR2, signal.SIGINT])
def test_signal_reaching_the_loader_workers_still_stops_cleanly(toy_env, tmp_path, signum):
    torch.set_num_threads(1)
    trainer = Trainer(cfg_for(tmp_path / "w", "SOLVER.MAX_ITER", "6", "DATALOADER.NUM_WORKERS", "1", "SOLVER.IMS_PER_BATCH", "8",
                              "SOLVER.GRAD_ACCUM_STEPS", "2", *NO_TEST))
    trainer.register_hooks([SignalProcessTreeAt(1, signum)])
    with pytest.raises(TrainingStopped) as e:
        trainer.train()
    assert e.value.iteration == 2 and os.path.isfile(tmp_path / "w" / "model_0000002.pth")
