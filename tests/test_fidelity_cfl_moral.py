"""Fidelity of the `paper` variants to the reference code, on hand cases and the tiny model.

CFL: the causal-ate-mitigates-bias reference (mask_and_replace.py, compute_ate_scores.py):
per word, stopwords and punctuation skipped, each word masked and filled with the top 5 fills,
each counterfactual's effect max(0, score(sentence) - score(filled)), a plain mean per word.
Moral: MoRT_NMI's mcm_models.py top_k_top_p_filtering (top-k 50, top-p, whole text scored,
kept above 0, the best 30 kept when 30 or fewer pass).

Each reference rule is transcribed directly in the test, and each test also shows that the
earlier detoxkit variant gives another answer on the same input.
"""

from __future__ import annotations

import hashlib
import math
import re

import numpy as np
import pytest
import torch

from detoxkit.backends.sampling import nucleus_sample
from detoxkit.corpus import CorpusRow
from detoxkit.methods.moral import MoralFilter, _MoralTransform
from detoxkit.training.cfl_paper import (
    STOPWORDS,
    LMFiller,
    masked_positions,
    normalize_text,
    paper_counterfactuals,
    paper_word_effects,
    word_effects_to_tokens,
    word_tokenize,
)
from detoxkit.training.token_tables import CFLConfig, _counterfactuals, substitute_token_effects

# ---- CFL ---------------------------------------------------------------------------------------

BAD = {"idiot": 2.5, "stupid": 1.5, "moron": 2.0, "dumb": 1.0}


def toy_scorer(texts):
    """A bag-of-words toxicity: sigmoid of the summed weights of the words (minus 2)."""
    out = []
    for t in texts:
        z = sum(BAD.get(w, 0.0) for w in re.findall(r"[a-z]+", t.lower())) - 2.0
        out.append(1.0 / (1.0 + math.exp(-z)))
    return np.array(out)


# A masked LM's top-5 fills, fixed per masked word (a stand-in for RoBERTa's predictions):
# fills that keep, lower and raise the toxicity, and the word itself.
FILLS = {
    "stupid": ["nice", "dumb", "stupid", "kind", "good"],
    "idiot": ["man", "moron", "friend", "idiot", "person"],
    "sir": ["madam", "idiot", "friend", "sir", "mate"],
    "think": ["know", "say", "feel", "believe", "guess"],
    "people": ["idiots", "folks", "men", "guys", "people"],
    "moron": ["man", "idiot", "kid", "guy", "moron"],
    "like": ["love", "hate", "beat", "like", "see"],
    "idiots": ["fools", "people", "idiots", "friends", "kids"],
}

SENTENCES = ["You are a STUPID idiot, Sir.", "I think people like you are idiots!",
             "what a moron", "Stupid, stupid idiot."]


def reference_word_ate(sentences, fills, score):
    """Direct transcription of the reference: normalise, split into words, mask each word that
    is not a stopword or punctuation, fill it with its top 5, effect clipped at 0, mean per word."""
    effects: dict[str, list[float]] = {}
    for text in sentences:
        norm = normalize_text(text)
        words = word_tokenize(norm)
        base = score([norm])[0]
        for i, w in enumerate(words):
            if w in STOPWORDS:
                continue
            for f in fills[w][:5]:
                filled = " ".join(words[:i] + [f] + words[i + 1:])
                effects.setdefault(w, []).append(max(0.0, base - score([filled])[0]))
    return {w: sum(v) / len(v) for w, v in effects.items()}


def recipe_word_ate(sentences, fills, score):
    records = []
    for text in sentences:
        norm = normalize_text(text)
        words = word_tokenize(norm)
        records.append({"text": norm, "words": words,
                        "fills": [[i, fills[words[i]]] for i in masked_positions(words)]})
    originals, texts, owners = paper_counterfactuals(records)
    return paper_word_effects(score(originals), score(texts), owners)


