"""``simformer plot``: bar charts per split and hyper-parameter curves from a results CSV."""
from __future__ import annotations

HELP = "Plot results across seeds: per-split bars or hyper-parameter curves (PNG/PDF/SVG)"
DESCRIPTION = """\
Figures from a results CSV (one row per run). Every bar/point is the mean over runs with a
two-sided Student-t confidence interval of the mean (std ddof=1).

  simformer plot bars runs.csv --metric novel_miou --output bars.png
      grouped bars: one group per split, one bar per method
  simformer plot curve sweep.csv --param alpha --metric novel_miou --output alpha.png [--group method]
      mean ± CI against a hyper-parameter column, one line per split (paper Fig. 6)
"""


def _common(p) -> None:
    from . import add_common_options

    p.add_argument("results", help="results CSV, one row per run")
    p.add_argument("--metric", default="novel_miou", help="metric column (default novel_miou)")
    p.add_argument("--output", "--out", dest="out", required=True, metavar="FILE",
                   help="output image (.png, .pdf, .svg) (alias --out)")
    add_common_options(p, suppress=True)
    p.add_argument("--confidence", type=float, default=0.95, help="CI level (default 0.95)")
    p.add_argument("--title", default=None)
    p.add_argument("--dpi", type=int, default=150)


def _names(text):
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="kind", metavar="KIND")
    sub.required = True
    bars = sub.add_parser("bars", help="grouped bars per split (mean ± CI per method)")
    _common(bars)
    bars.add_argument("--methods", default=None, help="comma list: methods to draw, in this order")
    bars.add_argument("--splits", default=None, help="comma list: splits to draw, in this order")
    curve = sub.add_parser("curve", help="mean ± CI against a hyper-parameter column")
    _common(curve)
    curve.add_argument("--param", required=True, help="hyper-parameter column (e.g. alpha, beta, gamma, J)")
    curve.add_argument("--group", default=None,
                       help="extra column giving one line per split x value (e.g. method)")
    curve.add_argument("--logx", action="store_true", help="logarithmic x axis")


def run(args) -> int:
    import os
    import sys
    import warnings

    from matplotlib.figure import Figure

    from simformer.sweeps.plots import plot_bars, plot_curve, save_figure
    from simformer.stats import load_results

    from . import UsageError, check_column_options, check_metric_option

    if not 0 < args.confidence < 1:
        raise UsageError(f"--confidence must be in (0, 1), got {args.confidence}")
    ext = os.path.splitext(args.out)[1].lower().lstrip(".")
    supported = Figure().canvas.get_supported_filetypes()
    if ext not in supported:
        raise UsageError(f"cannot write figure {args.out}: unknown extension '.{ext}'; use one of {sorted(supported)}")
    check_metric_option(load_results(args.results), args.metric, args.results)
    if args.kind == "curve":
        check_column_options(load_results(args.results), {"--param": args.param, "--group": args.group})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if args.kind == "bars":
            df = load_results(args.results, metric=args.metric)
            res = plot_bars(df, metric=args.metric, confidence=args.confidence,
                            methods=_names(args.methods), splits=_names(args.splits), title=args.title)
            what = f"{res.summary['method'].nunique()} method(s) x {res.summary['split'].nunique()} split(s)"
        else:
            required = ["split", args.param] + ([args.group] if args.group else [])
            df = load_results(args.results, metric=args.metric, required=required)
            res = plot_curve(df, param=args.param, metric=args.metric, group=args.group,
                             confidence=args.confidence, logx=args.logx, title=args.title)
            what = f"{res.summary['line'].nunique()} line(s) over {res.summary['x'].nunique()} value(s) of {args.param}"
    for w in caught:
        if issubclass(w.category, UserWarning):
            print(f"warning: {w.message}", file=sys.stderr)
    save_figure(res.figure, args.out, dpi=args.dpi)
    print(f"wrote {args.out}: {args.metric}, {what}, mean ± {args.confidence:.0%} t-CI (std ddof=1)")
    return 0
