"""Statistics across seeds (docs/method.md section 9) and their report formatting.

``results`` (loading and checking a results table), ``significance`` (mean +- std, tests against
a baseline, effect sizes, Holm), ``report`` (Markdown / LaTeX tables, ``write_stats``). The names
below are the package's API.
"""
from .report import format_latex, format_markdown, format_p, tests_used, write_stats
from .results import (ALTERNATIVES, DDOF, EXTRA_COLUMNS, METRICS, RESULT_COLUMNS, STATS_COLUMNS, TESTS, StatsWarning,
                      check_columns, check_metric, clean_table, first_seen_order, load_results)
from .significance import (compare, describe_test, hedges_g, hedges_gz, hodges_lehmann, holm, mann_whitney_null_cdf,
                           summarize)

__all__ = [
    "format_latex", "format_markdown", "format_p", "tests_used", "write_stats",
    "ALTERNATIVES", "DDOF", "EXTRA_COLUMNS", "METRICS", "RESULT_COLUMNS", "STATS_COLUMNS", "TESTS", "StatsWarning",
    "check_columns", "check_metric", "clean_table", "first_seen_order", "load_results",
    "compare", "describe_test", "hedges_g", "hedges_gz", "hodges_lehmann", "holm", "mann_whitney_null_cdf",
    "summarize",
]