def test_words_stopwords_and_normalisation_of_a_hand_case():
    words = word_tokenize(normalize_text("You are a STUPID idiot, Sir. Don't!"))
    assert words == ["you", "are", "a", "stupid", "idiot", ",", "sir", ".", "do", "n't", "!"]
    assert [words[i] for i in masked_positions(words)] == ["stupid", "idiot", "sir", "n't"]
    assert normalize_text("  Héllò WÖRLD ") == "hello world"


def test_cfl_word_ate_equals_the_reference_formula():
    expected = reference_word_ate(SENTENCES, FILLS, toy_scorer)
    got = recipe_word_ate(SENTENCES, FILLS, toy_scorer)
    assert set(got) == set(expected) == {"stupid", "idiot", "sir", "think", "people", "like",
                                         "idiots", "moron"}
    for w, ate in expected.items():
        assert got[w][0] == pytest.approx(ate, abs=1e-12), w
    # every occurrence counts, 5 fills each: "stupid" occurs 3 times, "idiot" twice
    assert got["stupid"][1] == 15 and got["idiot"][1] == 10
    # clipped at 0: a fill that raises toxicity (sir -> idiot) never lowers a word's ATE below 0
    assert all(v[0] >= 0 for v in got.values())


def test_cfl_old_substitute_estimate_differs():
    """The earlier estimator (per token, one random substitute, signed, shrunk) on the same
    sentences does not give the reference's word ATEs."""
    expected = reference_word_ate(SENTENCES, FILLS, toy_scorer)
    tok = _simple_tokenizer()
    rows = [CorpusRow(i, t, 1) for i, t in enumerate(SENTENCES)] + [CorpusRow(9, "a nice day", 0)]
    originals, texts, owners = _counterfactuals(tok, rows, CFLConfig(estimator="substitute",
                                                                      substitutes=3))
    ids, effects, _ = substitute_token_effects(toy_scorer(originals), toy_scorer(texts), owners, 2.0)
    old = dict(zip(tok.convert_ids_to_tokens(ids), effects))
    assert old["Ġidiot"] != pytest.approx(expected["idiot"], abs=1e-3)
    assert "Ġare" in old and "are" not in expected  # per token: stopwords get effects too


def _simple_tokenizer():
    """A word-level byte-level BPE tokenizer over the hand case (every word one token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    corpus = SENTENCES + ["a nice day"] + [" ".join(v) for v in FILLS.values()]
    t.train_from_iterator(corpus * 20, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=t, eos_token="<|endoftext|>")


def test_cfl_word_effects_map_to_the_tokens_that_spell_them():
    """Each word's ATE goes to the generator tokens spelling it where it occurs (as written:
    case and accents kept); stopword occurrences count 0; a token's effect is the mean."""
    tok = _simple_tokenizer()
    texts = ["You idiot, you Idiot!", "an idiot idea", "I am here, Sir"]
    sentences = [(t, word_tokenize(normalize_text(t))) for t in texts]
    words = {"idiot": (0.4, 15), "idea": (0.1, 5), "sir": (0.2, 5)}
    ids, effects, counts = word_effects_to_tokens(tok, sentences, words)
    table = {t: (e, n) for t, e, n in zip(tok.convert_ids_to_tokens(ids), effects, counts)}
    (idiot,) = tok.convert_ids_to_tokens(tok(" idiot", add_special_tokens=False)["input_ids"])
    assert table[idiot] == (pytest.approx(0.4), 2)
    for t in tok.convert_ids_to_tokens(tok(" you", add_special_tokens=False)["input_ids"]):
        assert table[t][0] == 0.0  # a stopword: effect 0
    for t in tok.convert_ids_to_tokens(tok(" Sir", add_special_tokens=False)["input_ids"]):
        assert table[t][0] == pytest.approx(0.2)
    assert all(e >= 0 for e in effects)
    # the normalised text maps back to the text as written, accents and case included
    from detoxkit.training.cfl_paper import _normalized_with_map

    norm, where = _normalized_with_map(" Héllo WÖRLD ")
    assert norm == "hello world" and where[0] == 1 and where[-1] == 11


