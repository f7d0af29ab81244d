"""Run-folder faults: the lock between processes (refusal message, release on kill -9, a sweep's
inherited lock), stale temporaries, full disks, stop signals and the fatal-error log line."""
import errno
import logging
import multiprocessing as mp
import os
import signal
import time

import pytest

from simformer.utils import io as sio
from simformer.utils import run_dir as R


def _hold(folder, ready):
    R.lock_run_dir(folder)
    ready.set()
    time.sleep(300)  # killed by the test (an Event would hang notify() once its waiter is killed)


def _try(folder, out):
    try:
        R.lock_run_dir(folder, tries=1).release()
        out.put("ok")
    except R.RunDirBusyError as e:
        out.put(str(e))


@pytest.fixture
def ctx():
    return mp.get_context("fork")  # the children only use fcntl (spawn could not import this test module)


def _start_holder(ctx, folder):
    ready = ctx.Event()
    holder = ctx.Process(target=_hold, args=(folder, ready))
    holder.start()
    assert ready.wait(120), "holder did not take the lock"
    return holder


def _kill9(holder):
    if holder.is_alive():
        os.kill(holder.pid, signal.SIGKILL)
    holder.join(30)


def _second(ctx, folder):
    out = ctx.Queue()
    p = ctx.Process(target=_try, args=(folder, out))
    p.start()
    p.join(120)
    return out.get(timeout=10)


def test_second_process_refused_then_lock_released_on_kill9(tmp_path, ctx):
    folder = str(tmp_path / "run")
    holder = _start_holder(ctx, folder)
    try:
        msg = _second(ctx, folder)
        assert msg == (f"another simformer process (pid {holder.pid}) is writing to {folder}; "
                       "wait for it or choose another --output")
        assert R.lock_holder(folder)[0] == holder.pid and R.is_locked(folder)
        with pytest.raises(R.RunDirBusyError):  # this process too
            R.lock_run_dir(folder, tries=2, retry_s=0.01)
    finally:
        _kill9(holder)
    assert holder.exitcode == -signal.SIGKILL
    assert not R.is_locked(folder)  # the kernel dropped the dead holder's lock
    assert _second(ctx, folder) == "ok"
    with R.lock_run_dir(folder) as lock:  # and the file now names us
        assert lock.held and R.lock_holder(folder)[0] == os.getpid()
    assert not lock.held


def test_lock_inherited_from_a_sweep(tmp_path, monkeypatch):
    """A sweep holds RUN_DIR/.lock and passes the descriptor to its child: the child accepts it;
    a descriptor of another file is not mistaken for it."""
    folder = str(tmp_path / "run")
    parent = R.lock_run_dir(folder)
    try:
        monkeypatch.setenv(R.LOCK_FD_ENV, str(parent.fd))
        child = R.lock_run_dir(folder)
        assert child.inherited and child.fd == parent.fd and not R.is_locked(folder)
        child.release()  # forgets it, the parent still holds it
        monkeypatch.delenv(R.LOCK_FD_ENV)
        assert R.is_locked(folder)  # a new descriptor conflicts even in this process: flock is per open file
        other = str(tmp_path / "other")
        monkeypatch.setenv(R.LOCK_FD_ENV, str(parent.fd))
        assert not R.lock_run_dir(other).inherited
    finally:
        parent.release()


def _touch(path, age_s=0.0):
    with open(path, "w") as f:
        f.write("x")
    t = time.time() - age_s
    os.utime(path, (t, t))


def test_remove_stale_temps_only_ours_and_only_unlocked(tmp_path, ctx):
    folder = tmp_path / "run"
    (folder / "inference").mkdir(parents=True)
    ours = [folder / ".tmp-abc_12xy.pth", folder / ".tmp-k3j4h5g6", folder / "inference" / ".tmp-zzzzzzzz.json"]
    keep = [folder / "model_final.pth", folder / ".tmp-short.pth", folder / "tmp-abc_12xy.pth",
            folder / ".tmp-abc_12xy.pth.bak.old", folder / ".tmp-ABCDEFGH.json"]
    for p in ours + keep:
        _touch(p, age_s=120)
    fresh = folder / ".tmp-fresh123.pth"
    _touch(fresh)
    holder = _start_holder(ctx, str(folder))
    try:
        assert R.remove_stale_temps(str(folder)) == []  # a live writer: nothing is stale
        assert all(p.exists() for p in ours)
    finally:
        _kill9(holder)
    removed = R.remove_stale_temps(str(folder))
    assert sorted(removed) == sorted(str(p) for p in ours)
    assert not any(p.exists() for p in ours)
    assert all(p.exists() for p in keep) and fresh.exists()  # younger than min_age_s
    with R.lock_run_dir(str(folder)) as lock:  # our own lock: clean while holding it
        assert R.remove_stale_temps(str(folder), lock=lock, min_age_s=0) == [str(fresh)]


def test_atomic_write_temp_names_match_the_pattern(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (seen.append(os.path.basename(a)), real_replace(a, b)))
    sio.atomic_write_json(str(tmp_path / "m.json"), {"a": 1})
    sio.atomic_write_text(str(tmp_path / "noext"), "x")
    assert len(seen) == 2 and all(R.TEMP_PATTERN.match(n) for n in seen), seen


def _free_mib(path):
    import shutil

    return shutil.disk_usage(os.path.dirname(path)).free / 2**20


