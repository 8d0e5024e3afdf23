"""Reports of finished runs: terminal tables, Markdown, leaderboards, comparability checks
and a self-contained HTML page.

Everything here reads run directories (metrics.json, run.json); nothing is recomputed.
"""

from .compare import (LEADERBOARD_COLUMNS, Notice, comparability_notices, comparison_rows, front_marks,
                      leaderboard,
                      paired_against, paired_rows, pareto_front)
from .html import build_html, write_html
from .markdown import markdown_report, md_escape, md_table
from .metric_defs import (METRICS, SPLITS, MetricDef, format_metric, format_value, metric_block,
                          metric_ci, metric_def, metric_keys, metric_value, resolve_metric)
from .runs import Run, load_run, load_runs, method_label
from .terminal import print_summary, table

__all__ = [
    "LEADERBOARD_COLUMNS", "METRICS", "SPLITS", "MetricDef", "Notice", "Run", "build_html",
    "comparability_notices", "comparison_rows", "format_metric", "front_marks", "format_value", "leaderboard",
    "load_run", "load_runs", "markdown_report", "md_escape", "md_table", "method_label",
    "metric_block", "metric_ci", "metric_def", "metric_keys", "metric_value", "paired_against",
    "paired_rows", "pareto_front",
    "print_summary", "resolve_metric", "table", "write_html",
]
