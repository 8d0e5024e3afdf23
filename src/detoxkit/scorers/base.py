"""The scorer interface.

A scorer maps texts to one score per attribute in [0, 1]; the first attribute is
always "toxicity". It declares its name, version and languages, batches and
sorts by length itself, and loads its model once per process (load_scorer
caches instances). A text whose score cannot be computed gets NaN, never 0.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)


def length_sorted_batches(texts: Sequence[str], size: int) -> list[list[int]]:
    """Indices of `texts` sorted by length, in batches of `size`: a batch of similar lengths
    pads little (one long text would pad a whole mixed batch to its length)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    return [order[k:k + size] for k in range(0, len(order), size)]


class Scorer(ABC):
    name: str = ""  # registry name
    version: str = ""  # bump when scores change; recorded with every score
    attributes: tuple[str, ...] = ("toxicity",)
    languages: tuple[str, ...] = ("en",)  # every language it covers; ("*",) for any
    # the languages its scores were checked against reference labels in (None: all of
    # `languages`); the rest of `languages` is zero-shot (detoxkit-e5: English validated)
    validated_languages: tuple[str, ...] | None = None
    guided_by: tuple[str, ...] = ()  # models/artefacts whose judgement this scorer shares

    def __init__(self, device: str = "cpu", batch_size: int = 64):
        self.device = device
        self.batch_size = int(batch_size)

    @abstractmethod
    def _score_batch(self, texts: list[str]) -> dict[str, Sequence[float]]:
        """Score one batch; return {attribute: scores}. May raise: the batch is then retried
        text by text and the texts that still fail get NaN."""

    def score(self, texts: Sequence[str], progress=None) -> dict[str, np.ndarray]:
        """Scores for every text, in input order. progress: optional callable(n_done)."""
        texts = list(texts)
        out = {a: np.full(len(texts), np.nan, dtype=np.float64) for a in self.attributes}
        for idx in length_sorted_batches(texts, self.batch_size):
            for i, scores in zip(idx, self._safe_batch([texts[i] for i in idx])):
                for attr, value in scores.items():
                    out[attr][i] = value
            if progress is not None:
                progress(len(idx))
        return out

    def _safe_batch(self, batch: list[str]) -> list[dict[str, float]]:
        try:
            return self._rows(self._score_batch(batch), len(batch))
        except Exception as exc:  # noqa: BLE001 - any scorer failure becomes NaN, counted
            if len(batch) == 1:
                log.warning("%s failed on one text: %s", self.name, exc)
                return [{a: math.nan for a in self.attributes}]
            return [row for text in batch for row in self._safe_batch([text])]

    def _rows(self, result: dict[str, Sequence[float]], n: int) -> list[dict[str, float]]:
        rows = [dict() for _ in range(n)]
        for attr in self.attributes:
            values = np.asarray(result[attr], dtype=np.float64)
            if values.shape != (n,):
                raise ValueError(f"{self.name}: expected {n} scores for {attr}, got {values.shape}")
            for row, v in zip(rows, values):
                row[attr] = float(v) if 0.0 <= v <= 1.0 else math.nan
        return rows

    def coverage(self, language: str) -> str:
        """How this scorer judges a language: "validated", "zero-shot" or "none"."""
        return language_coverage(self.info(), language)

    def info(self) -> dict:
        validated = self.languages if self.validated_languages is None else self.validated_languages
        return {"name": self.name, "version": self.version, "attributes": list(self.attributes),
                "languages": list(self.languages), "validated_languages": list(validated),
                "guided_by": list(self.guided_by)}


def language_coverage(info: dict, language: str) -> str:
    """"validated", "zero-shot" or "none": how a scorer (its info()) covers a language. A scorer
    recorded before validated_languages existed counts its languages as validated."""
    covered = set(info.get("languages") or ())
    validated = set(info.get("validated_languages", covered))
    if language in validated or "*" in validated:
        return "validated"
    if language in covered or "*" in covered:
        return "zero-shot"
    return "none"


_INSTANCES: dict[tuple, Scorer] = {}


def scorer_arguments(spec: str) -> tuple[str, dict]:
    """(registry name, constructor settings) of a scorer spec (the grammar of detoxkit/specs.py).

    A registered name is used as is; `hf:unitary/toxic-bert`, `hf:/path/to/model` or
    `detoxify:unbiased` pass their argument as the scorer's `model`; `name:key=value,...`
    passes settings, e.g. `hf:unitary/toxic-bert,labels=toxic:toxicity`."""
    from ..registry import SCORERS
    from ..specs import parse_spec

    if spec in SCORERS:
        return spec, {}
    parsed = parse_spec(spec)
    settings = dict(parsed.settings)
    if parsed.arg is not None:
        settings["model"] = parsed.arg
    return parsed.name, settings


def load_scorer(spec: str, device: str = "cpu", batch_size: int | None = None, **kwargs) -> Scorer:
    """The scorer a spec names, built once per process and settings."""
    from ..registry import SCORERS
    from ..specs import construct

    key = (spec, device, batch_size, tuple(sorted(kwargs.items())))
    if key not in _INSTANCES:
        name, settings = scorer_arguments(spec)
        settings.update(kwargs)
        if batch_size:
            settings["batch_size"] = batch_size
        _INSTANCES[key] = construct("scorer", name, SCORERS.load(name), settings, device=device)
    return _INSTANCES[key]


def check_scorer_spec(spec: str) -> None:
    """Check a scorer spec's name and setting names without loading its model."""
    from ..registry import SCORERS
    from ..specs import check_settings

    name, settings = scorer_arguments(spec)
    check_settings("scorer", name, SCORERS.load(name), settings, hidden=("device",))
