"""Rewards of `detoxkit train rlhf` (training/rlhf.py): per-token reward arrays for a batch of
continuations, before the KL penalty.

- holistic: 1 - toxicity(whole continuation), at its last token.
- fine-grained (Wu et al. 2023, "Fine-Grained Human Feedback Gives Better Rewards"): after each
  sentence segment, minus the increase in toxicity that segment caused,
  -(tox(continuation up to and including the segment) - tox(up to the previous segment)), at the
  segment's last token. The first segment's delta is against 0 (the empty continuation counted
  as not toxic), so a continuation's fine-grained rewards sum to -tox(whole continuation): the
  two recipes differ only in where the signal lands (and holistic's constant 1).
- fluency (optional, any recipe): log p_ref(token) per token, i.e. minus its NLL under the
  reference model.

Terms combine with weights (`toxicity=1,fluency=0.1`).
"""

from __future__ import annotations

import math
import re
from typing import Callable, Sequence

from ..errors import DetoxkitError

REWARD_TERMS = ("toxicity", "fluency")

# A sentence ends at ., ! or ? (runs of them, then closing quotes or brackets) followed by
# whitespace or the end of the text, or at a line break. Abbreviations ("Mr.") also end one.
SENTENCE_END = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?=\s|$)|\n")


def parse_reward_weights(spec: str) -> dict[str, float]:
    """'toxicity=1,fluency=0.1' -> {"toxicity": 1.0, "fluency": 0.1} (missing terms: 0)."""
    weights = {name: 0.0 for name in REWARD_TERMS}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in REWARD_TERMS:
            raise DetoxkitError(f"--reward-weights: '{part}' is not TERM=WEIGHT with a term among "
                                f"{', '.join(REWARD_TERMS)}")
        try:
            weights[name] = float(value)
        except ValueError:
            raise DetoxkitError(f"--reward-weights: {name}'s weight {value!r} is not a number") from None
        if not math.isfinite(weights[name]):
            raise DetoxkitError(f"--reward-weights: {name}'s weight must be finite")
    if not any(weights.values()):
        raise DetoxkitError("--reward-weights: every weight is 0, so there is nothing to learn")
    return weights


def prefix_texts(decode: Callable[[list[int]], str], token_ids: Sequence[int]) -> list[str]:
    """The decoded text of token_ids[:j + 1] for every j (the continuation as it grows)."""
    return [decode(list(token_ids[:j + 1])) for j in range(len(token_ids))]


def segment_ends(prefixes: Sequence[str]) -> list[int]:
    """Token index of each sentence segment's last token, from the growing decoded prefixes.

    A segment ends at the token that completes a sentence end of the whole text (SENTENCE_END);
    a segment holding only whitespace joins the next one; the last token always ends the last
    segment (a continuation with no sentence end is one segment; one that stops mid-sentence
    gets its partial last segment; trailing whitespace after the last sentence end joins it)."""
    if not prefixes:
        return []
    text = prefixes[-1]
    lengths, longest = [], 0
    for p in prefixes:  # a token splitting a UTF-8 character can shorten the decoded prefix
        longest = max(longest, len(p))
        lengths.append(longest)
    ends: list[int] = []
    start = 0
    for match in SENTENCE_END.finditer(text):
        j = next(i for i, n in enumerate(lengths) if n >= match.end())
        if (ends and ends[-1] == j) or not text[start:lengths[j]].strip():
            continue  # the same token again, or a segment of only whitespace
        ends.append(j)
        start = lengths[j]
    last = len(prefixes) - 1
    if not ends or ends[-1] != last:
        if ends and not text[start:].strip():
            ends[-1] = last
        else:
            ends.append(last)
    return ends


def _score_or(value: float, fallback: float) -> float:
    """A scorer's NaN (a text it could not score) counts as `fallback`: no signal, not 0."""
    return fallback if math.isnan(value) else value


def holistic_rewards(n_tokens: int, toxicity: float) -> list[float]:
    """1 - toxicity(whole continuation) at the last token, 0 elsewhere (NaN: 0 everywhere)."""
    rewards = [0.0] * n_tokens
    if n_tokens:
        rewards[-1] = 0.0 if math.isnan(toxicity) else 1.0 - toxicity
    return rewards


def fine_grained_rewards(n_tokens: int, ends: Sequence[int], toxicities: Sequence[float]) -> list[float]:
    """-(tox(up to segment k) - tox(up to segment k - 1)) at segment k's last token; the
    toxicity before the first segment is 0. `toxicities`: one per segment, of the prefix ending
    there (NaN: no change at that segment)."""
    rewards = [0.0] * n_tokens
    previous = 0.0
    for end, tox in zip(ends, toxicities):
        tox = _score_or(tox, previous)
        rewards[end] = -(tox - previous)
        previous = tox
    return rewards


def toxicity_rewards(kind: str, token_ids: Sequence[Sequence[int]],
                     decode: Callable[[list[int]], str],
                     toxicity: Callable[[list[str]], Sequence[float]]) -> tuple[list[list[float]], list[float], list[int]]:
    """Per-token toxicity rewards for each continuation; also each continuation's toxicity and
    segment count. `toxicity` scores a list of texts (one call for the whole batch)."""
    prefixes = [prefix_texts(decode, ids) for ids in token_ids]
    if kind == "holistic":
        wanted = [[len(ids) - 1] if ids else [] for ids in token_ids]
    elif kind == "fine-grained":
        wanted = [segment_ends(p) for p in prefixes]
    else:
        raise DetoxkitError(f"unknown reward '{kind}' (holistic or fine-grained)")
    texts = sorted({prefixes[i][j] for i, ends in enumerate(wanted) for j in ends})
    scores = dict(zip(texts, (float(s) for s in toxicity(texts)))) if texts else {}
    rewards, whole = [], []
    for ids, p, ends in zip(token_ids, prefixes, wanted):
        tox = [scores[p[j]] for j in ends]
        if kind == "holistic":
            rewards.append(holistic_rewards(len(ids), tox[0] if tox else math.nan))
        else:
            rewards.append(fine_grained_rewards(len(ids), ends, tox))
        whole.append(tox[-1] if tox else math.nan)
    return rewards, whole, [len(e) for e in wanted]
