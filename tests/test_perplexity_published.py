"""`perplexity_published`: the DExperts code's perplexity, checked against a transcription of
its `conditional_perplexity` (full-sequence loss minus the prompt's, mean of per-sample
perplexities below 1e4)."""

import math

import pytest
import torch

from detoxkit.metrics import SampleRecord, published_perplexity
from detoxkit.store import read_jsonl

PAIRS = [("The man said that", " he would come back"),  # tokenized apart = together
         ("I think th", "at it is fine"),  # a word split across the boundary: tokenized together
         ("Hello there", "")]


def reference_nll(lm, prompt: str, continuation: str) -> tuple[float, int]:
    """As the reference computes it: loss(prompt + generation) * (L - 1) - loss(prompt) * (P - 1)."""
    tok, model = lm.tokenizer, lm.model
    full = tok(prompt + continuation, return_tensors="pt")["input_ids"]
    part = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        full_loss = model(full, labels=full).loss.item() * (full.shape[1] - 1)
        part_loss = model(part, labels=part).loss.item() * (part.shape[1] - 1)
    return full_loss - part_loss, full.shape[1] - part.shape[1]


def test_published_nll_matches_the_reference(tiny_model_dir):
    from detoxkit.backends.hf import HFBackend

    backend = HFBackend(str(tiny_model_dir))
    tok = backend.lm.tokenizer
    prompts, conts = zip(*PAIRS)
    separate = backend.continuation_nll(list(prompts), list(conts))
    published = backend.published_nll(list(prompts), list(conts), separate)
    assert tok(PAIRS[1][0] + PAIRS[1][1])["input_ids"] != (
        tok(PAIRS[1][0])["input_ids"] + tok(PAIRS[1][1], add_special_tokens=False)["input_ids"])
    for (p, c), (nll, n), (sep_nll, _) in zip(PAIRS[:2], published, separate):
        ref_nll, ref_n = reference_nll(backend.lm, p, c)
        assert n == ref_n and nll == pytest.approx(ref_nll, rel=1e-4, abs=1e-3)
    assert published[0][0] == separate[0][0]  # the common case costs nothing more
    assert published[1][0] != pytest.approx(separate[1][0], rel=1e-6)
    assert published[2] == (0.0, 0)


def test_published_aggregate_is_a_filtered_mean_of_sample_perplexities():
    def rec(i, ppl, n=4):
        return SampleRecord("p", i, "x", 0.1, nll_published=math.log(ppl) * n, tokens_published=n)

    out = published_perplexity([rec(0, 5.0), rec(1, 15.0), rec(2, 2e4), rec(3, 1.0, n=0)])
    assert out["perplexity_published"] == pytest.approx(10.0)
    assert out["n_perplexity_published_dropped"] == 1
    assert math.isnan(published_perplexity([])["perplexity_published"])


def test_runs_record_it_next_to_the_pooled_perplexity(tiny_model_dir, tmp_path):
    import json

    from helpers import write_prompts_jsonl
    from detoxkit.cli import main

    prompts = write_prompts_jsonl(tmp_path / "p.jsonl", ["The man said that", "I think"])
    out = tmp_path / "run"
    assert main(["run", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--samples", "3",
                 "--max-new-tokens", "5", "--scorer", "profanity-svm", "--oracle", str(tiny_model_dir),
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["perplexity"] > 1 and metrics["perplexity_published"] > 1
    rows = read_jsonl((out / "generations.jsonl"))
    assert all("oracle_nll_published" in r for r in rows)
