"""`detoxkit moderate FILE --scorer NAME [--scorer ...] --out DIR`: score conversations message
by message and measure the scorers as moderators against the file's labels."""

from __future__ import annotations

import sys


def register(sub) -> None:
    parser = sub.add_parser(
        "moderate", help="score conversations message by message; with labels, precision/recall/F1/AUPRC",
        description="FILE: OpenAI `messages` JSONL, LMSYS-Chat-1M (JSONL/Parquet) or ToxicChat "
                    "(CSV/JSONL/Parquet), detected by their fields; or a named set: toxic-chat "
                    "(hub, network), toxigen-statements[:dir=PATH], corpus-reserved. Running the "
                    "same command again scores only what is missing.")
    parser.add_argument("file", metavar="FILE")
    parser.add_argument("--scorer", dest="scorers", action="append", required=True,
                        help="scorer spec; repeat to compare several side by side")
    parser.add_argument("--out", required=True, help="output directory (scores.jsonl, moderation.json)")
    parser.add_argument("--format", default="auto", choices=("auto", "openai", "lmsys", "toxicchat"))
    parser.add_argument("--limit", type=int, help="N conversations (seeded, keeping the share of flagged ones)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--on-bad", default="error", choices=("error", "skip"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--markdown", nargs="?", const="-", metavar="OUT.md")
    parser.add_argument("--html", metavar="OUT.html")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..moderation.run import moderate

    summary = moderate(args.file, args.scorers, args.out, fmt=args.format, limit=args.limit,
                       seed=args.seed, on_bad=args.on_bad, batch_size=args.batch_size,
                       device=args.device)
    return write_reports(summary, args)


def write_reports(summary: dict, args) -> int:
    from ..moderation.report import html_report, markdown_report, terminal_report
    from ..store import write_text_atomic

    if args.markdown == "-":
        sys.stdout.write(markdown_report(summary))
        return 0
    if args.markdown:
        write_text_atomic(_path(args.markdown), markdown_report(summary))
    if args.html:
        write_text_atomic(_path(args.html), html_report(summary))
        print(f"wrote {args.html}", file=sys.stderr)
    sys.stdout.write(terminal_report(summary))
    return 0


def _path(text: str):
    from pathlib import Path

    path = Path(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
