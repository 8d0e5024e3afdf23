"""What every recipe is made of: a config dataclass and one `train(config) -> Path`.

A config's fields carry their default, their help text and, where the set is fixed, their
choices (`setting(...)`); `detoxkit train TARGET` builds its flags from them (commands/train.py)
and the registry (`registry.TRAINERS`) names a `Trainer` per target.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import DetoxkitError


def setting(default: Any, help: str, *, choices: tuple | None = None, flag: str | None = None):
    """A config field: its default, its help text, its choices (if fixed) and, where the
    command-line flag is not `--field-name`, that flag."""
    metadata: dict[str, Any] = {"help": help}
    if choices:
        metadata["choices"] = tuple(choices)
    if flag:
        metadata["flag"] = flag
    return field(default=default, metadata=metadata)


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


@dataclass
class RecipeConfig:
    """Base of the recipes' configs: a value outside a field's choices is an error, in code as
    on the command line."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value is not None and value not in choices:
                raise DetoxkitError(f"{flag_of(f)} must be one of {', '.join(map(str, choices))}, "
                                    f"not {value!r}")


def corpus_half_setting():
    """The `--corpus-half` setting of every recipe that reads the corpus (detoxkit.corpus)."""
    from ..corpus import HALVES

    return setting(None, "train on one half of the corpus's training pool only, 'a' or 'b' "
                         "(default: the whole pool); recorded in the artefact's guided_by, so "
                         "that a judge trained on the other half counts as independent",
                   choices=HALVES)


def corpus_guided_by(half: str | None, *scorers) -> list[str]:
    """The guided_by an artefact records: the corpus rows it learned from (`half` of the
    training pool, or all of it) and the (spec, loaded scorer) pairs that also shaped it, each
    by its spec and by what that scorer itself learned from."""
    from ..corpus import corpus_tag

    tags = {corpus_tag(half)}
    for spec, scorer in scorers:
        tags |= {spec, *scorer.guided_by}
    return sorted(tags)


@dataclass
class GeneratorConfig(RecipeConfig):
    """A recipe built for one generator (its tokenizer, or its weights)."""

    model: str = setting("smollm2-135m", "generator: registered name, model directory or hub id")
    device: str = setting("cpu", "torch device (cpu, cuda, ...)")


@dataclass
class ScorerRecipeConfig(RecipeConfig):
    """Settings both scorer recipes share (training/scorer_minilm.py, training/scorer_e5.py)."""

    seed: int = setting(0, "seed of the rows, the batches and the initialisation")
    threads: int = setting(2, "CPU threads")
    corpus: str | None = setting(None, "corpus CSV (default: detoxkit's, see `detoxkit corpus fetch`)")
    corpus_half: str | None = corpus_half_setting()


@dataclass(frozen=True)
class Trainer:
    """One `detoxkit train` target: its config class and its recipe. `report`, where given,
    prints the recipe's summary (naming the artefact) in place of the bare artefact path."""

    name: str
    config: type
    train: Callable[[Any], Path]
    report: Callable[[Any, Path], None] | None = None

    @property
    def description(self) -> str:
        return (self.train.__doc__ or self.config.__doc__ or "").strip()


def load_generator(config: GeneratorConfig):
    """The config's generator in float32 (training needs full precision)."""
    from ..backends.hf import load_lm

    return load_lm(config.model, device=config.device, dtype="float32")


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def settings_record(config: RecipeConfig, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A config's settings, less `skip`, for fingerprints that decide whether to resume. A
    setting added later and left unset (None) is left out, so records made before it existed
    still match."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if f.name not in skip and not (f.name in ADDED_LATER and getattr(config, f.name) is None)}


ADDED_LATER = ("corpus_half", "precision")  # see settings_record


def command_line(name: str, config: RecipeConfig, skip: tuple[str, ...] = ("out",)) -> str:
    """`detoxkit train NAME` with the flags of every setting that differs from its default."""
    words = ["detoxkit", "train", name]
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name not in skip and value != f.default:
            words += [flag_of(f), str(value)]
    return shlex.join(words)
