"""The `detoxkit` command line. Each subcommand lives in detoxkit/commands/<name>.py
and exposes register(subparsers); heavy imports happen inside the handlers."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .errors import DetoxkitError

COMMAND_MODULES = ["run", "sweep", "score", "report", "compare", "ls", "prompts", "corpus", "scorers", "train",
                   "langmatters", "moderate"]


class OneLineErrors(argparse.ArgumentParser):
    """Bad flags are one line, like every other detoxkit error (subcommands inherit the class)."""

    def error(self, message: str):
        self.exit(2, f"detoxkit: error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = OneLineErrors(
        prog="detoxkit", description="Measure and reduce toxic degeneration of language models.")
    parser.add_argument("--version", action="version", version=f"detoxkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"detoxkit.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad flag (already reported)
        return int(exc.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not args.verbose:  # one line per HTTP request would drown the progress lines
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except DetoxkitError as exc:
        print(f"detoxkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ndetoxkit: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
