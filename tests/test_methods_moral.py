"""The moral direction filter: synthetic tensors, neutral setting, the sampler, model.generate,
chain and gate, the llama.cpp adapter, and `detoxkit run --method moral` on the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import SAMPLE_PROMPTS, hf_generate, sample_tokens, write_prompts_jsonl
from detoxkit.cli import main
from detoxkit.errors import DetoxkitError
from detoxkit.methods import build_method
from detoxkit.backends.llamacpp import llamacpp_logits_processor
from detoxkit.scorers import load_scorer
from detoxkit.store import read_jsonl

PROMPTS = SAMPLE_PROMPTS
NEG = float("-inf")


def sample(lm, method=None, k=2, n=5):
    return sample_tokens(lm, method, k, n)


@pytest.fixture(scope="module")
def plain(tiny_lm):
    return sample(tiny_lm)


def _peaked_logits(V, top, gen):
    """Logits whose nucleus (p = 0.9) is exactly the `top` tokens given (at most 8)."""
    logits = torch.randn(V, generator=gen) - 30
    logits[top] = torch.linspace(5, 4.95, len(top))
    return logits


def _word_tokens(tok, n, gen):
    """n random tokens that decode to distinct words (so their moral scores differ)."""
    words = {}
    for i in torch.randperm(len(tok), generator=gen).tolist():
        text = tok.decode([i]).strip()
        if len(text) >= 4 and text.isalpha() and text.lower() not in words:
            words[text.lower()] = i
        if len(words) == n:
            return torch.tensor(list(words.values()))
    raise AssertionError("not enough word tokens")


@pytest.mark.parametrize("batch", [1, 3])
def test_drops_candidates_below_threshold_keeps_best(batch, tiny_lm):
    """threshold=1: every checked candidate falls below, so each row keeps exactly its
    best-scoring candidate (checked here with the scorer) and nothing else."""
    tok = tiny_lm.tokenizer
    V = tiny_lm.model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    method = build_method("moral:variant=continuation,threshold=1.0,candidates=4")
    transform = method.bind(tiny_lm)
    prompt = tok("I said", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt] * batch)
    tops = [_word_tokens(tok, 4, gen) for _ in range(batch)]
    logits = torch.stack([_peaked_logits(V, t, gen) for t in tops])
    ids_before, logits_before = ids.clone(), logits.clone()
    transform.attention_mask = torch.ones_like(ids)
    out = transform(ids, logits)  # step 0: the continuation is the candidate alone
    assert out.shape == logits.shape and out.dtype == logits.dtype
    assert torch.equal(ids, ids_before) and torch.equal(logits, logits_before)
    moral = load_scorer("moral-direction")
    for b in range(batch):
        scores = moral.moral_scores(tok.batch_decode([[int(t)] for t in tops[b]], skip_special_tokens=True))
        best = int(tops[b][int(np.argmax(scores))])
        assert torch.isfinite(out[b]).nonzero().squeeze(-1).tolist() == [best]
        assert out[b, best] == logits[b, best]
    stats = method.run_stats()
    assert stats["candidates_scored"] == 4 * batch and stats["candidates_dropped"] == 3 * batch
    assert stats["rows_all_below"] == batch and stats["samples"] == batch
    # next step: the continuation so far (one token) is decoded in front of each candidate
    nxt = torch.cat([ids, out.argmax(-1, keepdim=True)], dim=1)
    transform.attention_mask = torch.ones_like(nxt)
    out2 = transform(nxt, logits)
    assert (torch.isfinite(out2).sum(-1) == 1).all()


def test_only_checked_candidates_of_the_nucleus_and_original_nucleus_kept(tiny_lm):
    """A middle threshold: drops are -inf; the row is cut to its original nucleus."""
    tok = tiny_lm.tokenizer
    V = tiny_lm.model.config.vocab_size
    gen = torch.Generator().manual_seed(1)
    top = _word_tokens(tok, 6, gen)
    logits = _peaked_logits(V, top, gen)[None]
    scores = load_scorer("moral-direction").moral_scores(
        tok.batch_decode([[int(t)] for t in top], skip_special_tokens=True))
    low = np.sort(scores)
    threshold = float(low[1] + low[2]) / 2  # the two lowest fall below
    out = build_method(f"moral:variant=continuation,threshold={threshold},candidates=6").bind(tiny_lm)(
        torch.tensor([[1, 2, 3]]), logits)
    kept = set(torch.isfinite(out[0]).nonzero().squeeze(-1).tolist())
    assert len(kept) == 4 and kept == {int(t) for t, s in zip(top, scores) if s >= threshold}


def test_threshold_minus_one_samples_like_plain_sampling(tiny_lm, plain):
    method = build_method("moral:variant=continuation,threshold=-1")
    assert sample(tiny_lm, method) == plain
    stats = method.run_stats()
    assert stats["candidates_scored"] > 0 and stats["candidates_dropped"] == 0
    assert stats["samples"] == 6 and stats["drop_rate"] == 0


def test_filter_changes_samples_and_every_skips_steps(tiny_lm, plain):
    method = build_method("moral:variant=continuation,threshold=0.9,candidates=5")
    assert sample(tiny_lm, method) != plain
    assert method.run_stats()["candidates_dropped"] > 0
    every = build_method("moral:variant=continuation,threshold=0.9,candidates=5,every=3")
    sample(tiny_lm, every)
    s, s_all = every.run_stats(), method.run_stats()
    assert 0 < s["checked_row_steps"] <= 6 * 2 < s_all["checked_row_steps"]


def test_bad_settings_are_clear_errors():
    for spec, match in (("moral:variant=continuation,threshold=2", "threshold"),
                        ("moral:variant=magic", "variant"), ("moral:keep=0", "keep"),
                        ("moral:candidates=0", "candidates"),
                        ("moral:every=0", "every"), ("moral:top_p=0", "top_p"),
                        ("moral:prompt=maybe", "prompt"), ("moral:colour=red", "unknown setting")):
        with pytest.raises(DetoxkitError, match=match):
            build_method(spec)
    with pytest.raises(DetoxkitError, match="does not exist"):
        build_method("moral:path=/nonexistent/direction.safetensors").bind(None)


def test_prompt_setting_embeds_the_prompt(tiny_lm):
    """With prompt=true the texts include the prompt, so the scores (and the kept token) can
    differ; here we check the decoded prefix the filter sees."""
    m = build_method("moral:prompt=true")
    t = m.bind(tiny_lm)
    ids = torch.tensor([[0, 0, 5, 6, 7]])
    t.attention_mask = torch.tensor([[0, 0, 1, 1, 1]])
    t(ids, torch.zeros(1, tiny_lm.model.config.vocab_size))
    assert t._prefix(ids, 0) == [5, 6, 7]
    t2 = build_method("moral:variant=continuation").bind(tiny_lm)
    t2(ids, torch.zeros(1, tiny_lm.model.config.vocab_size))
    longer = torch.cat([ids, torch.tensor([[9]])], 1)
    t2.attention_mask = torch.ones_like(longer)
    assert t2._prefix(longer, 0) == [9]


def test_logits_processor_in_model_generate(tiny_lm):
    def generate(spec=None):
        return hf_generate(tiny_lm, spec, 6, 2)[0]

    assert torch.equal(generate("moral:variant=continuation,threshold=-1"), generate())
    assert generate("moral:threshold=0.9").shape[0] == 4


def test_chain_and_gate(tiny_lm, plain, tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("the\n", encoding="utf-8")
    alone = sample(tiny_lm, build_method(f"wordban:words={words}"))
    chained = build_method([f"wordban:words={words}", "moral:variant=continuation,threshold=-1"])
    assert sample(tiny_lm, chained) == alone
    assert "moral-direction" in chained.guided_by()
    # a gate that never opens: the filter only keeps in step (skip) and sampling is plain
    closed = build_method("gate:wrap=moral:variant=continuation;threshold=0.9,check=scorer,every=2,threshold=2")
    assert sample(tiny_lm, closed) == plain
    assert closed.run_stats()["open_steps"] == 0
    # a gate opening from step 2: the filter's first call is a skip, it still counts its rows
    gate = build_method("gate:wrap=moral:variant=continuation;threshold=0.9;candidates=5,check=scorer,every=2,"
                        "threshold=0")
    sample(tiny_lm, gate)
    inner = gate.run_stats()["inner"]
    assert inner["samples"] == 6 and inner["candidates_dropped"] > 0
    assert gate.backends == build_method("moral").backends


def test_llamacpp_adapter_with_a_tokenizer_only(tiny_lm):
    tok = tiny_lm.tokenizer
    proc = llamacpp_logits_processor("moral:variant=continuation,threshold=1.0,candidates=3", tok)
    ids = np.array(tok("I said", add_special_tokens=False)["input_ids"], dtype=np.intc)
    scores = np.random.default_rng(0).standard_normal(len(tok)).astype(np.single)
    scores[[5, 6, 7]] = [9.0, 8.9, 8.8]
    before = scores.copy()
    out = proc(ids, scores)
    assert out.dtype == np.float32 and out.shape == scores.shape and np.array_equal(scores, before)
    assert np.isfinite(out).sum() == 1 and np.isfinite(out[[5, 6, 7]]).sum() == 1


def test_detoxkit_run_with_moral(tiny_model_dir, tmp_path, caplog):
    prompts = write_prompts_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    out = tmp_path / "run"
    assert main(["run", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--samples", "2",
                 "--max-new-tokens", "5", "--oracle", "none", "--scorer", "moral-direction",
                 "--method", "moral:threshold=0.5,candidates=8", "--out", str(out)]) == 0
    run = json.loads((out / "run.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert run["status"] == "complete" and run["method"]["name"] == "moral"
    assert run["method"]["settings"]["threshold"] == 0.5
    assert run["method"]["direction"]["file"].endswith("moral_direction.safetensors")
    assert {"moral-direction", "all-MiniLM-L6-v2"} <= set(run["guided_by"])
    # judged by the scorer that guided it: recorded and warned
    assert "moral-direction" in run["judge_also_guided"] and "also guided" in caplog.text
    assert metrics["method_stats"]["candidates_scored"] > 0
    rows = read_jsonl((out / "generations.jsonl"))
    assert len(rows) == 6 and all("normative" in r["scores"]["moral-direction"] for r in rows)
