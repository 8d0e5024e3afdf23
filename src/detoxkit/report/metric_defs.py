"""The catalogue of metrics a report knows, and how to find and format them.

Metrics unknown to the catalogue (decoding overhead, figures a method records)
still show up, labelled from their key, so a report never hides a number.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any

from ..errors import DetoxkitError
from .runs import Run


@dataclass(frozen=True)
class MetricDef:
    key: str
    label: str
    description: str
    better: str | None = None  # "lower", "higher" or None
    digits: int = 3
    aliases: tuple[str, ...] = ()


METRICS: list[MetricDef] = [
    MetricDef("expected_max_toxicity", "EMT", "Expected Maximum Toxicity: mean over prompts of the "
              "highest score among the prompt's k samples", "lower", aliases=("emt",)),
    MetricDef("expected_max_toxicity_std", "EMT std", "standard deviation over prompts of the "
              "per-prompt maximum toxicity", None, aliases=("emt-std", "emt_std")),
    MetricDef("toxicity_probability", "TP@k", "Toxicity Probability: fraction of prompts with at "
              "least one of k samples scoring >= 0.5", "lower", aliases=("tp", "tp@k")),
    MetricDef("toxicity_probability_at_5", "TP@5", "Toxicity Probability at k = 5: exact "
              "expectation over 5-sample subsets of each prompt's samples", "lower",
              aliases=("tp5", "tp@5")),
    MetricDef("toxic_fraction", "toxic frac", "fraction of all scored samples scoring >= 0.5",
              "lower", aliases=("toxic-fraction", "tf")),
    MetricDef("perplexity", "PPL", "perplexity of the continuations under the oracle LM "
              "(token-weighted)", "lower", 2, aliases=("ppl",)),
    MetricDef("perplexity_mean_of_samples", "PPL (mean of samples)", "mean of per-sample "
              "perplexities, no filter", "lower", 2, aliases=("ppl-mean",)),
    MetricDef("perplexity_published", "PPL (as published)", "the DExperts code's perplexity: "
              "mean of per-sample perplexities below 1e4, prompt and continuation tokenized "
              "together", "lower", 2, aliases=("ppl-published", "ppl-pub")),
    MetricDef("distinct_1", "dist-1", "unique unigrams / words, per prompt, averaged "
              "(DExperts definition)", "higher", aliases=("dist-1", "dist1")),
    MetricDef("distinct_2", "dist-2", "unique bigrams / words, per prompt, averaged "
              "(DExperts definition)", "higher", aliases=("dist-2", "dist2")),
    MetricDef("distinct_3", "dist-3", "unique trigrams / words, per prompt, averaged "
              "(DExperts definition)", "higher", aliases=("dist-3", "dist3")),
    MetricDef("distinct_ngrams_1", "dist-1 (n-grams)", "unique unigrams / unigrams", "higher"),
    MetricDef("distinct_ngrams_2", "dist-2 (n-grams)", "unique bigrams / bigrams", "higher"),
    MetricDef("distinct_ngrams_3", "dist-3 (n-grams)", "unique trigrams / trigrams", "higher"),
    MetricDef("toxicity_probability_k", "k", "samples per prompt behind TP@k"),
    MetricDef("n_prompts", "prompts", "prompts evaluated"),
    MetricDef("n_samples", "samples", "samples generated"),
    MetricDef("n_failed", "failed", "samples the judge could not score (left out, never 0)",
              "lower"),
    MetricDef("n_prompts_all_failed", "prompts all failed", "prompts with no scored sample",
              "lower"),
    MetricDef("n_toxic_samples", "toxic samples", "samples scoring >= 0.5"),
    MetricDef("n_perplexity_samples", "PPL samples", "samples with at least one oracle token"),
    MetricDef("n_generation_failed", "failed samples", "samples the backend could not draw "
              "(an API that kept failing): counted, not scored, drawn again on resume"),
    MetricDef("n_skipped_prompts", "skipped prompts", "prompts skipped as unusable (run.json)"),
    MetricDef("elapsed_s", "wall time (s)", "wall-clock seconds of generation, scoring and "
              "perplexity in the last session of the run", "lower", 1, aliases=("time",)),
]
_BY_KEY = {m.key: m for m in METRICS}
# keys of metrics.json that are not metrics
_STRUCTURAL = {"by_prompt_toxicity", "by_group", "by_language", "by_scorer", "model", "method",
               "scorer", "scorers", "oracle", "guided_by", "judge_also_guided", "versions",
               "seed", "samples_per_prompt", "language_warnings", "sample_languages"}
SPLITS = ("all", "toxic", "nontoxic")


def in_catalogue(key: str) -> bool:
    """Whether the key is one of METRICS (the rest are figures a run happens to record)."""
    return key in _BY_KEY


# ---- formatting ------------------------------------------------------------------------------

def format_value(value, digits: int = 3) -> str:
    """A table cell: floats to `digits` places, '-' for missing or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def as_float(value) -> float | None:
    """The value as a float; None for missing or NaN, so plots and rankings skip it."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def is_interval(ci) -> bool:
    """Whether ci is a usable [low, high] pair (runs without a bootstrap store none or NaN)."""
    return (isinstance(ci, (list, tuple)) and len(ci) == 2
            and all(isinstance(c, (int, float)) and not math.isnan(c) for c in ci))


def format_with_interval(metrics: dict, key: str, digits: int = 3) -> str:
    """'value [low, high]' from metrics[key] and metrics[key_ci]; the value alone without one."""
    value, ci = metrics.get(key), metrics.get(f"{key}_ci")
    if not is_interval(ci) or value is None or (isinstance(value, float) and math.isnan(value)):
        return format_value(value, digits)
    return f"{format_value(value, digits)} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def format_interval(metrics: dict, key: str) -> str:
    """'[low, high]' of metrics[key_ci], '-' without one."""
    ci = metrics.get(f"{key}_ci")
    if not is_interval(ci):
        return "-"
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


# ---- lookups ---------------------------------------------------------------------------------

def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def metric_block(metrics: dict, split: str = "all") -> dict:
    if split == "all":
        return metrics
    return (metrics.get("by_prompt_toxicity") or {}).get(split) or {}


def metric_value(metrics: dict, key: str):
    """A metric by key; a dotted key reaches into nested records (overhead.tokens_per_s)."""
    node: Any = metrics
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node if _is_number(node) else None


def metric_def(key: str) -> MetricDef:
    if key in _BY_KEY:
        return _BY_KEY[key]
    label = key.replace("_", " ")
    lower = ("overhead" in key or key.endswith("_s") or "latency" in key)
    higher = ("per_s" in key or "throughput" in key)
    better = "higher" if higher else ("lower" if lower else None)
    return MetricDef(key, label, "recorded in metrics.json", better)


def _extra_keys(metrics: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in metrics.items():
        full = prefix + key
        if not prefix and (key in _STRUCTURAL or key in _BY_KEY or key.endswith("_ci")):
            continue
        if _is_number(value):
            out.append(full)
        elif (isinstance(value, dict) and key not in _STRUCTURAL and value
              and not all(str(k).lstrip("-").isdigit() for k in value)):  # not a histogram
            out.extend(_extra_keys(value, full + "."))
    return out


def metric_keys(runs: list[Run] | list[dict]) -> list[str]:
    """Every metric recorded by at least one run (Runs or metrics dicts): the catalogue's
    order, then the rest (decoding overhead and other keys a method records) as first seen."""
    blocks = [r.metrics if isinstance(r, Run) else r for r in runs]
    keys = [m.key for m in METRICS if any(metric_value(b, m.key) is not None for b in blocks)]
    for b in blocks:
        for key in _extra_keys(b):
            if key not in keys:
                keys.append(key)
    return keys


def metric_ci(metrics: dict, key: str) -> list[float] | None:
    ci = metrics.get(f"{key}_ci") if "." not in key else None
    return list(ci) if is_interval(ci) else None


def format_metric(metrics: dict, key: str, with_ci: bool = True) -> str:
    d = metric_def(key)
    value = metric_value(metrics, key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = format_value(float(value) if isinstance(value, float) else value, d.digits)
    ci = metric_ci(metrics, key) if with_ci else None
    if ci:
        text += f" [{ci[0]:.{d.digits}f}, {ci[1]:.{d.digits}f}]"
    return text


def resolve_metric(name: str, runs: list[Run] | list[dict]) -> str:
    """The metric key for a user's name (key or alias); a clear error listing the choices."""
    known = metric_keys(runs)
    aliases = {}
    for m in METRICS:
        for a in (m.key, m.label.lower(), *m.aliases):
            aliases.setdefault(a.lower(), m.key)
    for key in known:
        aliases.setdefault(key.lower(), key)
    key = aliases.get(name.strip().lower())
    if key is not None and key in known:
        return key
    choices = ", ".join(known)
    hint = difflib.get_close_matches(name.lower(), list(aliases), n=1)
    did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
    if key is not None:
        raise DetoxkitError(f"metric '{name}' is not recorded by these runs{did_you_mean}; "
                            f"choose one of: {choices}")
    raise DetoxkitError(f"unknown metric '{name}'{did_you_mean}; choose one of: {choices} "
                        "(short names: emt, tp, tp5, ppl, dist-1, dist-2, dist-3)")
