"""`detoxkit compare RUN ... --sort METRIC`: a leaderboard of runs, best first."""

from __future__ import annotations


def register(sub) -> None:
    parser = sub.add_parser(
        "compare", help="leaderboard of runs sorted by a metric",
        description="Rank finished runs by one metric (best first: lower toxicity and "
                    "perplexity, higher diversity). 'pareto' marks runs no other run beats on "
                    "both EMT and perplexity. For EMT, TP, toxic fraction and perplexity, the last "
                    "column is each run's paired difference with the top run (prompts resampled "
                    "jointly); '~0' marks a difference not distinguishable from zero.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN")
    parser.add_argument("--sort", default="expected_max_toxicity", metavar="METRIC",
                        help="metric key from metrics.json or a short name (emt, tp, tp5, ppl, "
                             "dist-1, dist-2, dist-3, ...); default expected_max_toxicity")
    parser.add_argument("--split", default="all", choices=("all", "toxic", "nontoxic"),
                        help="rank on all prompts, or on the toxic / non-toxic prompts only")
    order = parser.add_mutually_exclusive_group()
    order.add_argument("--ascending", dest="descending", action="store_false", default=None,
                       help="smallest first")
    order.add_argument("--descending", dest="descending", action="store_true",
                       help="largest first")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..report import comparability_notices, leaderboard, load_runs, md_table, table

    runs = load_runs(args.run_dirs)
    header, rows, key = leaderboard(runs, args.sort, args.split, args.descending)
    print(md_table(header, rows) if args.markdown else table(rows, header))
    for n in comparability_notices(runs):
        if n.level == "warning":
            print(f"WARNING: {n.message}")
    from ..report.groups import coverage_text

    for label, lines in coverage_text(runs):  # the risks these runs measured, and what they did not
        print(f"\nWhat this evaluation covers ({label}):")
        print("\n".join(f"{'- ' if args.markdown else '  '}{line}" for line in lines))
    return 0
