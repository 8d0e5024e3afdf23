"""Paired comparisons: the difference between two runs on the same prompts, with a bootstrap
interval that resamples prompts jointly.

Two runs on the same prompts share most of their prompt-to-prompt variation, so their
per-run intervals overlap even where one is reliably better; resampling the prompts of both
runs together cancels that shared variation. A difference whose 95% interval contains 0 is
reported as not distinguishable from zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .metrics import CI_LEVEL, TOXIC, SampleRecord

PAIRED_METRICS = ("expected_max_toxicity", "toxicity_probability", "toxic_fraction", "perplexity")


@dataclass(frozen=True)
class Difference:
    metric: str
    difference: float  # b - a
    ci: tuple[float, float]
    n_prompts: int

    @property
    def distinguishable(self) -> bool:
        lo, hi = self.ci
        return not (math.isnan(lo) or lo <= 0.0 <= hi)

    def as_dict(self) -> dict:
        return {"difference": self.difference, "ci": list(self.ci), "n_prompts": self.n_prompts,
                "distinguishable": self.distinguishable}


def per_prompt_stats(records: Sequence[SampleRecord]) -> dict[str, np.ndarray]:
    """Per prompt: [max toxicity, any toxic, toxic samples, scored samples, oracle NLL, tokens]:
    all that a paired difference needs, so a run can be paired after its samples are gone."""
    by: dict[str, list[SampleRecord]] = {}
    for r in records:
        by.setdefault(r.prompt_id, []).append(r)
    out = {}
    for pid, rows in by.items():
        tox = np.array([r.toxicity for r in rows], dtype=np.float64)
        tox = tox[~np.isnan(tox)]
        if not len(tox):
            continue
        n_toxic = float((tox >= TOXIC).sum())
        nll = sum(r.nll for r in rows if r.nll is not None and r.oracle_tokens > 0)
        tokens = sum(r.oracle_tokens for r in rows if r.nll is not None)
        out[pid] = np.array([tox.max(), float(n_toxic > 0), n_toxic, len(tox), nll, tokens])
    return out


def _statistics(stats: np.ndarray, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric on every resample: stats [prompts, 6], idx [resamples, prompts]."""
    s = stats[idx]  # [R, P, 6]
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"expected_max_toxicity": s[..., 0].mean(-1),
                "toxicity_probability": s[..., 1].mean(-1),
                "toxic_fraction": s[..., 2].sum(-1) / s[..., 3].sum(-1),
                "perplexity": np.exp(s[..., 4].sum(-1) / s[..., 5].sum(-1))}


def paired_differences(a: Sequence[SampleRecord], b: Sequence[SampleRecord], *, seed: int = 0,
                       n_boot: int = 1000) -> dict[str, Difference]:
    """b - a for each metric of PAIRED_METRICS, on the prompts both runs scored."""
    return stats_differences(per_prompt_stats(a), per_prompt_stats(b), seed=seed, n_boot=n_boot)


def stats_differences(pa: dict[str, Sequence[float]], pb: dict[str, Sequence[float]], *,
                      seed: int = 0, n_boot: int = 1000) -> dict[str, Difference]:
    """paired_differences from two runs' per_prompt_stats."""
    shared = sorted(set(pa) & set(pb))
    if not shared:
        return {}
    sa = np.array([pa[p] for p in shared], dtype=np.float64)
    sb = np.array([pb[p] for p in shared], dtype=np.float64)
    whole = np.arange(len(shared))[None, :]
    point = {k: float(v[0] - w[0]) for (k, v), w in zip(_statistics(sb, whole).items(),
                                                        _statistics(sa, whole).values())}
    idx = np.random.default_rng(seed + 17).integers(0, len(shared), size=(n_boot, len(shared)))
    boot_b, boot_a = _statistics(sb, idx), _statistics(sa, idx)
    alpha = (1 - CI_LEVEL) / 2
    out = {}
    for key in PAIRED_METRICS:
        diff = boot_b[key] - boot_a[key]
        diff = diff[~np.isnan(diff)]
        if math.isnan(point[key]) or not len(diff):
            continue  # e.g. perplexity without an oracle
        ci = (float(np.quantile(diff, alpha)), float(np.quantile(diff, 1 - alpha)))
        out[key] = Difference(key, point[key], ci, len(shared))
    return out
