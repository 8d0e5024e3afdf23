"""`detoxkit train scorer [--variant minilm|e5]` and `detoxkit train scorer-e5`: detoxkit's
scorers, reproduced from the corpus (recipes: scorer_minilm.py, scorer_e5.py).

The `scorer` target's settings are those of both variants (built from their configs, so
they cannot drift); a setting whose default differs between them is unset unless given
and then takes the variant's default. Both print the held-out report.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

from .base import RecipeConfig, Trainer, setting
from .scorer_e5 import E5Config
from .scorer_e5 import train as train_e5
from .scorer_minilm import MiniLMConfig
from .scorer_minilm import train as train_minilm

VARIANTS = {"minilm": (MiniLMConfig, train_minilm), "e5": (E5Config, train_e5)}


def _union_config() -> type:
    """A config with `variant` and every variant's fields (see the module docstring)."""
    owners: dict[str, list[tuple[str, dataclasses.Field, typing.Any]]] = {}
    for variant, (cls, _) in VARIANTS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            owners.setdefault(f.name, []).append((variant, f, hints[f.name]))
    specs: list[tuple] = [("variant", str, setting(
        "minilm", "minilm: detoxkit-minilm (the default scorer); e5: detoxkit-e5 (multilingual)",
        choices=tuple(VARIANTS)))]
    for name, fs in owners.items():
        _, first, kind = fs[0]
        defaults = {variant: f.default for variant, f, _ in fs}
        meta = dict(first.metadata)
        if name == "out":
            meta["help"] = "output directory (default: $DETOXKIT_HOME/trained/scorers/<variant>)"
            default = None
        elif len(fs) < len(VARIANTS):
            meta["help"] = f"{fs[0][0]}: {meta['help']}"
            default = first.default
        elif len(set(defaults.values())) == 1:
            default = first.default
        else:
            meta["help"] += " (default: " + ", ".join(f"{d} {v}" for v, d in defaults.items()) + ")"
            default, kind = None, kind | None
        specs.append((name, kind, dataclasses.field(default=default, metadata=meta)))
    return dataclasses.make_dataclass("ScorerConfig", specs, bases=(RecipeConfig,),
                                      namespace={"__module__": __name__})


ScorerConfig = _union_config()


def train(config) -> Path:
    """Train detoxkit-minilm (LoRA on all-MiniLM-L6-v2) or detoxkit-e5 (a head on
    multilingual-e5-small), calibrated; returns the weights file."""
    cls, recipe = VARIANTS[config.variant]
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(cls)
              if getattr(config, f.name) is not None}
    return recipe(cls(**values))


def print_report(config, path: Path) -> None:
    """The held-out report of the trained scorer and how to use its weights."""
    if path.stem == "checkpoint":  # stopped early (--stop-after)
        print(f"stopped; checkpoint: {path} (run the same command again to continue)")
        return
    held = json.loads((path.parent / "report.json").read_text())["calibrated"]
    print(f"held-out ({held['n']} corpus rows, {held['positives']} offensive): AUC {held['auc']:.4f}  "
          f"accuracy@0.5 {held['accuracy@0.5']:.4f}  Brier {held['brier']:.4f}  ECE {held['ece']:.4f}")
    print("reliability (calibrated score bin: n, mean score, offensive rate):")
    for row in held["reliability"]:
        print(f"  {row['bin']}: {row['n']:>5}  {row['mean_score']:.3f}  {row['positive_rate']:.3f}")
    print(f"weights: {path}")
    print(f"use: detoxkit scorers validate --scorer {path.stem} --scorer-option weights={path} --data ...")
    print(json.dumps({"weights": str(path), "heldout_auc": held["auc"], "ece": held["ece"]}))


TRAINER = Trainer("scorer", ScorerConfig, train, report=print_report)
E5_TRAINER = Trainer("scorer-e5", E5Config, train_e5, report=print_report)