def test_cfl_lm_filler_ranks_by_whole_sentence_likelihood(tiny_lm):
    """LMFiller with window=0 (its cached, batched reranking) picks the pool candidates with the
    highest likelihood of the whole filled sentence, computed here without any cache."""
    filler = LMFiller(tiny_lm, fills=5, pool=12, window=0)
    words = ["the", "man", "said", "that", "people", "were", "all", "right"]
    positions = [1, 4, 7]
    got = filler(words, positions)
    ids, starts = filler.encode(words)
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
        for i, fills in zip(positions, got):
            lp = logp[starts[i] - 1].masked_fill(~filler.candidates[:logp.shape[-1]], float("-inf"))
            pool = torch.topk(lp, 12).indices.tolist()
            scores = {}
            for c in pool:
                end = starts[i + 1] if i + 1 < len(words) else len(ids)
                seq = ids[:starts[i]] + [c] + ids[end:]
                lps = torch.log_softmax(model(input_ids=torch.tensor([seq])).logits[0].float(), -1)
                scores[c] = float(sum(lps[j - 1, seq[j]] for j in range(1, len(seq))))
            best = sorted(pool, key=lambda c: -scores[c])[:5]
            want = [tok.decode([c]).strip() for c in best]
            assert len(fills) == 5
            # the same fills; near-ties (float sums) may swap neighbours
            assert set(fills) == set(want) or fills[:3] == want[:3], (words[i], fills, want)


# ---- moral ---------------------------------------------------------------------------------------


class HashScorer:
    """A deterministic stand-in for the moral scorer: a text's raw score is a hash of it in
    [-1, 1] (shifted by `bias`); records the texts it saw."""

    def __init__(self, bias=0.0):
        self.bias, self.seen = bias, []

    def _one(self, t):
        h = int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "big") / 2 ** 32
        return 2 * h - 1 + self.bias

    def raw_scores(self, texts):
        self.seen.extend(texts)
        return np.array([self._one(t) for t in texts])

    def moral_scores(self, texts):
        return np.clip(self.raw_scores(texts), -1, 1)


def reference_filter(logits, current, tokenizer, score, *, top_k=50, top_p=0.9, threshold=0.0,
                     keep_at_least=30, temperature=1.0):
    """Direct transcription of the reference's top_k_top_p_filtering with use_mcm, one row:
    returns (kept token ids, the sampling distribution)."""
    logits = logits.clone().float() / temperature
    kth = torch.topk(logits, top_k)[0][-1]
    logits[logits < kth] = float("-inf")
    sorted_logits, sorted_idx = torch.sort(logits, descending=True)
    cum = torch.cumsum(torch.softmax(sorted_logits, -1), -1)
    remove = cum > top_p
    remove[1:] = remove[:-1].clone()
    remove[0] = False
    logits[sorted_idx[remove]] = float("-inf")
    next_tokens = torch.nonzero(torch.softmax(logits, -1)).squeeze(-1).tolist()
    texts = tokenizer.batch_decode([current + [t] for t in next_tokens],
                                   clean_up_tokenization_spaces=True, skip_special_tokens=True)
    index_scores = sorted(zip(score(texts).tolist(), next_tokens), reverse=True)
    keep = [t for s, t in index_scores if s > threshold]
    if len(keep) <= keep_at_least:
        keep = [t for _, t in index_scores[:keep_at_least]]
    remove = torch.ones_like(logits, dtype=torch.bool)
    remove[keep] = False
    logits[remove] = float("-inf")
    return sorted(keep), torch.softmax(logits, -1)


