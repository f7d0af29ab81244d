"""SimNet transferability of every saved checkpoint of a run, scored on many image pairs, and how far
the paper's 100-pair figure moves between draws of its pairs.

    python analysis/simnet_checkpoints.py runs/toyscenes_recipe_curves runs/toyscenes_main \
        --out docs/results/simnet_checkpoints.csv --doc docs/results-toyscenes.md --keep

analysis/simnet_transfer.py scores each run's final model on 100 training image pairs (the paper's
Table 3). That figure is a sample: the novel "similar" pairs come from the few image pairs that
share a novel class, so another draw of 100 pairs gives another F1. This script measures both:

* ``pairs = --pairs`` (default 1000), draw 0: every checkpoint a run saved (``model_NNNNNNN.pth``
  and ``model_final.pth``), all on the same image pairs and points (loader seed 0), so the rows of
  one run differ only by the weights;
* ``pairs = --draw-pairs`` (default 100), draws 0 .. ``--draws`` - 1: the final model, draw d with
  loader order and point draws seeded by d (draw 0 is what analysis/simnet_transfer.py scores).

Runs are found as analysis/oracle_gap.py finds them; runs without SimNet or pairs are skipped. With
--doc, the generated "simnet_checkpoints" block of that document is rewritten (:func:`blocks`).
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import sys

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from axis_blocks import paired_change_cells, split_budget  # noqa: E402
from convergence_report import mean_std  # noqa: E402
from kept_rows import merge_rows  # noqa: E402
from markdown_blocks import replace_block  # noqa: E402
from oracle_gap import find_runs, run_key  # noqa: E402
from simnet_transfer import GROUP_COLUMNS, group_figures  # noqa: E402

COLUMNS = ["method", "split", "seed", "run", "iteration", "pairs", "draw", *GROUP_COLUMNS]
FIGURES = ("novel_f1_similar", "novel_f1_dissimilar", "base_f1_similar", "base_f1_dissimilar")


def checkpoints(model_dir: str, max_iter: int) -> list:
    """``[(iteration, path)]`` of the checkpoints in ``model_dir``, sorted: the periodic
    ``model_NNNNNNN.pth`` (engine/hooks.py names them by the trainer's iteration) and
    ``model_final.pth`` as ``max_iter``."""
    found = [(int(m.group(1)), p) for p in glob.glob(os.path.join(model_dir, "model_*.pth"))
             for m in [re.fullmatch(r"model_(\d+)\.pth", os.path.basename(p))] if m]
    found = [(i, p) for i, p in found if i != max_iter]  # a periodic save at the last step is the final model
    return sorted(found) + [(max_iter, os.path.join(model_dir, "model_final.pth"))]


def _score(model, cfg, split, *, pairs: int, draw: int) -> dict:
    from simformer.evaluation.simnet_transfer import simnet_transfer_on_training_pairs

    seeded = cfg.clone()
    seeded.defrost()
    seeded.SEED = int(draw)  # the loader's order and reference pairing
    return group_figures(simnet_transfer_on_training_pairs(model, seeded, split, num_image_pairs=pairs,
                                                           seed=draw).summary())


def analyze_run(run: dict, *, pairs: int, draw_pairs: int, draws: int) -> list:
    """The rows of one run (module docstring); ``[]`` for a run without SimNet or pairs."""
    from simformer.config import load_cfg
    from simformer.engine.checkpoint import Checkpointer
    from simformer.engine.defaults import load_trained_model
    from simformer.evaluation.simnet_transfer import has_simnet_pairs

    config = os.path.join(run["model_dir"], "config.yaml")
    if not has_simnet_pairs(load_cfg(config, [])):
        return []
    cfg, model, split, _ = load_trained_model(config, os.path.join(run["model_dir"], "model_final.pth"),
                                              default_dataset="train")
    key = dict(run_key(run, int(cfg.SEED)), run=run["run"])
    max_iter = int(cfg.SOLVER.MAX_ITER)
    rows = []
    for iteration, path in checkpoints(run["model_dir"], max_iter):
        Checkpointer.load(path, model=model)
        figures = _score(model, cfg, split, pairs=pairs, draw=0)
        rows.append(dict(key, iteration=iteration, pairs=pairs, draw=0, **figures))
    # the final model's weights are loaded last
    for draw in range(draws):
        rows.append(dict(key, iteration=max_iter, pairs=draw_pairs, draw=draw,
                         **_score(model, cfg, split, pairs=draw_pairs, draw=draw)))
    return rows


def checkpoint_table(df: pd.DataFrame) -> str:
    """Per method and checkpoint iteration, the F1s scored on the many-pair sample (mean ± std over
    runs, ddof 1)."""
    many = df[df["pairs"] == df["pairs"].max()]
    lines = ["### SimNet transferability at each saved checkpoint\n",
             "| method | iteration | n | " + " | ".join(c.replace("_", " ") for c in FIGURES) + " |",
             "|---|---:|---:|" + "---:|" * len(FIGURES)]
    for (method, iteration), g in many.groupby(["method", "iteration"], sort=False):
        lines.append(f"| {method} | {iteration} | {len(g)} | " + " | ".join(mean_std(g[c]) for c in FIGURES) + " |")
    n_pairs = int(many["pairs"].iloc[0])
    return "\n".join(lines) + (f"\n\nF1 (%) of SimNet's similar / dissimilar decision on cross-image pixel pairs of "
                               f"{n_pairs} training image pairs, the same pairs and points for every checkpoint of "
                               "a run (loader seed 0); mean ± std over runs (one run per seed).\n")


def draw_table(df: pd.DataFrame) -> str:
    """Per method, how far the novel "similar" F1 moves when only the sample moves (the final model
    on ``draw_pairs`` image pairs, draw by draw) and when only the weights move (the many-pair
    sample, checkpoint by checkpoint): within-run std (ddof 1) and spread, averaged over runs."""
    small = df[df["pairs"] == df["pairs"].min()]
    many = df[df["pairs"] == df["pairs"].max()].sort_values(["run", "iteration"])
    few, lots = int(small["pairs"].iloc[0]), int(many["pairs"].iloc[0])
    draws = int(small.groupby("run").size().median())
    lines = ["### How far the novel similar F1 moves: another sample of pairs, another checkpoint\n",
             f"| method | runs | {few} pairs: std over {draws} draws | {few} pairs: range over draws | {lots} pairs: "
             f"std over checkpoints | {lots} pairs: mean change between consecutive checkpoints | {lots} pairs, "
             "final model |", "|---|---:|---:|---:|---:|---:|---:|"]
    for method, g in small.groupby("method", sort=False):
        novel = g.groupby("run")["novel_f1_similar"]
        m = many[many["method"] == method]
        by_run = m.groupby("run")["novel_f1_similar"]
        step = by_run.apply(lambda v: v.diff().abs().mean())
        final = m[m["iteration"] == m.groupby("run")["iteration"].transform("max")]
        lines.append(f"| {method} | {novel.ngroups} | {novel.std(ddof=1).mean():.1f} | "
                     f"{(novel.max() - novel.min()).mean():.1f} | {by_run.std(ddof=1).mean():.1f} | "
                     f"{step.mean():.1f} | {mean_std(final['novel_f1_similar'])} |")
    return "\n".join(lines) + (f"\n\nF1 (%) of SimNet's similar decision on novel pixel pairs. Sample: the final "
                               f"model of each run on {few} training image pairs per draw, draw d with loader "
                               "order and point draws seeded by d (draw 0 is what analysis/simnet_transfer.py "
                               f"scores). Weights: the run's saved checkpoints on the same {lots} pairs (the table "
                               "above). Std (ddof 1), max - min and the mean absolute change are taken within each "
                               "run and averaged over runs; last column mean ± std over runs.\n")


def budget_table(df: pd.DataFrame) -> str:
    """Each ``X@B`` method's final model against ``X``'s on the many-pair sample, paired by seed:
    mean difference, 95 % CI, paired t-test (two-sided); "" when no such pair of methods."""
    many = df[df["pairs"] == df["pairs"].max()]
    final = many[many["iteration"] == many.groupby("run")["iteration"].transform("max")]
    models = split_budget(final["method"])
    lines = []
    for method in pd.unique(final["method"]):
        model = models.loc[final["method"] == method, "model"].iloc[0]
        if method == model or model not in set(final["method"]):
            continue
        cells, n = paired_change_cells(final, method, model, ("novel_f1_similar", "base_f1_similar"))
        lines.append(f"| {method} vs {model} | {n} | " + " | ".join(cells) + " |")
    if not lines:
        return ""
    return ("### SimNet transferability, final models: each longer schedule against the recipe's, paired by seed\n\n"
            "| comparison | seed pairs | novel similar F1 change [95 % CI] | p (paired t) "
            "| base similar F1 change [95 % CI] | p (paired t) |\n|---|---:|---:|---:|---:|---:|\n"
            + "\n".join(lines) + "\n\npercentage points of F1 on the many-pair sample; paired t-test (two-sided, "
            "ddof 1) on the seeds both ran.\n")


def blocks(df: pd.DataFrame) -> str:
    """The generated "simnet_checkpoints" block: the three tables above."""
    parts = [checkpoint_table(df), draw_table(df), budget_table(df)]
    return "\n".join(p for p in parts if p)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs_roots", nargs="+", help="folders searched for runs (config.yaml + model_final.pth)")
    p.add_argument("--out", required=True, help="CSV to write (one row per run x checkpoint x sample)")
    p.add_argument("--doc", default="", help="Markdown file whose 'simnet_checkpoints' block to rewrite")
    p.add_argument("--pairs", type=int, default=1000, help="image pairs scored at every checkpoint (default 1000)")
    p.add_argument("--draw-pairs", type=int, default=100, help="image pairs per draw of the final model (default 100)")
    p.add_argument("--draws", type=int, default=5, help="draws of the final model (default 5)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: as the simformer CLI)")
    p.add_argument("--keep", action="store_true",
                   help="keep the rows of runs already in --out, including those of runs no longer on this machine")
    args = p.parse_args(argv)
    if not 0 < args.draw_pairs < args.pairs or args.draws < 2:
        p.error("need 0 < --draw-pairs < --pairs and --draws >= 2")
    from simformer.utils.io import atomic_path
    from simformer.utils.threads import configure_threads

    configure_threads(args.threads)
    known = pd.read_csv(args.out) if args.keep and os.path.isfile(args.out) else None
    if known is not None and list(known.columns) != COLUMNS:
        print(f"{args.out} is not a SimNet-checkpoints CSV (columns {list(known.columns)}); drop --keep",
              file=sys.stderr)
        return 2
    done = set() if known is None else set(known["run"])
    rows = []
    for root in args.runs_roots:
        for run in find_runs(root):
            # runs of several sweeps in one table: name a run by its sweep folder too
            run = dict(run, run=os.path.join(os.path.basename(os.path.normpath(root)), run["run"]))
            if run["run"] in done:
                continue
            fresh = analyze_run(run, pairs=args.pairs, draw_pairs=args.draw_pairs, draws=args.draws)
            rows += fresh
            for r in fresh:
                print(f"{r['run']} it {r['iteration']} pairs {r['pairs']} draw {r['draw']}: novel F1 similar "
                      f"{r['novel_f1_similar']:.1f}, base {r['base_f1_similar']:.1f}", flush=True)
    df = merge_rows(known, pd.DataFrame(rows, columns=COLUMNS))
    if df.empty:
        print(f"no run with SimNet and pairs under {args.runs_roots}", file=sys.stderr)
        return 1
    with atomic_path(args.out, ".csv") as tmp:
        df.to_csv(tmp, index=False, float_format="%.4f")
    if args.doc:
        replace_block(args.doc, "simnet_checkpoints", blocks(df))
    print(f"wrote {len(df)} rows ({df['run'].nunique()} runs) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
