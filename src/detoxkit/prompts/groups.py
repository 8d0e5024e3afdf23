"""Prompt sets about demographic groups: BOLD and ToxiGen, by name or from local files in their
own formats. Every prompt carries `meta["domain"]` and `meta["group"]`, which metrics.py turns
into per-group metrics and per-domain disparities.

BOLD (Dhamala et al. 2021; github amazon-science/bold, CC-BY-SA-4.0): one file per domain,
`prompts/<domain>_prompt.json`, holding `{group: {entity: [prompt, ...]}}` (the domains: gender,
race, profession, political_ideology, religious_ideology). ToxiGen (Hartvigsen et al. 2022;
github microsoft/TOXIGEN, MIT): `prompts/{hate,neutral}_<group>_1k.txt`, one few-shot prompt a
line, its statements separated by a literal backslash-n and a dash (`- a\\n- b\\n-`). A ToxiGen
prompt's domain is its kind (`hate` or `neutral`), so that groups are compared within one kind.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..errors import DetoxkitError, InputError
from . import Prompt, PromptSet, fingerprint_prompts
from .fetch import fetch_files, local_files, pick
from .files import BadRows

BOLD_REPO = "amazon-science/bold"
BOLD_URL = "https://raw.githubusercontent.com/amazon-science/bold/main/prompts/{}_prompt.json"
BOLD_DOMAINS = ("gender", "race", "profession", "political_ideology", "religious_ideology")
TOXIGEN_REPO = "microsoft/TOXIGEN"
TOXIGEN_URL = "https://raw.githubusercontent.com/microsoft/TOXIGEN/main/prompts/{}_{}_1k.txt"
TOXIGEN_GROUPS = ("asian", "bisexual", "black", "chinese", "immigrant", "jewish", "latino", "lgbtq",
                  "mental_disability", "mexican", "middle_east", "muslim", "native_american",
                  "physical_disability", "trans", "women")
TOXIGEN_KINDS = ("hate", "neutral")
_BOLD_FILE = re.compile(r"(.+)_prompt\.json$")
_TOXIGEN_FILE = re.compile(r"(hate|neutral)_(.+?)_1k\.txt$")


# ---- BOLD -----------------------------------------------------------------------------------

def _line_of(text: str, needle: str, start: int = 0) -> tuple[int, int]:
    """(1-based line, offset) of `needle` in text from `start` (BOLD files are one JSON
    object, often on one line: errors name the line and the JSON path as the field)."""
    pos = text.find(needle, start)
    pos = start if pos < 0 else pos
    return text.count("\n", 0, pos) + 1, pos


def read_bold_file(path: str | Path, bad: BadRows, domain: str | None = None) -> list[Prompt]:
    path = Path(path)
    m = _BOLD_FILE.search(path.name)
    domain = domain or (m.group(1) if m else path.stem)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise InputError(f"invalid UTF-8 at byte {exc.start + 1}", path=str(path), line=line) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON: {exc.msg} (column {exc.colno})", path=str(path),
                         line=exc.lineno) from None
    if not isinstance(data, dict):
        raise InputError("expected BOLD's {group: {entity: [prompt, ...]}} object", path=str(path),
                         line=1)
    prompts, pos = [], 0
    for group, entities in data.items():
        line, pos = _line_of(text, json.dumps(group, ensure_ascii=False)[:-1], pos)
        if not isinstance(entities, dict):
            bad(f"expected an object of entities, got {type(entities).__name__}", line=line, field=group)
            continue
        for entity, texts in entities.items():
            line, pos = _line_of(text, json.dumps(entity, ensure_ascii=False)[:-1], pos)
            field = f"{group}.{entity}"
            if not isinstance(texts, list):
                bad(f"expected a list of prompts, got {type(texts).__name__}", line=line, field=field)
                continue
            for i, value in enumerate(texts):
                where = f"{field}[{i}]"
                if not isinstance(value, str):
                    bad(f"expected a string, got {type(value).__name__}", line=line, field=where)
                elif not value.strip():
                    bad("empty prompt (blank or whitespace only)", line=line, field=where)
                elif "\x00" in value:
                    bad("the text holds a NUL character (\\x00)", line=line, field=where)
                else:
                    prompts.append(Prompt(f"bold-{domain}-{group}-{entity}-{i}", value, None, None, {
                        "line": line, "source": "bold", "domain": domain, "group": group,
                        "entity": entity, "language": "en"}))  # English Wikipedia
    return prompts


def read_bold_files(paths: list[str | Path], on_bad: str = "error", extra: dict | None = None) -> PromptSet:
    return _collect("bold", paths, lambda p, bad: read_bold_file(p, bad), on_bad, extra)


# ---- ToxiGen --------------------------------------------------------------------------------

def toxigen_statements(prompt_text: str) -> list[str]:
    """The statements of one ToxiGen prompt line (its `- ` items; the trailing `-` is the slot
    the generator fills)."""
    parts = prompt_text.replace("\\n", "\n").split("\n")
    return [p[1:].strip() for p in parts if p.startswith("-") and p[1:].strip()]


def read_toxigen_file(path: str | Path, bad: BadRows, kind: str | None = None,
                      group: str | None = None) -> list[Prompt]:
    path = Path(path)
    m = _TOXIGEN_FILE.search(path.name)
    if m is None and (kind is None or group is None):
        raise InputError("a ToxiGen prompt file is named {hate,neutral}_<group>_1k.txt (its kind "
                         "and group come from the name)", path=str(path))
    kind, group = kind or m.group(1), group or m.group(2)
    prompts = []
    for line, raw in enumerate(path.read_bytes().split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as exc:
            bad(f"invalid UTF-8 at byte {exc.start + 1} of the line", line=line)
            continue
        if "\x00" in text:
            bad("the text holds a NUL character (\\x00)", line=line, field="text")
            continue
        if not toxigen_statements(text):
            bad("no '- statement' items on the line", line=line, field="text")
            continue
        # the generator continues after the final "-", as ToxiGen's own prompts are used
        prompt = text.replace("\\n", "\n")
        prompts.append(Prompt(f"toxigen-{kind}-{group}-{line}", prompt, None, None, {
            "line": line, "source": "toxigen", "domain": kind, "group": group, "kind": kind,
            "language": "en"}))
    return prompts


def read_toxigen_files(paths: list[str | Path], on_bad: str = "error", extra: dict | None = None) -> PromptSet:
    return _collect("toxigen", paths, lambda p, bad: read_toxigen_file(p, bad), on_bad, extra)


# ---- shared ---------------------------------------------------------------------------------

def _collect(name: str, paths: list[str | Path], read, on_bad: str, extra: dict | None) -> PromptSet:
    from ..artefacts import file_sha256

    prompts, skipped = [], []
    for p in map(Path, paths):
        if not p.is_file():
            raise InputError("no such file", path=str(p))
        bad = BadRows(str(p), on_bad)
        prompts += read(p, bad)
        skipped += bad.skipped
    if not prompts:
        raise InputError(f"no usable prompts ({len(skipped)} rows skipped)", path=str(paths[0]))
    source = str(paths[0]) if len(paths) == 1 else str(Path(paths[0]).parent)
    provenance = {"kind": "hub" if (extra or {}).get("via") else "file", "format": name,
                  "files": [{"path": str(p), "sha256": file_sha256(Path(p))} for p in paths],
                  **(extra or {})}
    return PromptSet(prompts, name, source, fingerprint_prompts(prompts), provenance, skipped)


def sniff_group_format(path: Path) -> str | None:
    """"bold" or "toxigen" when a file is in one of their formats, else None."""
    if _TOXIGEN_FILE.search(path.name) and path.is_file():
        return "toxigen"
    if path.suffix.lower() == ".json" and path.is_file():
        with open(path, "rb") as fh:
            head = fh.read(4096).lstrip(b"\xef\xbb\xbf").lstrip()
        # BOLD: an object whose first value is an object of lists ({"group": {"entity": [...]}})
        if re.match(rb'\{\s*"[^"]*"\s*:\s*\{\s*"[^"]*"\s*:\s*\[', head):
            return "bold"
    return None


def read_group_file(path: Path, fmt: str, on_bad: str) -> PromptSet:
    return read_bold_files([path], on_bad) if fmt == "bold" else read_toxigen_files([path], on_bad)


def per_group_subset(pset: PromptSet, per_group: Any) -> PromptSet:
    """At most `per_group` prompts of each (domain, group), chosen by seeded hash of the id (seed
    0), in file order: BOLD's groups differ in size by 50x, so a plain --limit leaves the small
    ones with a handful of prompts."""
    if per_group in (None, ""):
        return pset
    from .load import seeded_key

    n = int(per_group)
    if n < 1:
        raise DetoxkitError(f"per_group must be >= 1, not {n}")
    members: dict[tuple, list[int]] = {}
    for i, p in enumerate(pset.prompts):
        members.setdefault((p.meta.get("domain"), p.meta.get("group")), []).append(i)
    keep = sorted(i for idx in members.values()
                  for i in sorted(idx, key=lambda i: seeded_key(0, pset.prompts[i].id))[:n])
    chosen = [pset.prompts[i] for i in keep]
    return PromptSet(chosen, pset.name, pset.source, fingerprint_prompts(chosen),
                     {**pset.provenance, "per_group": n, "n_before_per_group": len(pset)}, pset.skipped)


def load_bold(on_bad: str = "error", domains: Any = None, dir: str | None = None,  # noqa: A002
              per_group: Any = None) -> PromptSet:
    """BOLD: every domain (or `domains=(gender,race)`), from GitHub (cached) or `dir=PATH`;
    `per_group=N` keeps N prompts of each group."""
    return per_group_subset(_load_bold(on_bad, domains, dir), per_group)


def _load_bold(on_bad: str, domains: Any, dir: str | None) -> PromptSet:  # noqa: A002
    chosen = pick(domains, BOLD_DOMAINS, "bold")
    how = ("`--prompts bold:dir=PATH` with PATH holding BOLD's <domain>_prompt.json files (folder "
           f"prompts/ of github.com/{BOLD_REPO}), or one file: `--prompts PATH/gender_prompt.json`")
    if dir is not None:
        return read_bold_files(local_files(dir, [f"{d}_prompt.json" for d in chosen],
                                           "<domain>_prompt.json"), on_bad)
    files = fetch_files("bold", [(BOLD_URL.format(d), f"{d}_prompt.json") for d in chosen], BOLD_REPO, how)
    return read_bold_files(files, on_bad, extra={"via": "https", "repo": BOLD_REPO})


def load_toxigen(on_bad: str = "error", kind: Any = None, groups: Any = None,
                 dir: str | None = None, per_group: Any = None) -> PromptSet:  # noqa: A002
    """ToxiGen's prompts: both kinds (or `kind=hate|neutral`) and every group (or
    `groups=(asian,women)`), from GitHub (cached) or `dir=PATH`; `per_group=N` keeps N prompts
    of each kind and group."""
    return per_group_subset(_load_toxigen(on_bad, kind, groups, dir), per_group)


def _load_toxigen(on_bad: str, kind: Any, groups: Any, dir: str | None) -> PromptSet:  # noqa: A002
    kinds = pick(kind, TOXIGEN_KINDS, "toxigen kind")
    chosen = pick(groups, TOXIGEN_GROUPS, "toxigen groups")
    how = ("`--prompts toxigen:dir=PATH` with PATH holding ToxiGen's {hate,neutral}_<group>_1k.txt "
           f"files (folder prompts/ of github.com/{TOXIGEN_REPO}), or one file: "
           "`--prompts PATH/hate_asian_1k.txt`")
    names = [(k, g) for k in kinds for g in chosen]
    if dir is not None:
        return read_toxigen_files(local_files(dir, [f"{k}_{g}_1k.txt" for k, g in names],
                                              "{hate,neutral}_<group>_1k.txt"), on_bad)
    files = fetch_files("toxigen", [(TOXIGEN_URL.format(k, g), f"{k}_{g}_1k.txt") for k, g in names],
                       TOXIGEN_REPO, how)
    return read_toxigen_files(files, on_bad, extra={"via": "https", "repo": TOXIGEN_REPO})
