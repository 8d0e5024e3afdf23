"""Scorer interface, the pickle-free adapters (lexical, BiLSTM), the default scorer, and `scorers validate`."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest

from helpers import RTP_CHALLENGING, RTP_NONTOXIC
from detoxkit.cli import main
from detoxkit.errors import DetoxkitError
from detoxkit.scorers import DEFAULT_SCORER, Scorer, load_scorer
from detoxkit.scorers.base import scorer_arguments

# Clearly toxic and clearly benign sentences (test fixtures; offensive by design).
TOXIC = [
    "You are a worthless piece of shit and everyone hates you.",
    "Shut up, you stupid fucking idiot.",
    "Go kill yourself, you disgusting moron.",
    "What a dumb bitch, fuck off.",
]
BENIGN = [
    "Thank you for the lovely dinner last night.",
    "The weather is nice today, let's go for a walk in the park.",
    "I am reading a book about the history of the Roman empire.",
    "Please send me the report by Friday afternoon.",
]


def rtp_items(n: int = 60) -> list[str]:
    texts = []
    for path in (RTP_CHALLENGING, RTP_NONTOXIC):
        with open(path, encoding="utf-8") as fh:
            for line, _ in zip(fh, range(n // 4)):
                rec = json.loads(line)
                texts += [rec["prompt"]["text"], rec["continuation"]["text"]]
    return texts


def assert_orders(scorer, attribute: str = "toxicity"):
    scores = scorer.score(TOXIC + BENIGN)[attribute]
    tox, ben = scores[:len(TOXIC)], scores[len(TOXIC):]
    assert np.all((0 <= scores) & (scores <= 1))
    assert tox.min() > ben.max(), (tox, ben)
    return tox, ben


def assert_batch_and_order_invariant(name: str, texts: list[str], atol: float = 1e-5, **kwargs):
    a = load_scorer(name, batch_size=3, **kwargs)
    b = load_scorer(name, batch_size=64, **kwargs)
    ref = a.score(texts)
    perm = np.random.default_rng(0).permutation(len(texts))
    other = b.score([texts[i] for i in perm])
    for attr in a.attributes:
        back = np.empty(len(texts))
        back[perm] = other[attr]
        np.testing.assert_allclose(ref[attr], back, atol=atol, rtol=0)


# ----------------------------------------------------------------------------- interface

class Flaky(Scorer):
    name = "flaky"
    version = "1"
    attributes = ("toxicity", "insult")

    def __init__(self, device="cpu", batch_size=4):
        super().__init__(device, batch_size)
        self.calls = []

    def _score_batch(self, texts):
        self.calls.append(list(texts))
        if any("boom" in t for t in texts):
            raise RuntimeError("boom")
        tox = [min(1.0, len(t) / 100) for t in texts]
        return {"toxicity": tox, "insult": [2.0 if "out" in t else 0.5 for t in texts]}


def test_failures_are_nan_and_only_the_failing_text_is_lost():
    s = Flaky()
    texts = ["a" * 10, "boom", "b" * 30, "", "out of range"]
    out = s.score(texts)
    assert out["toxicity"][0] == pytest.approx(0.1)
    assert math.isnan(out["toxicity"][1]) and math.isnan(out["insult"][1])
    assert out["toxicity"][3] == 0.0  # an empty text is scored, not dropped
    assert math.isnan(out["insult"][4])  # a score outside [0, 1] is a failure, never clipped
    assert max(len(c) for c in s.calls) <= 4  # batches respect batch_size


def test_scores_sort_by_length_and_come_back_in_input_order():
    s = Flaky(batch_size=2)
    texts = ["x" * n for n in (50, 10, 40, 20, 30)]
    out = s.score(texts)
    np.testing.assert_allclose(out["toxicity"], [0.5, 0.1, 0.4, 0.2, 0.3])
    assert [len(t) for c in s.calls for t in c] == [10, 20, 30, 40, 50]


def test_spec_parsing_and_default():
    assert DEFAULT_SCORER == "detoxkit-minilm"
    assert scorer_arguments("profanity-svm") == ("profanity-svm", {})
    assert scorer_arguments("hf:unitary/toxic-bert") == ("hf", {"model": "unitary/toxic-bert"})
    assert scorer_arguments("detoxify:unbiased") == ("detoxify", {"model": "unbiased"})
    with pytest.raises(DetoxkitError, match="Did you mean"):
        load_scorer("profanity-svn")


def test_load_scorer_caches_one_instance_per_settings():
    assert load_scorer("profanity-svm") is load_scorer("profanity-svm")
    assert load_scorer("profanity-svm", batch_size=7) is not load_scorer("profanity-svm")


# ----------------------------------------------------------------------------- restricted pickles

class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_restricted_unpicklers_refuse_other_classes(tmp_path):
    import joblib

    from detoxkit.scorers.safe_pickle import ForbiddenPickle, load_joblib_restricted, load_keras_tokenizer_state

    evil = tmp_path / "evil.joblib"
    joblib.dump({"x": _Evil()}, evil)
    with pytest.raises(ForbiddenPickle, match="os|posix"):
        load_joblib_restricted(str(evil))
    obj_array = tmp_path / "objarray.joblib"
    joblib.dump(np.array([1, "a"], dtype=object), obj_array)
    with pytest.raises(ForbiddenPickle):
        load_joblib_restricted(str(obj_array))
    with pytest.raises(ForbiddenPickle):
        load_keras_tokenizer_state(open_bytes(pickle.dumps(_Evil())))


def open_bytes(data: bytes):
    import io

    return io.BytesIO(data)


# ----------------------------------------------------------------------------- lexical

def test_profanity_svm_equals_the_original_model_without_pickles():
    from detoxkit.scorers.lexical import package_files
    from detoxkit.scorers.safe_pickle import load_joblib_restricted

    scorer = load_scorer("profanity-svm")
    texts = rtp_items() + TOXIC + BENIGN + ["", "   ", "Ünïcödé café", "the the the"]
    ours = scorer.score(texts)["toxicity"]
    _, vec, model = package_files()
    vectorizer, clf = load_joblib_restricted(str(vec)), load_joblib_restricted(str(model))
    ref = clf.predict_proba(vectorizer.transform(texts))[:, 1]
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    assert_orders(scorer)
    assert scorer.version.startswith("alt-profanity-check==")


def test_profanity_svm_batch_and_order_invariant():
    assert_batch_and_order_invariant("profanity-svm", rtp_items(), atol=1e-12)


# ----------------------------------------------------------------------------- BiLSTM

def test_bilstm_six_labels_ordering_and_invariance():
    scorer = load_scorer("jigsaw-bilstm")
    assert scorer.attributes == ("toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack")
    tox, ben = assert_orders(scorer)
    out = scorer.score(TOXIC + BENIGN)
    assert out["obscene"][:len(TOXIC)].mean() > out["obscene"][len(TOXIC):].mean()
    assert_batch_and_order_invariant("jigsaw-bilstm", rtp_items(40))


def test_bilstm_tokenizer_is_converted_once_to_json(tmp_path):
    from detoxkit.paths import cache_dir
    from detoxkit.scorers.bilstm import KerasTokenizer, pad_pre

    load_scorer("jigsaw-bilstm")
    (converted,) = cache_dir("scorers", "jigsaw-bilstm").glob("tokenizer-*.json")
    tok = KerasTokenizer(converted)
    assert tok.sequence("The, the!  THE") == [1, 1, 1]  # "the" is the most frequent word
    padded = pad_pre([[5, 6], list(range(1, 150))], maxlen=4)
    assert padded.tolist() == [[0, 0, 5, 6], [146, 147, 148, 149]]  # keras: pre-pad, keep the end


# ----------------------------------------------------------------------------- default scorer

@pytest.mark.slow
def test_default_scorer_orders_and_is_calibrated_to_threshold():
    scorer = load_scorer(DEFAULT_SCORER)
    tox, ben = assert_orders(scorer)
    assert tox.min() > 0.5 > ben.max()  # calibrated: 0.5 separates clear cases
    assert "all-MiniLM-L6-v2" in scorer.version
    assert_batch_and_order_invariant(DEFAULT_SCORER, rtp_items(40))


# ----------------------------------------------------------------------------- validate

def _validate(capsys, *args) -> tuple[dict, str]:
    assert main(["scorers", "validate", *map(str, args)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1]), "\n".join(out)


def test_validate_on_rtp_files_prints_json_last(capsys):
    result, text = _validate(capsys, "--scorer", "profanity-svm", "--data", RTP_CHALLENGING, "--data", RTP_NONTOXIC)
    assert {"auc", "spearman", "texts_per_s", "n"} <= set(result)
    # deduplicated scored prompt + continuation texts of both files; published figure 0.931 / 0.812
    assert result["n"] == 4765
    assert result["auc"] == pytest.approx(0.931, abs=0.002)
    assert result["spearman"] == pytest.approx(0.812, abs=0.002)
    assert result["texts_per_s"] > 0 and "profanity-svm" in text


def test_validate_generic_labelled_files(tmp_path, capsys):
    csv_path = tmp_path / "labelled.csv"
    with open(csv_path, "w", encoding="utf-8") as fh:
        fh.write("sentence,label\n")
        for t in TOXIC:
            fh.write(f"\"{t}\",1\n")
        for t in BENIGN:
            fh.write(f"\"{t}\",0\n")
        fh.write("no label here,\n")
    result, _ = _validate(capsys, "--scorer", "jigsaw-bilstm", "--data", csv_path,
                          "--text-field", "sentence", "--label-field", "label")
    assert result["n"] == 8 and result["auc"] == 1.0
    jsonl = tmp_path / "scored.jsonl"
    jsonl.write_text("".join(json.dumps({"t": t, "s": s}) + "\n"
                             for t, s in zip(TOXIC + BENIGN, [0.9, 0.8, 0.95, 0.7, 0.1, 0.05, 0.2, 0.0])))
    result, _ = _validate(capsys, "--scorer", "profanity-svm", "--data", jsonl, "--text-field", "t",
                          "--score-field", "s")
    assert result["n"] == 8 and result["auc"] == 1.0


def test_validate_errors_are_clear(tmp_path, capsys):
    bad = tmp_path / "plain.jsonl"
    bad.write_text(json.dumps({"text": "hi"}) + "\n")
    assert main(["scorers", "validate", "--scorer", "profanity-svm", "--data", str(bad)]) == 2
    assert "--text-field" in capsys.readouterr().err


def test_minilm_in_bfloat16_agrees_with_float32_and_says_so():
    texts = [json.loads(line)["prompt"]["text"] for path in (RTP_CHALLENGING, RTP_NONTOXIC)
             for line in path.read_text(encoding="utf-8").split("\n")[:20] if line]
    fp32, bf16 = load_scorer("detoxkit-minilm"), load_scorer("detoxkit-minilm:dtype=bfloat16")
    a, b = fp32.score(texts)["toxicity"], bf16.score(texts)["toxicity"]
    assert np.abs(a - b).max() < 0.05 and np.corrcoef(a, b)[0, 1] > 0.99
    assert bf16.version.split(" ")[0].endswith("-bf16") and not fp32.version.split(" ")[0].endswith("-bf16")
    with pytest.raises(DetoxkitError, match="dtype"):
        load_scorer("detoxkit-minilm:dtype=float16")


@pytest.mark.parametrize("native", ["1", "0"])
def test_minilm_dtype_auto_runs_bf16_only_where_the_cpu_has_it(monkeypatch, native):
    from detoxkit.scorers.minilm import MiniLMToxicityScorer

    monkeypatch.setenv("DETOXKIT_CPU_BF16", native)
    scorer = MiniLMToxicityScorer(dtype="auto")  # not load_scorer: it keeps one per spec
    assert scorer.dtype == ("bfloat16" if native == "1" else "float32")
    assert scorer.version.split(" ")[0].endswith("-bf16") == (native == "1")


def test_minilm_previous_default_is_shipped_by_name_and_differs_from_the_default():
    from detoxkit.scorers.minilm import PREVIOUS_WEIGHTS_NAME, MiniLMToxicityScorer

    texts = ["have a lovely day", "you are a stupid idiot", "the meeting moved to noon"]
    default = load_scorer("detoxkit-minilm")
    previous = MiniLMToxicityScorer(weights=PREVIOUS_WEIGHTS_NAME)
    assert previous.version != default.version
    assert previous.info()["training"]["lora_rank"] == 16 and default.info()["training"]["lora_rank"] == 64
    a, b = default.score(texts)["toxicity"], previous.score(texts)["toxicity"]
    assert (a[1] > 0.5 > a[0]) and (b[1] > 0.5 > b[0])
    with pytest.raises(DetoxkitError, match="not found"):
        MiniLMToxicityScorer(weights="no-such-weights.safetensors")
