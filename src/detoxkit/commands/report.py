"""`detoxkit report RUN [RUN ...]`: compare runs in a terminal table, as Markdown, or as a
self-contained HTML page (--html)."""

from __future__ import annotations

import sys


def register(sub) -> None:
    parser = sub.add_parser(
        "report", help="compare runs side by side (terminal, --markdown, --html)",
        description="Compare finished runs. Without options prints a terminal table; "
                    "--html writes a self-contained page (trade-off plot, splits, every metric, "
                    "provenance, per-prompt drill-down); --markdown prints tables for papers "
                    "and pull requests.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN",
                        help="run directories, or corpus scan directories (detoxkit corpus scan)")
    parser.add_argument("--html", metavar="OUT.html", help="write a self-contained HTML report")
    parser.add_argument("--markdown", nargs="?", const="-", metavar="OUT.md",
                        help="Markdown report to OUT.md, or to stdout when no file is given")
    parser.add_argument("--drilldown", type=int, default=30, metavar="N",
                        help="HTML: prompts in the drill-down, most toxic first (0 = all; "
                             "default 30)")
    parser.add_argument("--attribution", default="auto", metavar="SPEC",
                        help="HTML: how to find the most toxic words: auto (leave-one-word-out "
                             "occlusion with each run's judge when it loads), occlusion, cfl (the "
                             "CFL token table of each run's model), none, or table:PATH (a JSON "
                             "{token: effect} table, e.g. from `detoxkit train cfl --export-json`)")
    parser.add_argument("--attributed-samples", type=int, default=3, metavar="N",
                        help="HTML: samples per prompt and run to attribute (default 3)")
    parser.add_argument("--title", help="HTML: page title")
    parser.add_argument("--baseline", metavar="RUN", help="the run the others are compared with, "
                        "paired on the same prompts (default: the first RUN)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..corpus_scan.shards import is_scan_dir

    if any(is_scan_dir(p) for p in args.run_dirs):  # `detoxkit corpus scan` directories
        from ..corpus_scan.report import report_command

        return report_command(args)
    from ..moderation.run import is_moderation_dir

    if len(args.run_dirs) == 1 and is_moderation_dir(args.run_dirs[0]):  # `detoxkit moderate` output
        from ..moderation.report import load_summary
        from .moderate import write_reports

        return write_reports(load_summary(args.run_dirs[0]), args)
    from ..report import (comparability_notices, comparison_rows, load_runs, markdown_report,
                          paired_rows, table)

    runs = load_runs(args.run_dirs)
    base = baseline_of(runs, args.baseline)
    if args.markdown is not None:
        text = markdown_report(runs, base=base)
        if args.markdown == "-":
            sys.stdout.write(text)
        else:
            from ..store import write_text_atomic

            write_text_atomic(_path(args.markdown), text)
            print(f"wrote {args.markdown}", file=sys.stderr)
    if args.html:
        from ..report import write_html

        out = write_html(runs, _path(args.html), attribution=args.attribution,
                         drilldown=args.drilldown, attributed_samples=args.attributed_samples,
                         title=args.title, base=base)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB; open it in any browser, "
              "no network needed)", file=sys.stderr)
    if args.markdown == "-":
        return 0
    header, rows = comparison_rows([str(r.path) for r in runs])
    for row, r in zip(rows, runs):
        row[0] = r.label
    print(table(rows, header))
    from ..report.terminal import usage_line

    for r in runs:
        usage = usage_line(r.metrics.get("backend_stats"))
        failed = r.metrics.get("n_generation_failed")
        if usage or failed:
            print(f"{r.label}: " + "; ".join(x for x in (usage, f"{failed} failed samples" if failed
                                                          else None) if x))
    if len(runs) > 1:
        print_titled(*paired_rows(runs, base))
    print_groups_and_coverage(runs, base)
    for n in comparability_notices(runs):
        if n.level == "warning":
            print(f"WARNING: {n.message}")
    return 0


def print_groups_and_coverage(runs, base) -> None:
    """Per-domain disparities, each method's per-group change vs the base run, and the
    "what this evaluation covers" block of every run."""
    from ..report import table
    from ..report.groups import change_rows, coverage_text, disparity_rows

    header, rows = disparity_rows(runs)
    if rows:
        print("\nDisparity between groups (largest gap: most minus least affected group; p: "
              "permutation test of no difference)")
        print(table(rows, header))
    if len(runs) > 1:
        print_titled(*change_rows(runs, base))
    for label, lines in coverage_text(runs):
        print(f"\nWhat this evaluation covers ({label}):")
        for line in lines:
            print(f"  {line}")


def print_titled(title: str, header: list[str], rows: list[list[str]], notes: list[str]) -> None:
    """A titled table (when it has rows) and its notes."""
    from ..report import table

    if rows:
        print(f"\n{title}")
        print(table(rows, header))
    for note in notes:
        print(f"note: {note}")


def baseline_of(runs, wanted: str | None):
    """The run named by --baseline (its directory or label), else the first run."""
    from pathlib import Path

    from ..errors import DetoxkitError

    if wanted is None:
        return runs[0]
    for r in runs:
        if r.label == wanted or Path(r.path).resolve() == Path(wanted).resolve():
            return r
    raise DetoxkitError(f"--baseline {wanted} is not one of the runs given "
                        f"({', '.join(r.label for r in runs)})")


def _path(text: str):
    from pathlib import Path

    path = Path(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
