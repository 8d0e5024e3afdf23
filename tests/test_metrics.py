"""Metrics against hand-computed cases."""

import math

import pytest

from detoxkit.metrics import (SampleRecord, all_metrics, distinct_n, diversity_metrics,
                              fluency_metrics, toxicity_metrics)

NAN = float("nan")


def recs(pid, scores, texts=None):
    texts = texts or ["a"] * len(scores)
    return [SampleRecord(pid, i, t, s) for i, (s, t) in enumerate(zip(scores, texts))]


def test_emt_tp_and_toxic_fraction_by_hand():
    rows = recs("p1", [0.1, 0.7, 0.2]) + recs("p2", [0.4, 0.3, 0.49])
    m = toxicity_metrics(rows)
    assert m["expected_max_toxicity"] == pytest.approx((0.7 + 0.49) / 2)
    assert m["expected_max_toxicity_std"] == pytest.approx(abs(0.7 - 0.49) / 2)
    assert m["toxicity_probability"] == 0.5
    assert m["toxic_fraction"] == pytest.approx(1 / 6)
    assert m["n_prompts"] == 2 and m["n_samples"] == 6 and m["n_failed"] == 0
    assert m["toxicity_probability_k"] == 3


def test_threshold_is_inclusive():
    m = toxicity_metrics(recs("p", [0.5, 0.0]))
    assert m["toxicity_probability"] == 1.0
    assert m["toxic_fraction"] == 0.5


def test_nan_is_failed_never_zero():
    # p1's only toxic-looking value is missing: the max is over the scored ones
    rows = recs("p1", [NAN, 0.2]) + recs("p2", [NAN, NAN])
    m = toxicity_metrics(rows)
    assert m["n_failed"] == 3
    assert m["n_prompts_all_failed"] == 1
    assert m["expected_max_toxicity"] == pytest.approx(0.2)  # p2 left out, not counted as 0
    assert m["toxic_fraction"] == 0.0  # 0 of 1 scored sample
    assert m["toxicity_probability"] == 0.0


def test_zero_score_is_a_real_score():
    m = toxicity_metrics(recs("p", [0.0, 0.0]))
    assert m["expected_max_toxicity"] == 0.0 and m["n_failed"] == 0


def test_tp_at_5_is_exact_subset_expectation():
    # 6 samples, 1 toxic: a random 5-subset misses it with prob C(5,5)/C(6,5) = 1/6
    m = toxicity_metrics(recs("p", [0.9, 0.1, 0.1, 0.1, 0.1, 0.1]))
    assert m["toxicity_probability_at_5"] == pytest.approx(5 / 6)
    # fewer than 5 scored samples: undefined, not guessed
    m = toxicity_metrics(recs("q", [0.9, 0.1]))
    assert math.isnan(m["toxicity_probability_at_5"])


def test_bootstrap_interval_contains_estimate_and_is_seeded():
    rows = [r for p in range(30) for r in recs(f"p{p}", [p / 30, 0.1])]
    a, b = toxicity_metrics(rows, seed=3), toxicity_metrics(rows, seed=3)
    lo, hi = a["expected_max_toxicity_ci"]
    assert lo <= a["expected_max_toxicity"] <= hi and lo < hi
    assert a["expected_max_toxicity_ci"] == b["expected_max_toxicity_ci"]


def test_distinct_n_both_definitions():
    texts = ["the cat sat", "the dog sat"]
    # words: 6; unique unigrams: the, cat, sat, dog = 4
    assert distinct_n(texts, 1, "dexperts") == pytest.approx(4 / 6)
    assert distinct_n(texts, 1, "ngrams") == pytest.approx(4 / 6)
    # bigrams: (the cat)(cat sat)(the dog)(dog sat): 4 unique of 4; dexperts divides by 6 words
    assert distinct_n(texts, 2, "dexperts") == pytest.approx(4 / 6)
    assert distinct_n(texts, 2, "ngrams") == pytest.approx(1.0)
    # trigrams: 2 unique / 6 words vs 2 / 2
    assert distinct_n(texts, 3, "dexperts") == pytest.approx(2 / 6)
    assert distinct_n(texts, 3, "ngrams") == pytest.approx(1.0)
    # DExperts splits on single spaces: a double space makes an empty word
    assert distinct_n(["a  a"], 1, "dexperts") == pytest.approx(2 / 3)


def test_diversity_averages_over_prompts():
    rows = recs("p1", [0, 0], ["x x", "x x"]) + recs("p2", [0, 0], ["a b", "c d"])
    d = diversity_metrics(rows)
    assert d["distinct_1"] == pytest.approx((1 / 4 + 4 / 4) / 2)
    assert d["distinct_ngrams_2"] == pytest.approx((1 / 2 + 2 / 2) / 2)


def test_perplexity_is_token_weighted_and_skips_empty():
    rows = [SampleRecord("p", 0, "a", 0.1, nll=2.0, oracle_tokens=2),
            SampleRecord("p", 1, "b", 0.1, nll=6.0, oracle_tokens=2),
            SampleRecord("p", 2, "", 0.1, nll=0.0, oracle_tokens=0)]
    f = fluency_metrics(rows)
    assert f["perplexity"] == pytest.approx(math.exp(8.0 / 4))
    assert f["perplexity_mean_of_samples"] == pytest.approx((math.exp(1) + math.exp(3)) / 2)
    assert f["n_perplexity_samples"] == 2


def test_all_metrics_has_every_key():
    m = all_metrics(recs("p", [0.1] * 5, ["a b c"] * 5))
    for key in ("expected_max_toxicity", "toxicity_probability", "toxicity_probability_at_5",
                "toxic_fraction", "perplexity", "distinct_1", "distinct_2", "distinct_3",
                "distinct_ngrams_1", "n_prompts", "n_samples", "n_failed"):
        assert key in m
