"""`detoxkit report RUN [RUN ...]`: compare runs in a terminal table."""

from __future__ import annotations


def register(sub) -> None:
    parser = sub.add_parser("report", help="compare runs side by side")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..report import comparison_rows, table

    header, rows = comparison_rows(args.run_dirs)
    print(table(rows, header))
    judges = {r[3] for r in rows}
    if len(judges) > 1:
        print(f"WARNING: runs were judged by different scorers ({', '.join(sorted(map(str, judges)))}); "
              "their toxicity numbers are not comparable. Use `detoxkit score RUN --scorer NAME --judge`.")
    return 0
