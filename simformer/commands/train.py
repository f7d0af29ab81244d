HELP = "train a model from a config (single process, or under torchrun for multi-GPU/multi-node)"
DESCRIPTION = """Train SimFormer (or any of its ablations / MaskFormer) from a YAML config.

  simformer train --config configs/toyscenes/simformer.yaml --output runs/simformer SOLVER.MAX_ITER 500
  torchrun --nproc_per_node 4 -m simformer train --config configs/ade20k/simformer_R50.yaml
  simformer train --config configs/ade20k/simformer_R50.yaml --num-gpus 4   # the same, without torchrun
  simformer train --config-file maskformer_R50_bs16_160k.yaml              # a MaskFormer config as it is
  simformer train --config ... --output runs/x --resume     # continue from runs/x/last_checkpoint

A folder is written by one process at a time (a second `train` on the same --output refuses).
Without --resume, a folder holding a checkpoint of the same config is resumed, and any other
earlier run there is moved aside to OUTPUT.old-YYYYmmdd-HHMMSS (the log says which). SIGUSR2,
SIGTERM or Ctrl-C save a checkpoint after the current iteration and exit with 128 + the signal
number; run the command again to continue (a second Ctrl-C stops at once, without saving).

Trailing KEY VALUE pairs override config keys (every key is documented in
simformer/config/defaults.py; detectron2 / MaskFormer keys: docs/detectron2.md, or check a
file with `simformer config --config FILE`)."""


def add_arguments(parser):
    from . import add_config_argument, add_num_gpus_argument, add_output_argument

    add_config_argument(parser)
    add_output_argument(parser, "output", help="output folder (overrides OUTPUT_DIR)")
    add_num_gpus_argument(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUTPUT_DIR/last_checkpoint (model, optimiser, scheduler, RNG, data order)")
    parser.add_argument("--force-config", action="store_true",
                        help="with --resume: accept a config that differs from OUTPUT_DIR/config.yaml and overwrite it "
                             "(refused otherwise, naming the keys)")
    parser.add_argument("--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS instead of training")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides")


def setup_cfg(args):
    from simformer.config import load_cfg

    opts = list(args.opts)
    if getattr(args, "output", None):
        opts += ["OUTPUT_DIR", args.output]
    return load_cfg(args.config, opts)


def run(args) -> int:
    from simformer.engine.trainer import Trainer

    cfg = setup_cfg(args)
    trainer = Trainer(cfg, resume=args.resume, force_config=args.force_config, manage_output=not args.eval_only)
    if args.eval_only:
        try:
            trainer.write_run_files()
            trainer.evaluate(out_dir=cfg.OUTPUT_DIR)
        finally:
            trainer.close()
        return 0
    trainer.train()
    return 0