def test_disk_full_enospc_names_file_and_free_space(tmp_path):
    target = str(tmp_path / "metrics.json")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as info:
        with sio.atomic_path(target) as tmp:
            with open(tmp, "w") as f:
                f.write("partial")
            full()
    msg = str(info.value)
    assert info.value.errno == errno.ENOSPC
    assert msg.startswith(f"No space left on device writing {target} (")
    free = float(msg.split("(")[1].split(" MiB free in ")[0])
    assert abs(free - _free_mib(target)) < 64 and msg.endswith(f" MiB free in {tmp_path})")
    assert os.listdir(tmp_path) == []  # the temporary is gone, no half file


def test_disk_full_from_torch_save(tmp_path, monkeypatch):
    import torch

    from simformer.engine.checkpoint import Checkpointer

    def save(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4481536 vs 4481424")

    monkeypatch.setattr(torch, "save", save)
    path = str(tmp_path / "model.pth")
    with pytest.raises(OSError, match=r"^No space left on device writing .*model\.pth \(\d+ MiB free in "):
        with sio.atomic_path(path, ".pth") as tmp:
            torch.save({"w": torch.zeros(2)}, tmp)
    # other errors pass through unchanged
    with pytest.raises(RuntimeError, match="something else"):
        with sio.atomic_path(path) as tmp:
            raise RuntimeError("something else")
    with pytest.raises(PermissionError):
        with sio.atomic_path(path) as tmp:
            raise PermissionError(errno.EACCES, "denied")
    assert not os.path.exists(path) and os.listdir(tmp_path) == []
    assert Checkpointer  # the checkpointer writes through atomic_path (same conversion)


def _wait_on_lock(lock, reset):
    if reset:
        R.reset_stop_signals_in_worker()
    lock.acquire()  # held by the parent: blocks, as a pool worker on its task queue's lock


@pytest.mark.parametrize("reset", [False, True])
def test_forked_worker_under_stop_on_signals_dies_on_sigterm_only_after_reset(reset):
    """The hang this guards against: a worker forked inside stop_on_signals inherits a SIGTERM
    handler that only sets a flag, so terminate() does not stop it and join() waits forever."""
    ctx = mp.get_context("fork")
    lock = ctx.Lock()
    lock.acquire()
    with R.stop_on_signals():
        p = ctx.Process(target=_wait_on_lock, args=(lock, reset))
        p.start()
        time.sleep(0.5)  # let the child reach the lock
        p.terminate()
        p.join(10)
    try:
        if reset:
            assert p.exitcode == -signal.SIGTERM
        else:  # the inherited handler swallowed SIGTERM: the child is still waiting
            assert p.exitcode is None
    finally:
        if p.exitcode is None:
            p.kill()
            p.join(10)


def test_reset_stop_signals_in_worker_sets_each_handler():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)}
    try:
        with R.stop_on_signals():
            R.reset_stop_signals_in_worker()
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGUSR2) is signal.SIG_IGN
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def test_stop_on_signals_sets_flag_and_restores(tmp_path):
    def mine(signum, frame):
        pass

    old_usr2 = signal.signal(signal.SIGUSR2, mine)
    old_int = signal.getsignal(signal.SIGINT)
    old_term = signal.getsignal(signal.SIGTERM)
    try:
        with R.stop_on_signals() as flag:
            assert not flag
            os.kill(os.getpid(), signal.SIGUSR2)
            for _ in range(100):  # the handler runs at the next bytecode boundary
                if flag:
                    break
                time.sleep(0.01)
            assert flag and flag.signum == signal.SIGUSR2 and flag.name == "SIGUSR2"
            os.kill(os.getpid(), signal.SIGTERM)  # the first signal is kept
            time.sleep(0.05)
            assert flag.signum == signal.SIGUSR2
        assert signal.getsignal(signal.SIGUSR2) is mine
        assert signal.getsignal(signal.SIGINT) is old_int and signal.getsignal(signal.SIGTERM) is old_term
        with R.stop_on_signals() as flag:  # Ctrl-C: first sets the flag, a second one interrupts
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            assert flag.signum == signal.SIGINT
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
        assert signal.getsignal(signal.SIGINT) is old_int
    finally:
        signal.signal(signal.SIGUSR2, old_usr2)


def test_log_fatal_reaches_log_file(tmp_path):
    log = logging.getLogger("simformer")
    old_level, old_handlers = log.level, list(log.handlers)
    fh = logging.FileHandler(tmp_path / "log.txt")
    fh.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log.addHandler(fh)
    try:
        log.setLevel(logging.INFO)
        try:
            raise ValueError("Label /d/x.png has values outside 0..255\nsecond line")
        except ValueError as e:
            line = R.log_fatal(e, context="train")
        assert line == "train: ValueError: Label /d/x.png has values outside 0..255"
        log.setLevel(logging.DEBUG)
        try:
            raise KeyError("DATASETS.TRAIN")
        except KeyError as e:
            assert R.log_fatal(e) == "KeyError: DATASETS.TRAIN"
        fh.flush()
        text = (tmp_path / "log.txt").read_text()
        assert "ERROR train: ValueError: Label /d/x.png has values outside 0..255\n" in text
        assert "second line" not in text.split("ERROR KeyError")[0]  # INFO level: no traceback
        assert "ERROR KeyError: DATASETS.TRAIN\nDEBUG traceback of the error above\nTraceback" in text
    finally:
        log.removeHandler(fh)
        fh.close()
        log.setLevel(old_level)
        assert log.handlers == old_handlers
