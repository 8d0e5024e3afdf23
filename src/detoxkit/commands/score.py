"""`detoxkit score RUN --scorer NAME`: add a scorer's scores to a run and recompute metrics."""

from __future__ import annotations


def register(sub) -> None:
    parser = sub.add_parser("score", help="add another scorer's scores to an existing run")
    parser.add_argument("run_dir", metavar="RUN")
    parser.add_argument("--scorer", dest="scorers", action="append", required=True,
                        help="scorer name (repeatable)")
    parser.add_argument("--judge", action="store_true",
                        help="make the (first) new scorer the run's judge for the headline metrics")
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..report import print_summary
    from ..rescore import add_scores

    metrics = add_scores(args.run_dir, args.scorers, device=args.device, judge=args.judge)
    print_summary(metrics, args.run_dir)
    return 0
