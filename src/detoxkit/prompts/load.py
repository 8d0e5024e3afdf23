"""`load_prompts(spec)`: registered name or path, with deterministic stratified --limit."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

from ..errors import DetoxkitError, InputError
from . import Prompt, PromptSet, fingerprint_prompts

GROUPS = ("toxic", "nontoxic", "unknown")


def load_prompts(spec: str | Path, *, limit: int | None = None, seed: int = 0,
                 text_field: str | None = None, on_bad: str = "error",
                 group_field: str | None = None) -> PromptSet:
    """A prompt set from a registered name (`detoxkit ls prompts`) or a file path.

    limit: keep a seeded subset of that many prompts, stratified by prompt toxicity.
    text_field: the text column of a generic file (default "text"; ignored for
    registered sets). on_bad: "error" (raise at the first bad row) or "skip"
    (skip bad rows, listed in PromptSet.skipped). group_field: the column of a generic file
    that names each prompt's group (default "group")."""
    from ..registry import PROMPTS
    from .files import FORMATS, ON_BAD, read_prompt_file

    if on_bad not in ON_BAD:
        raise DetoxkitError(f"on_bad must be one of {', '.join(ON_BAD)}, not {on_bad!r}")
    spec_str = str(spec)
    if spec_str in PROMPTS:
        pset = PROMPTS.load(spec_str)(on_bad=on_bad)
    elif spec_str.split(":", 1)[0] in PROMPTS and not Path(spec_str).exists():
        pset = _load_with_settings(spec_str, on_bad)  # e.g. ptp-small:languages=(de,fr)
    else:
        from .multilingual import read_sniffed, sniff_format

        path = Path(spec_str).expanduser()
        if path.is_dir():
            raise InputError("is a directory; --prompts takes a prompt file (.jsonl, .csv, .tsv, "
                             ".parquet) or a registered name (`detoxkit ls prompts`)", path=spec_str)
        from .groups import read_group_file, sniff_group_format

        group_fmt = sniff_group_format(path) if text_field is None else None
        fmt = sniff_format(path) if path.is_file() and text_field is None and not group_fmt else None
        if group_fmt:  # a BOLD or ToxiGen file, read in its own format
            pset = read_group_file(path, group_fmt, on_bad)
        elif fmt:  # a PolygloToxicityPrompts or RTP-LX file, read with its own field mapping
            pset = read_sniffed(path, fmt, on_bad)
        elif path.exists():
            pset = read_prompt_file(path, text_field=text_field, on_bad=on_bad,
                                    group_field=group_field)
        elif "/" in spec_str or "\\" in spec_str or path.suffix.lower() in FORMATS:
            raise InputError("no such file", path=spec_str)
        else:
            try:
                PROMPTS.entry(spec_str)
            except DetoxkitError as exc:
                raise DetoxkitError(f"{exc}; and no file '{spec_str}' exists") from None
            raise AssertionError("unreachable")  # pragma: no cover
    return limit_prompts(pset, limit, seed) if limit is not None else pset


def _load_with_settings(spec: str, on_bad: str) -> PromptSet:
    """A registered set with settings: `NAME:ARG` (its languages) or `NAME:key=value,...`."""
    import inspect

    from ..registry import PROMPTS
    from ..specs import parse_spec

    parsed = parse_spec(spec)
    settings = dict(parsed.settings)
    if parsed.arg is not None:
        settings["languages"] = parsed.arg
    loader = PROMPTS.load(parsed.name)
    allowed = set(inspect.signature(loader).parameters) - {"on_bad"}
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise DetoxkitError(f"prompt set '{parsed.name}' has no setting {', '.join(unknown)}"
                            f" (it takes: {', '.join(sorted(allowed)) or 'none'})")
    return loader(on_bad=on_bad, **{k: str(v) if v is not None else None for k, v in settings.items()})


def seeded_key(seed: int, key: str) -> bytes:
    """A per-item sort key: sorting by it is a seeded shuffle that does not depend on
    numpy/Python RNG versions, and a smaller subset is a prefix of a larger one."""
    return hashlib.sha256(f"{seed}\x00{key}".encode("utf-8")).digest()


def _group(p: Prompt) -> str:
    return "unknown" if p.is_toxic is None else ("toxic" if p.is_toxic else "nontoxic")


def stratified_indices(prompts: list[Prompt], limit: int, seed: int = 0) -> list[int]:
    """Indices of `limit` prompts keeping the toxic / non-toxic / unknown proportions
    (largest-remainder rounding), chosen by seeded hash of the id, in original order."""
    if limit < 1:
        raise DetoxkitError(f"limit must be >= 1, not {limit}")
    if limit >= len(prompts):
        return list(range(len(prompts)))
    members: dict[str, list[int]] = {g: [] for g in GROUPS}
    for i, p in enumerate(prompts):
        members[_group(p)].append(i)
    exact = {g: limit * len(members[g]) / len(prompts) for g in GROUPS}
    quota = {g: math.floor(exact[g]) for g in GROUPS}
    by_remainder = sorted(GROUPS, key=lambda g: (-(exact[g] - quota[g]), GROUPS.index(g)))
    for g in by_remainder[:limit - sum(quota.values())]:
        quota[g] += 1
    chosen: list[int] = []
    for g in GROUPS:
        ranked = sorted(members[g], key=lambda i: seeded_key(seed, prompts[i].id))
        chosen.extend(ranked[:quota[g]])
    return sorted(chosen)


def limit_prompts(pset: PromptSet, limit: int, seed: int = 0) -> PromptSet:
    """The stratified, seeded subset of `limit` prompts (the whole set if it is smaller)."""
    idx = stratified_indices(pset.prompts, limit, seed)
    chosen = [pset.prompts[i] for i in idx]
    provenance = {**pset.provenance, "limit": limit, "limit_seed": seed,
                  "n_before_limit": len(pset), "fingerprint_before_limit": pset.fingerprint}
    return PromptSet(chosen, pset.name, pset.source, fingerprint_prompts(chosen), provenance,
                     pset.skipped)
