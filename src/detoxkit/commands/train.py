"""`detoxkit train TARGET`: recipes that produce artefacts (scorers, experts, tables, HMMs).

Each recipe module exposes register(train_subparsers); add it to TRAIN_MODULES.
"""

from __future__ import annotations

import importlib

TRAIN_MODULES: list[str] = [
    "detoxkit.commands.train_methods",
    "detoxkit.commands.train_scorer",
    "detoxkit.commands.train_trace",
    "detoxkit.commands.train_semantic",
    "detoxkit.commands.train_moral",
    "detoxkit.commands.train_pplm",
]


def register(sub) -> None:
    parser = sub.add_parser("train", help="train detoxkit's artefacts from the shipped corpus")
    targets = parser.add_subparsers(dest="target", required=True, metavar="TARGET")
    for name in TRAIN_MODULES:
        importlib.import_module(name).register(targets)
