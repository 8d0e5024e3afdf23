"""The protocol's prompts: the Language Matters paper's LMSYS-toxic files, or any prompt set.

LMSYS-toxic layout: `<root>/<lang>/test.jsonl`, one JSON object per line with `prompt` (the
original prompt) and `translated` (its translation into <lang>; the text used, falling back to
`prompt` where a row has none). `--prompts ROOT` reads every language folder, `--prompts
ROOT/<lang>/test.jsonl` one. Any other spec goes through `load_prompts` (a prompt file with a
`language` column, PTP, RTP-LX, ...): each prompt's language is the set's, else detected.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..lang import normalize_language
from ..prompts import Prompt, limit_prompts, load_prompts
from ..prompts.files import _MISSING, BadRows, _jsonl_records, _text


def _lmsys_file(path: Path, lang: str, bad: BadRows) -> list[Prompt]:
    out = []
    for rec in _jsonl_records(path.read_bytes(), bad):
        d = rec.data
        field = "translated" if isinstance(d.get("translated"), str) and d["translated"].strip() else "prompt"
        text = _text(d.get(field, _MISSING), rec, field, bad)
        if text is None:
            continue
        meta = {"line": rec.line, "language": lang, "source": "lmsys-toxic", "text_field": field}
        if field == "translated" and isinstance(d.get("prompt"), str):
            meta["original"] = d["prompt"]
        out.append(Prompt(str(d.get("id") or f"{lang}-{rec.line}"), text, None, None, meta))
    return out


def _lmsys_files(spec: str) -> list[tuple[Path, str]]:
    path = Path(spec).expanduser()
    if path.is_dir():
        return sorted((f, f.parent.name) for f in path.glob("*/test.jsonl"))
    if path.is_file() and path.name == "test.jsonl" and normalize_language(path.parent.name):
        return [(path, path.parent.name)]
    return []


def load_langmatters_prompts(spec: str, *, limit: int | None = None, seed: int = 0,
                             text_field: str | None = None,
                             on_bad: str = "error") -> list[tuple[Prompt, str]]:
    """(prompt, its language) pairs."""
    from ..prompts import PromptSet, fingerprint_prompts
    from ..runner import with_language

    files = _lmsys_files(spec)
    if files:
        prompts: list[Prompt] = []
        for path, lang in files:
            prompts += _lmsys_file(path, normalize_language(lang), BadRows(str(path), on_bad))
        if not prompts:
            raise InputError("no usable prompts", path=spec)
        pset = PromptSet(prompts, "lmsys-toxic", spec, fingerprint_prompts(prompts))
        if limit is not None:
            pset = limit_prompts(pset, limit, seed)
    elif Path(spec).expanduser().is_dir():
        raise InputError("is a directory without <lang>/test.jsonl files (the LMSYS-toxic "
                         "layout); pass a prompt file or set name instead", path=spec)
    else:
        pset = load_prompts(spec, limit=limit, seed=seed, text_field=text_field, on_bad=on_bad)
    out = []
    for p in pset.prompts:
        meta = with_language(p.meta, p.text)
        out.append((Prompt(p.id, p.text, p.toxicity, p.challenging, meta), meta["language"]))
    return out
