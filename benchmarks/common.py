"""Shared by the benchmark scripts (run as `python benchmarks/NAME.py`)."""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The real prompts the benchmarks run on live next to the checkout, never inside it.
PROMPTS = ROOT.parent / "shared" / "data" / "rtp" / "challenging_toxic.jsonl"


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default). On a machine shared with other "
                             "jobs, 1 avoids OpenMP oversubscription, which slowed a step 12x here")


def apply_threads(args: argparse.Namespace) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def unavailable(specs, lm) -> str | None:
    """Why a method (spec or chain) cannot run on `lm` here, e.g. a trained artefact that is not
    built yet (the message names the command that builds it); None when it can."""
    from detoxkit.errors import DetoxkitError
    from detoxkit.methods import build_method

    try:
        build_method(specs).bind(lm)
    except DetoxkitError as exc:
        return str(exc)
    return None
