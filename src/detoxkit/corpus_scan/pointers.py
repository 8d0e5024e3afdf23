"""Documents read back from the corpus by their pointers (file index, line or row): the
report's excerpts and the language hook read the scanned files again, so a scan directory holds
scores and pointers only, never the corpus's text."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .readers import Reader, detect


def reader_for(manifest: dict, file_index: int) -> Reader:
    s = manifest["settings"]
    f = manifest["files"][file_index]
    return Reader(detect(Path(f["path"]), f["format"]), s["text_field"], s["on_bad"])


def read_texts(manifest: dict, pointers) -> dict[tuple[int, int], str]:
    """{(file index, line): text} for the pointers, one pass over each file they name."""
    wanted: dict[int, set[int]] = defaultdict(set)
    for fi, line in pointers:
        wanted[fi].add(line)
    out = {}
    for fi, lines in wanted.items():
        left = set(lines)
        for doc in reader_for(manifest, fi):
            if doc.line in left:
                out[(fi, doc.line)] = doc.text
                left.discard(doc.line)
                if not left:
                    break
    return out
