HELP = "the quick start: generate ToyScenes if needed, train SimFormer on CPU, evaluate, draw figures"
DESCRIPTION = """Runs the whole weak-shot pipeline on the embedded ToyScenes data:

  1. generates ToyScenes under the datasets root if it is not there (about 10 s),
  2. trains SimFormer (EfficientNet-Lite0 with ImageNet weights) with the default split
     splits/toyscenes/split1.json (18 base classes with masks, 6 novel with image-level labels),
  3. evaluates on toyscenes_val and prints the base / novel / all mIoU and HM table,
  4. writes metrics.json, per_class_iou.csv, the run files and figures to --output.

  simformer demo                       # 700 iterations, under 10 minutes on 2 quiet CPU cores (0.73 s per step)
  simformer demo --baseline            # also trains the proposal-only (Pr) ablation (about twice as long)
  simformer demo SOLVER.MAX_ITER 100   # a quicker, weaker run

Where the CPU has AVX2 the demo pins AVX2 kernels (--cpu-isa avx2; --cpu-isa native or
SIMFORMER_CPU_ISA choose otherwise): the README's figure was measured with them, so it repeats
on newer CPUs too.

Run it again after an interruption (Ctrl-C saves a checkpoint first) and it resumes where it
stopped; with other settings the earlier run in --output is moved aside to OUTPUT.old-STAMP
(the log says which)."""


def add_arguments(parser):
    from . import add_config_argument, add_output_argument

    add_output_argument(parser, "output", default="output/demo", help="output folder (default: output/demo)")
    add_config_argument(parser, required=False, help="config (default: configs/toyscenes/demo.yaml of this checkout)")
    parser.add_argument("--baseline", action="store_true",
                        help="also train the proposal-only ablation at the same budget and compare")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides")
    parser.set_defaults(default_cpu_isa=demo_cpu_isa)  # applied by cli.main when --cpu-isa is not given


def demo_cpu_isa():
    """The demo's default ``--cpu-isa``: AVX2 kernels where the CPU has them and nothing else was
    asked for (``$SIMFORMER_CPU_ISA``), so that the README's figure, measured with AVX2 kernels,
    repeats on newer CPUs too (README, "What a run depends on")."""
    import os

    from simformer.utils.cpu_isa import ISA_ENV, cpu_has

    return "avx2" if ISA_ENV not in os.environ and cpu_has("avx2") else None


def default_config(name: str = "demo.yaml") -> str:
    import os

    import simformer

    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(simformer.__file__))), "configs", "toyscenes", name)


def _summary_line(name: str, res: dict) -> str:
    def f(v):
        return "  n/a" if v is None else f"{v:5.1f}"

    return f"{name:28s} base {f(res.get('base_miou'))}  novel {f(res.get('novel_miou'))}  all {f(res.get('miou'))}  HM {f(res.get('hm'))}"


def run(args) -> int:
    import os
    import time

    from simformer.config import load_cfg
    from simformer.data.catalog import get_dataset
    from simformer.data.datasets.toyscenes import generate_toyscenes
    from simformer.engine.trainer import Trainer
    from simformer.evaluation.visualize import visualize_dataset

    t0 = time.time()
    config = args.config or default_config()
    root = os.path.dirname(os.path.dirname(get_dataset("toyscenes_train").image_root))
    if not os.path.isfile(os.path.join(root, "toyscenes.json")):
        print(f"[demo] generating ToyScenes in {root} ...")
        from . import progress_enabled

        generate_toyscenes(root, progress=progress_enabled(args))
    runs = [("SimFormer (Pr + Pi + Co)", config, args.output)]
    if args.baseline:
        runs.append(("proposal-only (Pr)", default_config("ablation_pr.yaml"), args.output.rstrip("/") + "_pr"))
    results = {}
    for name, cfg_file, out in runs:
        cfg = load_cfg(cfg_file, list(args.opts) + ["OUTPUT_DIR", out])
        trainer = Trainer(cfg)
        results[name] = trainer.train()
        figures = visualize_dataset(trainer.model, cfg, cfg.DATASETS.TEST[0], trainer.split,
                                    os.path.join(out, "figures"), num_images=4)
        print(f"[demo] {name}: metrics in {os.path.join(out, 'metrics.json')}, {len(figures)} figures in "
              f"{os.path.join(out, 'figures')}")
    print("\n[demo] ToyScenes val, mIoU (%), split splits/toyscenes/split1.json")
    for name, res in results.items():
        print("  " + _summary_line(name, res))
    print(f"[demo] done in {time.time() - t0:.0f} s; outputs in {args.output}")
    return 0
