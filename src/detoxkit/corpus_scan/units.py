"""Scored units of a document: sentences, fixed windows of tokens, or the whole document.

A unit is a (start, end) character span of the document, so the filter can rebuild a document
from the units it keeps. Tokens here are whitespace-separated words (the same count for every
scorer, and the count the filter reports); a sentence longer than `size` tokens is cut into
windows of `size` tokens, so no unit is longer than a scorer reads.
"""

from __future__ import annotations

import re

UNIT_MODES = ("sentences", "tokens", "doc")
_WORD = re.compile(r"\S+")
# a sentence ends after . ! ? or an ellipsis (and closing quotes or brackets), before whitespace;
# a line break always ends one
_BOUNDARY = re.compile(r"(?<=[.!?\u2026])[\"'\u201d\u2019)\]]*(?=\s)|\n")


def count_tokens(text: str) -> int:
    return sum(1 for _ in _WORD.finditer(text))


def split_units(text: str, mode: str = "sentences", size: int = 64) -> list[tuple[int, int]]:
    """Character spans of `text`'s units, in order, each stripped of surrounding whitespace.
    mode: sentences (at most `size` tokens each), tokens (windows of `size` tokens) or doc
    (the whole text). A text of whitespace only has no units."""
    if mode not in UNIT_MODES:
        raise ValueError(f"unit mode must be one of {', '.join(UNIT_MODES)}, not {mode!r}")
    if size < 1:
        raise ValueError(f"unit size must be >= 1, not {size}")
    if mode == "doc":
        span = _strip(text, 0, len(text))
        return [span] if span else []
    if mode == "tokens":
        return _windows(text, 0, len(text), size)
    spans, start = [], 0
    for m in _BOUNDARY.finditer(text):
        spans += _windows(text, start, m.end(), size)
        start = m.end()
    spans += _windows(text, start, len(text), size)
    return spans


def _strip(text: str, start: int, end: int) -> tuple[int, int] | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if end > start else None


def _windows(text: str, start: int, end: int, size: int) -> list[tuple[int, int]]:
    """text[start:end] as windows of at most `size` tokens (one window when it is short)."""
    words = [(m.start(), m.end()) for m in _WORD.finditer(text, start, end)]
    return [(words[i][0], words[min(i + size, len(words)) - 1][1])
            for i in range(0, len(words), size)]
