"""Agreement of a scorer with reference labels: ROC-AUC, Spearman, texts per second.

Reference data:
- RTP-format JSONL (RealToxicityPrompts' own format): every prompt text and
  continuation text that carries a stored Perspective ``toxicity`` is one
  reference item; texts are deduplicated (first score kept) and texts without a
  score skipped.
- a generic labelled file (.jsonl or .csv) with a text field and either a binary
  label field or a score field in [0, 1].

AUC uses the reference thresholded at `threshold` (0.5) as the positive class;
Spearman correlates the scorer with the reference score (or label).
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError


@dataclass
class Reference:
    texts: list[str]
    scores: np.ndarray  # reference score (or 0/1 label)
    source: str


def _is_rtp(record: dict) -> bool:
    return isinstance(record.get("prompt"), dict) and "text" in record["prompt"]


def load_reference(paths: list[str | Path], text_field: str | None = None, label_field: str | None = None,
                   score_field: str | None = None, attribute: str = "toxicity") -> Reference:
    """Deduplicated reference items from RTP-format or generic labelled files."""
    seen: dict[str, float] = {}
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise InputError("no such file", path=str(path))
        for line_no, rec in _records(path):
            if text_field is None and _is_rtp(rec):
                for part in ("prompt", "continuation"):
                    item = rec.get(part) or {}
                    text, value = item.get("text"), item.get(attribute)
                    if isinstance(text, str) and value is not None and text not in seen:
                        seen[text] = float(value)
                continue
            if text_field is None:
                raise InputError("not RTP format; give --text-field and --label-field or --score-field",
                                 path=str(path), line=line_no)
            field = label_field or score_field
            if field is None:
                raise InputError("give --label-field or --score-field", path=str(path))
            text, value = rec.get(text_field), rec.get(field)
            if text is None:
                raise InputError("missing text field", path=str(path), line=line_no, field=text_field)
            if value is None or value == "":
                continue
            try:
                value = float(value)
            except ValueError:
                raise InputError(f"not a number: {value!r}", path=str(path), line=line_no, field=field) from None
            if str(text) not in seen and not math.isnan(value):
                seen[str(text)] = value
    if not seen:
        raise InputError("no scored texts found", path=", ".join(map(str, paths)))
    return Reference(list(seen), np.array(list(seen.values()), dtype=np.float64),
                     ", ".join(str(p) for p in paths))


def _records(path: Path):
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            for i, rec in enumerate(csv.DictReader(fh), start=2):
                yield i, rec
        return
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    yield i, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(f"invalid JSON: {exc.msg}", path=str(path), line=i) from None


def agreement(pred: np.ndarray, ref: np.ndarray, threshold: float = 0.5) -> dict:
    """AUC (reference >= threshold is positive) and Spearman over the items the scorer scored."""
    from scipy.stats import spearmanr

    from ..stats import roc_auc

    ok = ~np.isnan(pred)
    pred, ref = pred[ok], ref[ok]
    labels = (ref >= threshold).astype(int)
    auc = roc_auc(pred, labels)
    rho = float(spearmanr(pred, ref).statistic) if len(pred) > 2 else float("nan")
    return {"auc": auc, "spearman": rho, "n": int(ok.sum()), "failed": int((~ok).sum()),
            "positives": int(labels.sum())}


def validate(scorer, reference: Reference, attribute: str = "toxicity", threshold: float = 0.5,
             progress=None, warmup: int = 16) -> dict:
    """Score the reference texts with `scorer` and measure agreement and speed.

    Speed is texts / wall-clock seconds of scorer.score over all texts, after a
    warm-up call on a few texts (not counted); model loading is not counted."""
    if attribute not in scorer.attributes:
        raise InputError(f"scorer {scorer.name} has no attribute {attribute!r} "
                         f"(it has {', '.join(scorer.attributes)})")
    if warmup:
        scorer.score(reference.texts[:warmup])
    start = time.perf_counter()
    scores = scorer.score(reference.texts, progress=progress)[attribute]
    elapsed = time.perf_counter() - start
    out = agreement(scores, reference.scores, threshold)
    out["texts_per_s"] = len(reference.texts) / elapsed if elapsed > 0 else float("inf")
    out["seconds"] = elapsed
    out["scores"] = scores
    return out

