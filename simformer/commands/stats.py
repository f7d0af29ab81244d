"""``simformer stats``: mean ± std across seeds and significance tests against a baseline."""
from __future__ import annotations

HELP = "Mean ± std across seeds and tests against a baseline (Markdown/LaTeX/CSV tables)"
DESCRIPTION = """\
Compare every method with a baseline on every split of a results CSV (one row per run, columns
method, split and the metric, plus seed for --test paired; extra columns are ignored).

Reports n, mean ± std (ddof=1), diff = mean(method) - mean(baseline), its CI at level 1-alpha with
the test's sidedness, the p-value, Holm-corrected p across splits within each method, and Hedges' g.
Tests: welch (default), student (pooled variance), paired (runs matched by seed), mannwhitney
(Hodges-Lehmann CI). The test, sidedness, pairing and ddof are printed next to the p-values.

Example:
  simformer stats runs.csv --metric novel_miou --baseline retab --output stats/
    -> stats/stats.csv, stats/stats.md, stats/stats.tex
"""


def add_arguments(parser) -> None:
    parser.add_argument("results", help="results CSV, one row per run")
    parser.add_argument("--metric", default="novel_miou",
                        help="metric column (novel_miou, base_miou, miou, hm or any numeric column)")
    parser.add_argument("--baseline", required=True, help="method every other method is compared with")
    parser.add_argument("--test", default="welch", choices=["welch", "student", "paired", "mannwhitney"])
    parser.add_argument("--alternative", default="two-sided", choices=["two-sided", "greater", "less"],
                        help="greater: method > baseline; less: method < baseline")
    parser.add_argument("--alpha", type=float, default=0.05, help="level; the CI has level 1-alpha")
    parser.add_argument("--output", "--out", dest="out", default=None, metavar="DIR",
                        help="write DIR/stats.csv, DIR/stats.md and DIR/stats.tex (alias --out)")


def run(args) -> int:
    import warnings

    from simformer.stats import (compare, format_markdown, load_results, tests_used,
                                         write_stats)

    from . import UsageError, check_metric_option

    required = ("method", "split", "seed") if args.test == "paired" else ("method", "split")
    df = load_results(args.results, required=required)  # a missing file / column is a data error (1)
    check_metric_option(df, args.metric, args.results)  # a wrong option value is a usage error (2)
    methods = list(dict.fromkeys(df["method"].astype(str)))
    if str(args.baseline) not in methods:
        raise UsageError(f"--baseline '{args.baseline}' not found; methods available: {methods}")
    df = load_results(args.results, metric=args.metric, required=required)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = compare(df, metric=args.metric, baseline=args.baseline, test=args.test,
                        alpha=args.alpha, alternative=args.alternative)
    import sys

    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(format_markdown(table), end="")
    print(f"Test used for every p-value: {tests_used(table)} "
          f"(CI level {1 - args.alpha:g}; p_holm: Holm across splits within each method).")
    if args.out:
        paths = write_stats(table, args.out)
        print("wrote " + ", ".join(paths.values()))
    return 0
