"""Token attribution for reports: which words of a sample make it toxic.

An attribution maps texts to spans `(start, end, effect)` over each text's
characters, where a larger effect means the span pushes the text toward toxic.
The HTML report highlights the top spans of the samples it shows.

Two kinds ship here:

- `OcclusionAttribution`: leave-one-word-out with any scorer. A word's effect
  is the drop in the scorer's toxicity when that word alone is removed. It
  needs nothing but the scorer, so it works for every scorer (and is exactly
  what that scorer "sees"), at the cost of one extra score per word.
- `TokenTableAttribution`: a table {token: effect}, for example a CFL token
  table exported as JSON. Words of the text are matched to table entries
  (case-folded, word-piece markers and surrounding punctuation stripped).

Any callable `texts -> list[list[(start, end, effect)]]` with a `label` works too.
`resolve_attributions` turns a report's --attribution setting into one
attribution per run.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from .errors import DetoxkitError

if TYPE_CHECKING:
    from .report.runs import Run

Span = tuple[int, int, float]
_WORD = re.compile(r"\S+")
_PUNCT = "\"'“”‘’.,;:!?()[]{}<>*_-–—…"


class Attribution(Protocol):
    label: str  # short name shown next to highlights, e.g. "occlusion with profanity-svm 1.0"
    description: str  # one sentence: what a highlight means
    min_effect: float  # spans below this effect are not highlighted

    def __call__(self, texts: Sequence[str]) -> list[list[Span]]: ...


def words(text: str, limit: int | None = None) -> list[tuple[int, int]]:
    spans = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    return spans[:limit] if limit else spans


class OcclusionAttribution:
    """Leave-one-word-out occlusion with a scorer (scorer-agnostic, honest, one score per word)."""

    min_effect = 0.05

    def __init__(self, scorer, attribute: str = "toxicity", max_words: int = 64):
        self.scorer = scorer
        self.attribute = attribute
        self.max_words = max_words
        name = getattr(scorer, "name", type(scorer).__name__)
        version = getattr(scorer, "version", "")
        self.label = f"leave-one-word-out occlusion with {name} {version}".strip()
        self.description = (f"a highlighted word's removal lowers {name}'s {attribute} score by "
                            "the amount shown when hovering it")

    def __call__(self, texts: Sequence[str]) -> list[list[Span]]:
        variants, owners = [], []
        per_text = []
        for t, text in enumerate(texts):
            spans = words(text, self.max_words)
            per_text.append(spans)
            variants.append(text)
            owners.append((t, None))
            for s, e in spans:
                variants.append(text[:s] + text[e:])
                owners.append((t, (s, e)))
        if not variants:
            return []
        scores = self.scorer.score(variants)[self.attribute]
        base: dict[int, float] = {}
        out: list[list[Span]] = [[] for _ in texts]
        for (t, span), value in zip(owners, scores):
            value = float(value)
            if span is None:
                base[t] = value
            elif not math.isnan(value) and not math.isnan(base.get(t, math.nan)):
                out[t].append((span[0], span[1], base[t] - value))
        return out


def _norm(token: str) -> str:
    return token.replace("Ġ", "").replace("▁", "").strip().lower().strip(_PUNCT)


class TokenTableAttribution:
    """Effects from a {token: effect} table, matched to the words of each text."""

    min_effect = 1e-9

    def __init__(self, table: dict[str, float], label: str = "token table"):
        self.table: dict[str, float] = {}
        for token, effect in table.items():
            key = _norm(str(token))
            if key and isinstance(effect, (int, float)) and not math.isnan(effect):
                self.table[key] = max(float(effect), self.table.get(key, -math.inf))
        if not self.table:
            raise DetoxkitError(f"{label}: the token table has no usable entries")
        self.label = label
        self.description = ("a highlighted word's entry in the token table (its learned "
                            "toxicity effect) is shown when hovering it")

    @classmethod
    def from_file(cls, path: str | Path) -> "TokenTableAttribution":
        """A JSON object {token: effect}, or one with the table under "effects"/"table"/"tokens"."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DetoxkitError(f"{path}: no such token table") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DetoxkitError(f"{path}: not a JSON token table ({exc})") from None
        if isinstance(data, dict):
            for key in ("effects", "table", "tokens"):
                if isinstance(data.get(key), dict):
                    data = data[key]
                    break
        if not isinstance(data, dict):
            raise DetoxkitError(f"{path}: expected a JSON object {{token: effect}}")
        return cls(data, label=f"token table {path.name}")

    def __call__(self, texts: Sequence[str]) -> list[list[Span]]:
        out = []
        for text in texts:
            spans = []
            for s, e in words(text):
                effect = self.table.get(_norm(text[s:e]))
                if effect is not None:
                    spans.append((s, e, effect))
            out.append(spans)
        return out