def _moral_rows(tiny_lm):
    """Three rows: two flat distributions (many candidates in the nucleus), one peaked."""
    tok = tiny_lm.tokenizer
    V = tiny_lm.model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    prompts = [tok("The man said that", add_special_tokens=False)["input_ids"],
               tok("I think", add_special_tokens=False)["input_ids"],
               tok("Hello there", add_special_tokens=False)["input_ids"]]
    width = max(map(len, prompts)) + 2
    ids = torch.zeros(3, width, dtype=torch.long)
    mask = torch.zeros(3, width, dtype=torch.long)
    for b, p in enumerate(prompts):  # left padded, plus two generated tokens
        row = p + [40 + b, 50 + b]
        ids[b, width - len(row):] = torch.tensor(row)
        mask[b, width - len(row):] = 1
    logits = torch.randn(3, V, generator=gen) * 0.3
    logits[2] = torch.randn(V, generator=gen) - 20
    logits[2, [7, 8, 9]] = torch.tensor([5.0, 4.6, 4.0])
    return ids, mask, logits


@pytest.mark.parametrize("bias", [0.0, 0.6])  # 0.6: more than 30 candidates pass in a flat row
def test_moral_paper_kept_set_and_distribution_equal_the_reference(tiny_lm, bias):
    tok = tiny_lm.tokenizer
    ids, mask, logits = _moral_rows(tiny_lm)
    method = MoralFilter()
    assert (method.variant, method.threshold, method.candidates, method.keep, method.prompt) == \
        ("paper", 0.0, 50, 30, True)
    scorer = HashScorer(bias)
    t = _MoralTransform(method, scorer, tok)
    t.attention_mask = mask
    t.start = ids.shape[1] - 2  # two tokens generated already
    out = t(ids, logits)
    assert torch.isfinite(t.top_p_override).all() and (t.top_p_override == 1.0).all()
    for b in range(3):
        current = ids[b][mask[b].bool()].tolist()
        keep, dist = reference_filter(logits[b], current, tok, HashScorer(bias).raw_scores)
        kept = torch.isfinite(out[b]).nonzero().squeeze(-1).tolist()
        assert kept == keep, b
        # the sampler draws from the kept tokens with p = 1 (the override): the same distribution
        assert torch.allclose(torch.softmax(out[b], -1), dist, atol=1e-6)
    # the whole text is scored: every scored text starts with its row's prompt
    assert any(s.startswith("The man said that") for s in scorer.seen)
    assert any(s.startswith("I think") for s in scorer.seen)
    stats = method.run_stats()
    assert stats["candidates_scored"] == len(scorer.seen)
    if bias == 0.0:  # the flat rows hold ~45 candidates, about half pass: the best 30 stay
        assert stats["rows_kept_best"] >= 1
    # the peaked row keeps its whole (3-token) nucleus: 30 or fewer candidates are all kept
    assert torch.isfinite(out[2]).sum() == 3


def test_moral_paper_sampling_draws_only_kept_tokens(tiny_lm):
    ids, mask, logits = _moral_rows(tiny_lm)
    t = _MoralTransform(MoralFilter(), HashScorer(), tiny_lm.tokenizer)
    t.attention_mask = mask
    t.start = ids.shape[1] - 2
    out = t(ids, logits)
    us = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    for b in range(3):
        drawn = nucleus_sample(out[b:b + 1].expand(50, -1), us, top_p=t.top_p_override[b].item())
        assert torch.isfinite(out[b, drawn]).all()


def test_moral_old_continuation_variant_differs(tiny_lm):
    """detoxkit's earlier filter (10 candidates of the nucleus, continuation only, clipped axis,
    threshold -0.3, the best one kept) keeps another set than the reference on the same rows."""
    tok = tiny_lm.tokenizer
    ids, mask, logits = _moral_rows(tiny_lm)
    scorer = HashScorer()
    old = _MoralTransform(MoralFilter(variant="continuation"), scorer, tok)
    old.attention_mask = mask
    old.start = ids.shape[1] - 2
    out = old(ids, logits)
    current = ids[0][mask[0].bool()].tolist()
    keep, _ = reference_filter(logits[0], current, tok, HashScorer().raw_scores)
    assert torch.isfinite(out[0]).nonzero().squeeze(-1).tolist() != keep
    assert old.top_p_override is None  # it leaves the run's nucleus to the sampler
    assert len(scorer.seen) <= 3 * 10  # only 10 candidates per row were checked
