"""engine/hooks.py: each periodic action of the training loop as a hook, driven by a stand-in trainer."""
import json
import math
from types import SimpleNamespace

import pytest

from simformer.engine.hooks import EvalHook, HookBase, MetricsWriter, NanGuard, PeriodicCheckpointer


def fake_trainer(tmp_path, max_iter=6, start_iter=0, test=("toyscenes_val",)):
    t = SimpleNamespace(rank=0, output_dir=str(tmp_path), start_iter=start_iter, iter=start_iter, storage={},
                        step_times=[], saved=[], evaluated=[],
                        cfg=SimpleNamespace(DATASETS=SimpleNamespace(TEST=list(test))),
                        optimizer=SimpleNamespace(param_groups=[{"lr": 0.5}]),
                        checkpointer=SimpleNamespace(last_checkpoint=lambda: "model_0000003.pth"))
    t.save = lambda name, it: t.saved.append((name, it))

    def evaluate(out_dir=None, verbose=True):
        t.evaluated.append(t.iter)
        return {"miou": 10.0 * t.iter, "per_class_iou": {}, "convention": "current"}

    t.evaluate = evaluate
    return t


def drive(trainer, hooks, max_iter, losses=lambda it: {"loss_ce": 1.0 / (it + 1)}):
    for h in hooks:
        h.trainer = trainer
    for h in hooks:
        h.before_train()
    for it in range(trainer.start_iter, max_iter):
        trainer.iter = it
        for h in hooks:
            h.before_step()
        logged = losses(it)
        for h in hooks:
            h.after_forward(it, logged)
        trainer.storage["losses"] = dict(logged, total_loss=sum(logged.values()))
        trainer.step_times.append(0.25)
        trainer.iter = it + 1
        for h in hooks:
            h.after_step()
    for h in hooks:
        h.after_train()


def test_checkpoint_and_eval_periods_skip_the_last_iteration(tmp_path):
    t = fake_trainer(tmp_path)
    drive(t, [PeriodicCheckpointer(2, 6), EvalHook(3, 6), MetricsWriter(4, 6)], 6)
    assert t.saved == [("model_0000002", 2), ("model_0000004", 4)]  # 6 = the final save of the loop
    assert t.evaluated == [3]
    lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [(d["iteration"], "eval" in d) for d in lines] == [(3, True), (4, False), (6, False)]
    assert lines[0]["eval"] == {"miou": 30.0}
    assert lines[1]["loss_ce"] == pytest.approx(1 / 4) and lines[1]["lr"] == 0.5
    assert lines[1]["total_loss"] == pytest.approx(1 / 4) and lines[1]["time_per_iter"] == 0.25
    no_test = fake_trainer(tmp_path / "b", test=())
    drive(no_test, [EvalHook(3, 6)], 6)
    assert no_test.evaluated == []


def test_metrics_writer_drops_lines_past_a_resume(tmp_path):
    t = fake_trainer(tmp_path)
    drive(t, [MetricsWriter(1, 5)], 5)
    resumed = fake_trainer(tmp_path, start_iter=3)
    drive(resumed, [MetricsWriter(1, 5)], 5)
    its = [json.loads(line)["iteration"] for line in open(tmp_path / "metrics.jsonl")]
    assert its == [1, 2, 3, 4, 5]
    # resumed from model_final (no step left): the trainer's final evaluation is written again, once
    for miou in (1.0, 2.0):
        writer = MetricsWriter(1, 5)
        writer.trainer = fake_trainer(tmp_path, start_iter=5)
        writer.before_train()
        writer.write_eval(5, {"miou": miou}, tensorboard=True)
        writer.after_train()
    lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [(d["iteration"], d.get("eval")) for d in lines][-2:] == [(5, None), (5, {"miou": 2.0})]
    assert len(lines) == 6


def test_nan_guard_names_terms_and_checkpoint(tmp_path):
    t = fake_trainer(tmp_path)
    with pytest.raises(FloatingPointError) as e:
        drive(t, [NanGuard()], 6, losses=lambda it: {"loss_ce": 1.0, "loss_dice": math.inf if it == 2 else 0.0})
    msg = str(e.value)
    assert "iteration 2" in msg and "loss_dice" in msg and "model_0000003.pth" in msg and "--resume" in msg


def test_a_new_periodic_action_is_a_hook(tmp_path):
    class Every3(HookBase):
        def __init__(self):
            self.calls = []

        def after_step(self):
            if self.trainer.iter % 3 == 0:
                self.calls.append(self.trainer.iter)

    h = Every3()
    drive(fake_trainer(tmp_path), [h], 7)
    assert h.calls == [3, 6]
