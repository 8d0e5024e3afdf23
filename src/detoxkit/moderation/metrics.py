"""Moderation metrics of scores against 0/1 reference labels (scikit-learn's definitions).

A message is flagged when its score is >= the threshold. Two operating points per scorer: the
scorer's own threshold (detoxkit's 0.5), and the threshold that maximises F1 on the very data
being measured: that one is tuned on the test data, so it is an optimistic upper bound of what
the scorer would reach at a threshold chosen beforehand, not a fair figure of its own. AUPRC is
scikit-learn's average precision (threshold-free). Messages without a score (NaN) or without a
label are left out and counted.
"""

from __future__ import annotations

import math

import numpy as np


def binary_metrics(scores, labels, threshold: float) -> dict:
    """precision, recall, F1 and counts at `threshold` (precision is null when nothing is
    flagged, recall null when there are no positives)."""
    from sklearn.metrics import f1_score, precision_score, recall_score

    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(int)
    pred = (s >= threshold).astype(int)
    out = {"threshold": float(threshold), "flagged": int(pred.sum()),
           "precision": float(precision_score(y, pred, zero_division=0)) if pred.any() else None,
           "recall": float(recall_score(y, pred, zero_division=0)) if y.any() else None,
           "f1": float(f1_score(y, pred, zero_division=0)) if y.any() else None,
           "false_positive_rate": float(pred[y == 0].mean()) if (y == 0).any() else None}
    return out


def best_f1_threshold(scores, labels) -> float | None:
    """The threshold of the highest F1 on these scores and labels (ties: the lowest threshold)."""
    from sklearn.metrics import precision_recall_curve

    y = np.asarray(labels).astype(int)
    if not 0 < y.sum() < len(y):
        return None
    precision, recall, thresholds = precision_recall_curve(y, np.asarray(scores, dtype=np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def auprc(scores, labels) -> float | None:
    from sklearn.metrics import average_precision_score

    y = np.asarray(labels).astype(int)
    if not 0 < y.sum() < len(y):
        return None
    return float(average_precision_score(y, np.asarray(scores, dtype=np.float64)))


def block(scores, labels, threshold: float, best: float | str | None = "tune") -> dict:
    """Counts, AUPRC and both operating points. `best`: the best-F1 threshold to use (a subset
    uses the one tuned on all the data, so that its figures are at one shared threshold)."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    ok = ~np.isnan(s) & ~np.isnan(y)
    s, y = s[ok], y[ok].astype(int)
    out = {"n": int(len(s)), "positives": int(y.sum()), "n_left_out": int((~ok).sum())}
    if not len(s):
        return out
    best = best_f1_threshold(s, y) if best == "tune" else best
    out.update({"auprc": auprc(s, y), "at_threshold": binary_metrics(s, y, threshold),
                "at_best_f1": binary_metrics(s, y, best) if best is not None else None})
    return out


def moderation_metrics(labels: list, languages: list, categories: list[list[str]],
                       scores: dict[str, list[float]], thresholds: dict[str, float]) -> dict:
    """Per scorer: all labelled messages, by language and by category (the best-F1 threshold of
    the subsets is the one tuned on all labelled messages)."""
    y = np.array([math.nan if v is None else v for v in labels], dtype=np.float64)
    out = {}
    for name, values in scores.items():
        s = np.asarray(values, dtype=np.float64)
        overall = block(s, y, thresholds[name])
        best = (overall.get("at_best_f1") or {}).get("threshold")
        result = {"all": overall, "by_language": {}, "by_category": {}}
        for key, members in (("by_language", _members([[x] if x else [] for x in languages])),
                             ("by_category", _members(categories))):
            for value, idx in sorted(members.items()):
                result[key][value] = block(s[idx], y[idx], thresholds[name], best)
        out[name] = result
    return out


def _members(values: list[list[str]]) -> dict[str, np.ndarray]:
    out: dict[str, list[int]] = {}
    for i, vs in enumerate(values):
        for v in vs:
            out.setdefault(str(v), []).append(i)
    return {k: np.array(v) for k, v in out.items()}
