"""`detoxkit sweep`: a method's trade-off curve, one resumable run per setting (see detoxkit/sweep.py)."""

from __future__ import annotations

import argparse

from .run import FLAGS


def register(sub) -> None:
    parser = sub.add_parser(
        "sweep", help="trade-off curves: one run per setting, same prompts and seed",
        description="Run every point of each curve (a --method whose settings list several values, "
                    "e.g. dexperts:alpha=0.5,1,2, or a '+' chain such as "
                    "cfl:strength=20,40+dexperts:alpha=0.5,1 for their grid) and the base model, "
                    "each as `detoxkit run` would in OUT/<curve>/<point>, then report them with the "
                    "Pareto frontier. Running the same command again resumes; adding a --method to "
                    "it reuses the finished points. Every `detoxkit run` flag applies to every point.")
    parser.add_argument("--config", help="YAML config file; flags override its values")
    for flag, (field, typ, text) in FLAGS.items():
        if field == "out":
            continue
        parser.add_argument(flag, dest=field, type=typ, default=None, help=text)
    parser.add_argument("--out", dest="out", required=True, help="the sweep directory")
    parser.add_argument("--method", dest="curves", action="append", required=True, metavar="CURVE",
                        help="a curve: a method spec (or '+' chain) whose settings may list several "
                             "values; repeat for more curves")
    parser.add_argument("--scorer", dest="scorers", action="append", default=None,
                        help="scorer spec; repeat for several (the first one judges)")
    parser.add_argument("--no-base", action="store_true",
                        help="leave out the base model's run (`none`), the reference of the "
                             "paired differences")
    parser.add_argument("--html", metavar="OUT.html", help="also write the HTML report (the curves, "
                        "the frontier, every run)")
    parser.add_argument("--markdown", nargs="?", const="-", metavar="OUT.md",
                        help="also write the Markdown report (to stdout when no file is given)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..report import front_marks, load_runs
    from ..sweep import run_sweep
    from . import report
    from .run import resolve_config

    args.methods = None  # the curves give each point's methods
    cfg = resolve_config(args)
    run_sweep(cfg, args.curves, args.out, include_base=not args.no_base)
    report.run(argparse.Namespace(
        run_dirs=[args.out], html=args.html, markdown=args.markdown, drilldown=30,
        attribution="auto", attributed_samples=3, title=f"detoxkit sweep: {args.out}",
        baseline=None))
    if args.markdown != "-":
        marks = front_marks(load_runs([args.out]))
        for short in ("EMT", "TP"):
            on = [label for label, m in marks.items() if short in m.split(", ")]
            print(f"Pareto frontier ({short} vs perplexity): {', '.join(on) or '-'}")
    return 0
