"""Scores against labels: ROC-AUC, Platt calibration, reliability bins and the held-out report.

One place for what the scorer recipes (training/scorer_*.py), the moral direction
(training/moral.py) and `detoxkit scorers validate` (scorers/validate.py) measure.
"""

from __future__ import annotations

import numpy as np


def roc_auc(scores, labels) -> float:
    """ROC-AUC of `scores` for binary `labels` (scikit-learn's; ties count half); NaN when
    only one class is present."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels).astype(int)
    if not 0 < labels.sum() < len(labels):
        return float("nan")
    return float(roc_auc_score(labels, np.asarray(scores, dtype=np.float64)))


def fit_platt(logits, labels) -> tuple[float, float]:
    """(a, b) minimising the log loss of sigmoid(a * logit + b) (L-BFGS, deterministic)."""
    from scipy.optimize import minimize
    from scipy.special import expit, log_expit

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)

    def loss(params):
        a, b = params
        t = a * z + b
        value = -np.sum(y * log_expit(t) + (1 - y) * log_expit(-t))
        r = expit(t) - y
        return value, np.array([np.sum(r * z), np.sum(r)])

    res = minimize(loss, x0=np.array([1.0, 0.0]), jac=True, method="L-BFGS-B",
                   options={"maxiter": 500, "gtol": 1e-9})
    return float(res.x[0]), float(res.x[1])


def sigmoid(z) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def reliability(probs, positive, bins: int = 10, digits: int | None = None) -> list[dict]:
    """Per score bin of width 1/bins (the last one closed): n, mean score and the share of
    positives. Texts without a score (NaN) are left out; `digits` rounds the two means."""
    probs = np.asarray(probs, dtype=np.float64)
    positive = np.asarray(positive, dtype=np.float64)
    ok = ~np.isnan(probs)
    probs, positive = probs[ok], positive[ok]

    def rnd(x: float) -> float:
        return round(x, digits) if digits is not None else x

    edges = np.linspace(0, 1, bins + 1)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (probs >= lo) & ((probs < hi) if hi < 1 else (probs <= hi))
        if sel.any():
            rows.append({"bin": f"{lo:.1f}-{hi:.1f}", "n": int(sel.sum()),
                         "mean_score": rnd(float(probs[sel].mean())),
                         "positive_rate": rnd(float(positive[sel].mean()))})
    return rows


def heldout_report(probs, labels) -> dict:
    """AUC, accuracy / precision / recall at 0.5, Brier score, ECE and reliability bins of
    calibrated probabilities against 0/1 labels (rounded to 4 digits)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    pred = probs >= 0.5
    tp = int(np.sum(pred & (labels == 1)))
    rel = reliability(probs, labels, digits=4)
    ece = sum(r["n"] * abs(r["mean_score"] - r["positive_rate"]) for r in rel) / len(labels)
    return {"n": int(len(labels)), "positives": int(labels.sum()),
            "auc": round(roc_auc(probs, labels), 4),
            "accuracy@0.5": round(float(np.mean(pred == (labels == 1))), 4),
            "precision@0.5": round(tp / max(1, int(pred.sum())), 4),
            "recall@0.5": round(tp / max(1, int(labels.sum())), 4),
            "brier": round(float(np.mean((probs - labels) ** 2)), 4),
            "ece": round(float(ece), 4), "reliability": rel}
