"""Two-rank data-parallel check: a few training steps with the real ``Trainer`` under DDP.

Launches 2 ranks with ``torch.multiprocessing`` (the RANK / WORLD_SIZE / MASTER_* variables torchrun
would set), gloo on CPU, NCCL when 2+ GPUs are present. Each rank builds ``Trainer(cfg)`` (its own
process-group set-up and ``DistributedDataParallel`` wrapping), the rank-sharded training loader
with image pairs, and runs ``Trainer.run_step`` a few times on a tiny ToyScenes config (generated
into a temporary folder). Then it checks that

* the parameters of the two ranks are bitwise identical (gradients were averaged),
* they moved away from the initial weights (the check is not vacuous),
* the ranks computed different losses (they saw different images).

    python benchmarks/ddp_check.py
    python benchmarks/ddp_check.py --quick

Last line: ``RESULT ranks=2 backend=gloo step_s=... identical=1 max_param_diff=0 ...``.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
from collections import OrderedDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

DEFAULT_CONFIG = "configs/toyscenes/simformer.yaml"


def parse_args(argv=None):
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--steps", type=int, default=None, help="training steps (default 6; the first is not timed)")
    p.add_argument("--batch", type=int, default=None, help="global SOLVER.IMS_PER_BATCH (default 8)")
    p.add_argument("--size", type=int, default=None, help="crop size (default 96)")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--opts", nargs="*", default=[], help="extra config overrides KEY VALUE ...")
    return p.parse_args(argv)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _flat_params(model):
    import torch

    return torch.cat([p.detach().reshape(-1).float().cpu() for p in model.parameters()])


def worker(rank: int, world: int, port: int, config: str, overrides, steps: int, threads: int, out: str) -> None:
    """One rank: Trainer set-up, ``steps`` x run_step, parameter comparison; rank 0 writes ``out``."""
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "SIMFORMER_PROGRESS": "0"})
    import torch
    import torch.distributed as dist

    from simformer.data.build import build_train_loader
    from simformer.engine.trainer import Trainer

    torch.set_num_threads(threads)
    cfg = C.load_bench_cfg(config, overrides)
    trainer = Trainer(cfg)
    model = trainer.model
    start = _flat_params(model)
    loader_iter = iter(build_train_loader(cfg, trainer.split))  # the loader Trainer.train() uses
    trainer.ddp_model.train()
    times, losses = [], []
    for it in range(steps):
        dt_box = {}

        def step():
            dt_box["logged"] = trainer.run_step(loader_iter, it)

        times.append(C.time_call(step, trainer.device))
        losses.append(dt_box["logged"]["total_loss"])
    # collectives run on the backend's device (NCCL needs CUDA tensors, gloo takes CPU ones)
    dev = trainer.device
    start = start.to(dev)
    params = _flat_params(model).to(dev)
    reference = params.clone()
    dist.broadcast(reference, 0)  # gloo/NCCL collectives need the tensor on the backend's device
    diff = torch.tensor([(params - reference).abs().max().item()], device=dev)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    # Buffers (BatchNorm running statistics, e.g. SimNet's) are not synchronised by DDP with
    # broadcast_buffers=False; reported for information, not part of the pass criterion.
    bufs = [b.detach().reshape(-1).float().cpu() for b in model.buffers() if b.is_floating_point()]
    bufs = (torch.cat(bufs) if bufs else torch.zeros(1)).to(dev)
    ref_bufs = bufs.clone()
    dist.broadcast(ref_bufs, 0)
    bdiff = torch.tensor([(bufs - ref_bufs).abs().max().item()], device=dev)
    dist.all_reduce(bdiff, op=dist.ReduceOp.MAX)
    all_losses = [None] * world
    dist.all_gather_object(all_losses, losses)
    all_times = [None] * world
    dist.all_gather_object(all_times, times)
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"backend": dist.get_backend(), "device": str(trainer.device), "world": world,
                       "max_param_diff": float(diff.item()), "max_buffer_diff": float(bdiff.item()), "param_change": float((params - start).abs().max()),
                       "num_params": int(params.numel()), "losses": all_losses, "times": all_times}, f)
    dist.barrier()
    dist.destroy_process_group()


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    import torch.multiprocessing as mp

    from simformer.data.datasets.toyscenes import generate_toyscenes

    use_cuda = args.device in ("auto", "cuda") and torch.cuda.device_count() >= args.ranks
    if args.device == "cuda" and not use_cuda:
        print(f"ddp_check: {torch.cuda.device_count()} GPU(s) for {args.ranks} ranks; NCCL needs one GPU per rank, "
              "so the check runs on the CPU with gloo")
    steps = C.pick(args.steps, 6, 3, args.quick)
    batch = C.pick(args.batch, 8, 4, args.quick)
    size = C.pick(args.size, 96, 64, args.quick)
    threads = max(1, args.threads // args.ranks) if not use_cuda else args.threads
    if batch % (2 * args.ranks):
        raise SystemExit(f"--batch must be a multiple of 2 x ranks = {2 * args.ranks} (image pairs per rank)")
    tmp = tempfile.mkdtemp(prefix="simformer_ddp_check_")
    try:
        generate_toyscenes(os.path.join(tmp, "toyscenes"), num_train=16, num_val=1, size=128, workers=0,
                           progress=False, log=lambda msg: None)
        os.environ["SIMFORMER_DATASETS"] = tmp  # inherited by the spawned ranks
        overrides = ["MODEL.DEVICE", "cuda" if use_cuda else "cpu", "OUTPUT_DIR", os.path.join(tmp, "out"),
                     "DATASETS.TRAIN", "['toyscenes_train']", "DATASETS.TEST", "[]",
                     "SOLVER.IMS_PER_BATCH", str(batch), "SOLVER.MAX_ITER", str(max(steps, 1)),
                     "SOLVER.CHECKPOINT_PERIOD", "0", "DATALOADER.NUM_WORKERS", "0",
                     "INPUT.MIN_SIZE_TRAIN", f"[{size}, {2 * size}]", "INPUT.CROP.SIZE", f"[{size}, {size}]",
                     "INPUT.SIZE_DIVISIBILITY", str(size), "SEED", str(args.seed + 1),
                     *(["MODEL.MASK_FORMER.DEC_LAYERS", "2"] if args.quick else []), *args.opts]
        out = os.path.join(tmp, "ddp_result.json")
        print(f"ddp_check: {args.ranks} ranks, {'nccl' if use_cuda else 'gloo'}, {args.config}, global batch {batch}, "
              f"{size}px, {steps} steps, {threads} thread(s) per rank")
        mp.spawn(worker, args=(args.ranks, _free_port(), args.config, overrides, steps, threads, out),
                 nprocs=args.ranks, join=True)
        with open(out) as f:
            res = json.load(f)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    timed = res["times"][0][1:] or res["times"][0]
    identical = res["max_param_diff"] == 0.0
    moved = res["param_change"] > 0.0
    differ = any(a != b for a, b in zip(res["losses"][0], res["losses"][1]))
    print(f"backend {res['backend']} on {res['device']}; step time rank 0 (first step excluded): {C.describe(timed)}")
    print(f"losses per rank: {[[round(x, 4) for x in l] for l in res['losses']]}")
    print(f"{res['num_params']} parameters: max |rank_i - rank_0| = {res['max_param_diff']:.3g} "
          f"({'identical' if identical else 'DIFFERENT'}); max change from init {res['param_change']:.3g}; "
          f"ranks saw different data: {differ}")
    print(f"floating-point buffers (BatchNorm running statistics): max |rank_i - rank_0| = "
          f"{res['max_buffer_diff']:.3g} (DDP here uses broadcast_buffers=False, so rank-local statistics may differ)")
    C.print_result(OrderedDict(ranks=res["world"], backend=res["backend"], step_s=C.median(timed),
                               identical=identical, max_param_diff=res["max_param_diff"],
                               param_change=res["param_change"], ranks_differ=differ,
                               max_buffer_diff=res["max_buffer_diff"]))
    return 0 if identical and moved and differ else 1


if __name__ == "__main__":
    C.early_threads()
    sys.exit(main())
