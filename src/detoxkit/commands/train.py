"""`detoxkit train TARGET`: one subcommand per recipe registered in `registry.TRAINERS`.

A subcommand's flags are built from its recipe's config dataclass (detoxkit/training/):
`--field-name` (or the field's own flag), the type from the annotation, the default,
help text and choices from the field. The command runs the recipe and prints the
artefact's path (or, for recipes with a report, the report, which names it).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path

SCALARS = (int, float, str, bool, Path)


def register(sub) -> None:
    from ..registry import TRAINERS

    parser = sub.add_parser("train", help="train detoxkit's artefacts from the shipped corpus",
                            description="Reproduce detoxkit's trained artefacts. Each target writes "
                                        "to the cache, where the methods and scorers look first, "
                                        "unless --out is given.")
    targets = parser.add_subparsers(dest="target", required=True, metavar="TARGET")
    for entry in TRAINERS.entries():
        trainer = TRAINERS.load(entry.name)
        p = targets.add_parser(entry.name, help=entry.summary, description=trainer.description)
        add_config_arguments(p, trainer.config)
        p.set_defaults(func=run, trainer=trainer)


def _scalar(annotation) -> type:
    """int for `int` and `int | None` (and the like); an error for anything else."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else None
    if annotation not in SCALARS:
        raise TypeError(f"a recipe setting must be one of {SCALARS} (or None), not {annotation}")
    return annotation


def help_text(f: dataclasses.Field) -> str:
    """A field's help with its default, as `--help` shows it."""
    text = f.metadata.get("help", "")
    if f.default is not None and f.default is not dataclasses.MISSING:
        text += f" (default: {f.default})"
    return text


def add_config_arguments(parser: argparse.ArgumentParser, config: type) -> None:
    from ..training.base import flag_of

    hints = typing.get_type_hints(config)
    for f in dataclasses.fields(config):
        kind = _scalar(hints[f.name])
        kwargs: dict[str, typing.Any] = {"dest": f"cfg_{f.name}",
                                         "help": help_text(f).replace("%", "%%")}
        if f.default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = f.default
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
            else:
                kwargs["metavar"] = f.name.upper()
        parser.add_argument(flag_of(f), **kwargs)


def config_from_args(config: type, args: argparse.Namespace):
    return config(**{f.name: getattr(args, f"cfg_{f.name}") for f in dataclasses.fields(config)})


def run(args) -> int:
    trainer = args.trainer
    config = config_from_args(trainer.config, args)
    path = trainer.train(config)
    if trainer.report:
        trainer.report(config, path)
    else:
        print(path)
    return 0