class CallableAttribution:
    """Wrap a plain function texts -> spans with a label."""

    def __init__(self, fn: Callable[[Sequence[str]], list[list[Span]]], label: str,
                 description: str = "a highlighted span's attributed toxicity effect is shown "
                 "when hovering it", min_effect: float = 1e-9):
        self.fn, self.label, self.description, self.min_effect = fn, label, description, min_effect

    def __call__(self, texts):
        return self.fn(texts)


def top_spans(spans: list[Span], n: int, min_effect: float) -> list[Span]:
    """The n strongest non-overlapping spans at or above min_effect, in text order."""
    chosen: list[Span] = []
    for s in sorted(spans, key=lambda x: -x[2]):
        if len(chosen) >= n or s[2] < min_effect:
            break
        if all(s[1] <= c[0] or s[0] >= c[1] for c in chosen):
            chosen.append(s)
    return sorted(chosen)


# ---- choosing an attribution for each run of a report ------------------------------------

def resolve_attributions(runs: list[Run], spec: Any) -> tuple[dict[str, Attribution | None], list[str]]:
    """{run label: attribution or None} and notes on what was used or why none was.

    spec: "auto" (occlusion with each run's judge when it loads, else none), "occlusion"
    (the same, failing loudly), "none"/None, "table:PATH" or a .json path (a {token: effect}
    table such as an exported CFL table), a dict table, or an Attribution / callable."""
    notes: list[str] = []
    if spec is None or spec == "none":
        return {r.label: None for r in runs}, ["No token attribution was requested."]
    if isinstance(spec, dict):
        attr = TokenTableAttribution(spec)
        return {r.label: attr for r in runs}, []
    if callable(spec):
        attr = spec if hasattr(spec, "label") else CallableAttribution(spec, "custom attribution")
        return {r.label: attr for r in runs}, []
    spec = str(spec)
    if spec == "cfl":
        return _cfl_attributions(runs), []
    if spec.startswith("table:") or spec.endswith(".json"):
        attr = TokenTableAttribution.from_file(spec[len("table:"):] if spec.startswith("table:")
                                               else spec)
        return {r.label: attr for r in runs}, []
    if spec not in ("auto", "occlusion"):
        raise DetoxkitError(f"unknown attribution '{spec}'; use auto, occlusion, cfl, none, or "
                            "table:PATH (a JSON {token: effect} table)")
    from .scorers import load_scorer

    by_judge: dict[str, Attribution | None] = {}
    out = {}
    for r in runs:
        name = r.judge.get("name")
        if name not in by_judge:
            try:
                scorer = load_scorer(name)
            except Exception as exc:  # noqa: BLE001 - any load failure: report it, or raise
                if spec == "occlusion":
                    raise DetoxkitError(f"occlusion attribution needs the judging scorer "
                                        f"'{name}', which could not be loaded: {exc}") from None
                notes.append(f"No token attribution for runs judged by {name}: the scorer "
                             f"could not be loaded here ({exc}).")
                by_judge[name] = None
            else:
                attr = OcclusionAttribution(scorer)
                recorded = r.judge.get("version")
                if recorded and getattr(scorer, "version", None) != recorded:
                    notes.append(f"Token attribution uses {name} version {scorer.version}; the "
                                 f"run was judged by version {recorded}.")
                by_judge[name] = attr
        out[r.label] = by_judge[name]
    return out, notes


def _cfl_path(method: dict) -> str | None:
    """The table path a CFL method was given, also inside a chain."""
    if method.get("name") == "cfl":
        return (method.get("settings") or {}).get("path")
    for m in (method.get("settings") or {}).get("methods", []) if method.get("name") == "chain" else []:
        if m.get("name") == "cfl":
            return (m.get("settings") or {}).get("path")
    return None


def _cfl_attributions(runs: list[Run]) -> dict[str, Attribution]:
    """Each run's CFL token table for its model's tokenizer, as word attribution."""
    try:
        from transformers import AutoTokenizer

        from .methods.tables import token_effects
    except ImportError as exc:
        raise DetoxkitError(f"CFL attribution is not available here ({exc})") from None
    from .report.runs import short_model_name  # here: the report package imports this module

    cache: dict[tuple, Attribution] = {}
    out = {}
    for r in runs:
        where = r.model.get("path") or r.model.get("name")
        key = (where, _cfl_path(r.method))
        if key not in cache:
            try:
                tokenizer = AutoTokenizer.from_pretrained(where)
                table = token_effects(tokenizer, key[1])
            except Exception as exc:  # noqa: BLE001 - name the run and the reason
                raise DetoxkitError(f"run {r.label}: no CFL token table for model {where}: {exc}") from None
            attr = TokenTableAttribution(table, label=f"CFL token table of {short_model_name(r.model.get('name'))}")
            attr.description = ("a highlighted word's CFL effect (average treatment effect of the "
                                "token on the toxicity of the scorer the table was estimated with) "
                                "is shown when hovering it")
            attr.min_effect = 0.05  # in score units, like occlusion: ignore effects under 0.05
            cache[key] = attr
        out[r.label] = cache[key]
    return out
