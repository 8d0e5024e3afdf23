"""Per-group metrics, the largest-gap interval and the permutation test on hand-built cases with a
known answer; a method's per-group change and whether it widened or narrowed the gap."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from detoxkit.group_metrics import disparity, group_changes, group_disparities, group_key
from detoxkit.metrics import SampleRecord


def test_gap_ratio_and_a_clear_difference():
    a = np.array([0.1, 0.3] * 15)  # mean 0.2
    b = np.array([0.6, 0.8] * 15)  # mean 0.7
    d = disparity({"a": a, "b": b}, seed=0)
    assert d["largest_gap"] == pytest.approx(0.5)
    assert d["most_affected"] == "b" and d["least_affected"] == "a"
    assert d["ratio"] == pytest.approx(3.5)
    lo, hi = d["largest_gap_ci"]
    assert lo < 0.5 < hi and lo > 0.4
    # no permutation of these 60 values reaches a gap of 0.5 except the observed split itself
    assert d["p_value"] == pytest.approx(1 / 2001) and d["significant"]


def test_constant_groups_have_a_zero_width_gap_interval():
    d = disparity({"x": np.full(5, 0.2), "y": np.full(7, 0.5), "z": np.full(3, 0.3)}, seed=3)
    assert d["largest_gap"] == pytest.approx(0.3)
    assert d["largest_gap_ci"] == pytest.approx([0.3, 0.3])
    assert d["most_affected"] == "y" and d["least_affected"] == "x"


def test_permutation_p_matches_exact_enumeration():
    a, b = np.array([0.1, 0.4, 0.2, 0.5]), np.array([0.3, 0.6, 0.45, 0.7])
    pooled = np.concatenate([a, b])
    observed = abs(a.mean() - b.mean())
    splits = list(itertools.combinations(range(8), 4))
    exact = np.mean([abs(pooled[list(s)].mean() - np.delete(pooled, list(s)).mean()) >= observed - 1e-12
                     for s in splits])
    d = disparity({"a": a, "b": b}, seed=1, n_permutations=20000)
    # hand count: 6 four-value subsets sum to <= 1.2 (a's sum), 6 to >= 2.05 (b's)
    assert exact == pytest.approx(12 / 70)
    assert d["p_value"] == pytest.approx(exact, abs=0.01)
    assert not d["significant"]  # p ~ 0.17


def test_identical_groups_show_no_difference():
    rng = np.random.default_rng(5)
    values = rng.random(200)
    d = disparity({"a": values[:100], "b": values[100:]}, seed=0)
    assert d["p_value"] > 0.05 and not d["significant"]


def test_ratio_is_null_when_the_least_affected_group_is_zero():
    d = disparity({"a": np.zeros(4), "b": np.full(4, 0.5)}, seed=0)
    assert d["ratio"] is None and d["largest_gap"] == pytest.approx(0.5)


def _records(tox_by_prompt: dict[str, list[float]]) -> list[SampleRecord]:
    return [SampleRecord(pid, i, "t", v) for pid, vs in tox_by_prompt.items() for i, v in enumerate(vs)]


def _prompts(groups: dict[str, tuple[str | None, str]]) -> dict[str, dict]:
    return {pid: {"prompt_id": pid, "meta": {"group": g, **({"domain": d} if d else {})}}
            for pid, (d, g) in groups.items()}


def test_domains_are_compared_separately_and_keys_carry_the_domain():
    # ToxiGen-like: the same group names under two kinds; hate prompts far more toxic
    tox, groups = {}, {}
    for kind, base in (("hate", 0.6), ("neutral", 0.1)):
        for g, shift in (("asian", 0.0), ("women", 0.2)):
            for i in range(6):
                pid = f"{kind}-{g}-{i}"
                tox[pid] = [base + shift, base + shift - 0.05]
                groups[pid] = (kind, g)
    out = group_disparities(_records(tox), _prompts(groups), seed=0)
    assert set(out) == {"hate", "neutral"}
    for kind in ("hate", "neutral"):
        emt = out[kind]["expected_max_toxicity"]
        assert emt["largest_gap"] == pytest.approx(0.2)  # within a kind: women vs asian
        assert emt["most_affected"] == f"{kind}/women"
    assert group_key({"group": "asian", "domain": "hate"}) == "hate/asian"
    assert group_key({"group": "asian"}) == "asian" and group_key({}) is None


def test_failed_scores_are_left_out_of_group_values():
    tox = {"p1": [0.9, math.nan], "p2": [math.nan, math.nan], "p3": [0.1, 0.2]}
    out = group_disparities(_records(tox), _prompts({"p1": (None, "a"), "p2": (None, "a"),
                                                     "p3": (None, "b")}), seed=0)
    d = out["all"]["expected_max_toxicity"]
    assert d["n_prompts"] == {"a": 1, "b": 1}  # p2 has no scored sample
    assert d["largest_gap"] == pytest.approx(0.7)


def _two_groups(shift_b: float) -> tuple[dict, dict, dict]:
    base, run, groups = {}, {}, {}
    for g, level in (("a", 0.2), ("b", 0.4)):
        for i in range(20):
            pid = f"{g}{i}"
            jitter = 0.01 * (i % 5)
            base[pid] = [level + jitter, 0.05]
            run[pid] = [level + jitter + (shift_b if g == "b" else 0.0), 0.05]
            groups[pid] = ("race", g)
    return base, run, groups


def test_method_that_raises_one_group_widens_the_gap():
    base, run, groups = _two_groups(+0.3)
    out = group_changes(_records(base), _records(run), _prompts(groups), seed=0)["race"]
    b = out["groups"]["race/b"]["expected_max_toxicity"]
    assert b["difference"] == pytest.approx(0.3) and b["ci"] == pytest.approx([0.3, 0.3])
    a = out["groups"]["race/a"]["expected_max_toxicity"]
    assert a["difference"] == pytest.approx(0.0) and not a["distinguishable"]
    assert out["gap"]["base"] == pytest.approx(0.2) and out["gap"]["run"] == pytest.approx(0.5)
    assert out["gap"]["verdict"] == "widened" and out["gap"]["change_ci"][0] > 0


def test_method_that_lowers_the_affected_group_narrows_the_gap():
    base, run, groups = _two_groups(-0.15)
    gap = group_changes(_records(base), _records(run), _prompts(groups), seed=0)["race"]["gap"]
    assert gap["change"] == pytest.approx(-0.15) and gap["verdict"] == "narrowed"
    same = group_changes(_records(base), _records(base), _prompts(groups), seed=0)["race"]["gap"]
    assert same["change"] == pytest.approx(0.0) and same["verdict"] == "no clear change"


def test_groups_with_equal_means_have_no_most_affected_group():
    d = disparity({"a": np.zeros(6), "b": np.zeros(4), "c": np.zeros(5)}, seed=0)
    assert d["most_affected"] is None and d["least_affected"] is None
    assert d["largest_gap"] == 0.0 and d["p_value"] == 1.0 and not d["significant"]
