"""Word banning: every token sequence that spells a listed word is blocked at every step.

Each word is expanded into variants (as written, lower case, Capitalised, UPPER
case; each with and without a leading space) and every variant is tokenized
with the model's tokenizer. A single-token variant gets -inf always; the last
token of a multi-token variant gets -inf when the tokens before it match the
end of the sequence so far. A variant without a leading space is blocked only
at a word boundary (after a token that does not end in a letter or digit), so
that a listed word is not blocked inside a longer word.

The default list (src/detoxkit/data/methods/banned_words.txt) is built by
`detoxkit train banlist` from the corpus's training pool: lower-cased words with
at least `min_count` toxic rows whose smoothed log-odds of appearing in a toxic
rather than a non-toxic row is highest, kept when profanity-svm rates the word
alone as offensive (see training/banlist.py). Pass your own
list with `wordban:words=PATH` (one word or phrase per line, `#` comments).

Only the canonical tokenization of each variant is blocked; a model can still
spell a word through other token splits (rare in practice for common words).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..artefacts import file_sha256, find_artefact, tokenizer_fingerprint
from ..corpus import CORPUS_TAG
from ..errors import DetoxkitError
from ..tokens import vocab_width
from .base import ALL_BACKENDS, DetoxMethod, LogitsTransform

DEFAULT_LIST = "banned_words.txt"
GUIDED_BY_LINE = "# guided_by: "  # a header line of lists built by `detoxkit train banlist`


def read_word_list(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DetoxkitError(f"word list {path} not found") from None
    return [w.strip() for w in lines if w.strip() and not w.lstrip().startswith("#")]


def list_meta(path: Path) -> dict:
    """{"guided_by": JSON text} from a list's header, when `detoxkit train banlist` wrote one."""
    if not path.exists():
        return {}  # word_list() reports the missing file
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.startswith("#"):
                break
            if line.startswith(GUIDED_BY_LINE):
                return {"guided_by": line[len(GUIDED_BY_LINE):].strip()}
    return {}


def default_list_path() -> Path:
    return find_artefact(DEFAULT_LIST, train_hint="detoxkit train banlist")


def variants(word: str, case: bool = True) -> list[tuple[str, bool]]:
    """(text, needs_boundary) variants of a word."""
    forms = {word}
    if case:
        forms |= {word.lower(), word[:1].upper() + word[1:].lower(), word.upper()}
    out = []
    for f in sorted(forms):
        out.append((" " + f, False))
        out.append((f, True))
    return out


class BanTable:
    """A word list compiled for one tokenizer."""

    def __init__(self, tokenizer, words: list[str], case: bool = True):
        self.single: set[int] = set()  # banned always
        self.single_boundary: set[int] = set()  # banned after a boundary token
        self.multi: dict[tuple[int, ...], list[tuple[int, bool]]] = {}
        for word in words:
            for text, boundary in variants(word, case):
                ids = tokenizer(text, add_special_tokens=False)["input_ids"]
                if not ids:
                    continue
                if len(ids) == 1:
                    (self.single_boundary if boundary else self.single).add(ids[0])
                else:
                    self.multi.setdefault(tuple(ids[:-1]), []).append((ids[-1], boundary))
        self.single_boundary -= self.single
        self.lengths = sorted({len(k) for k in self.multi})
        vocab = vocab_width(tokenizer)
        pieces = tokenizer.batch_decode([[i] for i in range(vocab)])
        # True where a token's text ends in a letter or digit (the next token continues a word)
        self.ends_word = torch.tensor([bool(p) and p[-1].isalnum() for p in pieces])
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        for i in special:
            if i < vocab:
                self.ends_word[i] = False
        self.single_ids = torch.tensor(sorted(self.single), dtype=torch.long)
        self.boundary_ids = torch.tensor(sorted(self.single_boundary), dtype=torch.long)

    def n_sequences(self) -> int:
        return (len(self.single) + len(self.single_boundary)
                + sum(len(v) for v in self.multi.values()))


class _WordBanTransform(LogitsTransform):
    row_independent = True  # looks only at each row's own last tokens

    def __init__(self, table: BanTable):
        self.t = table
        self.lookback = (max(table.lengths) + 1) if table.lengths else 1

    def _boundary(self, token_ids: torch.Tensor) -> torch.Tensor:
        ends = self.t.ends_word.to(token_ids.device)
        safe = token_ids.clamp(max=ends.shape[0] - 1)
        return ~ends[safe] | (token_ids >= ends.shape[0])

    def __call__(self, input_ids, logits):
        B, V = logits.shape
        ban = torch.zeros(B, V, dtype=torch.bool, device=logits.device)
        t = self.t
        if len(t.single_ids):
            ids = t.single_ids[t.single_ids < V].to(logits.device)
            ban[:, ids] = True
        if input_ids.shape[1] == 0:
            at_boundary = torch.ones(B, dtype=torch.bool, device=logits.device)
        else:
            at_boundary = self._boundary(input_ids[:, -1]).to(logits.device)
        if len(t.boundary_ids) and bool(at_boundary.any()):
            ids = t.boundary_ids[t.boundary_ids < V].to(logits.device)
            rows = at_boundary.nonzero().squeeze(-1)
            ban[rows.unsqueeze(-1), ids.unsqueeze(0)] = True
        if t.lengths and input_ids.shape[1]:
            tail = input_ids[:, -self.lookback:].tolist()
            rows, cols = [], []
            for b, seq in enumerate(tail):
                for n in t.lengths:
                    if n > len(seq):
                        break
                    hits = t.multi.get(tuple(seq[-n:]))
                    if not hits:
                        continue
                    before_ok = None
                    for last, needs_boundary in hits:
                        if needs_boundary:
                            if before_ok is None:
                                before_ok = (len(seq) == n or
                                             bool(self._boundary(torch.tensor([seq[-n - 1]]))[0]))
                            if not before_ok:
                                continue
                        if last < V:
                            rows.append(b)
                            cols.append(last)
            if rows:
                ban[torch.tensor(rows, device=ban.device), torch.tensor(cols, device=ban.device)] = True
        return logits.masked_fill(ban, float("-inf"))


class WordBan(DetoxMethod):
    """Block every tokenization variant of a word list (multi-token words included)."""

    name = "wordban"
    backends = ALL_BACKENDS

    def __init__(self, words: str | None = None, case: bool = True):
        self.words_path = Path(words).expanduser() if words else None
        self.case = bool(case)
        self._tables: dict[str, BanTable] = {}

    def _path(self) -> Path:
        return self.words_path or default_list_path()

    def word_list(self) -> list[str]:
        return read_word_list(self._path())

    def settings(self):
        path = self._path()
        digest = file_sha256(path)[:12] if path.exists() else None
        return {"words": str(self.words_path) if self.words_path else "default",
                "list_sha256": digest, "case": self.case}

    def guided_by(self):
        # the shipped default list: corpus statistics, filtered by profanity-svm (see
        # training/banlist.py); a list of your own: nothing, unless its header says
        fallback = [] if self.words_path else [CORPUS_TAG, "profanity-svm"]
        return self._artefact_guided_by(fallback, self._path(), list_meta)

    def table(self, tokenizer) -> BanTable:
        key = tokenizer_fingerprint(tokenizer)
        if key not in self._tables:
            self._tables[key] = BanTable(tokenizer, self.word_list(), self.case)
        return self._tables[key]

    def bind(self, lm):
        return _WordBanTransform(self.table(lm.tokenizer))
