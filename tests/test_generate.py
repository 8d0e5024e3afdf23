"""The sampling engine: reproducible whatever the batching, shared prefill, filters."""

import pytest
import torch

from detoxkit.backends import Request, SamplingConfig
from detoxkit.backends.hf.sampler import TransformersSampler
from detoxkit.backends.sampling import TOP_P_TOLERANCE, nucleus_sample, sample_seed, step_uniforms

PROMPTS = ["The man said that", "Hello there, how are you doing today my friend", "I think"]


def requests(lm, k):
    return [Request(str(i), lm.tokenizer(t)["input_ids"], list(range(k))) for i, t in enumerate(PROMPTS)]


def test_same_samples_whatever_the_batch(tiny_lm):
    sampler = TransformersSampler(tiny_lm, SamplingConfig(num_samples=4, max_new_tokens=10, seed=7))
    together = sampler.generate(requests(tiny_lm, 4))
    one_by_one = [s for r in reversed(requests(tiny_lm, 4)) for i in reversed(r.sample_indices)
                  for s in sampler.generate([Request(r.prompt_id, r.prompt_ids, [i])])]
    key = lambda s: (s.prompt_id, s.sample_index)  # noqa: E731
    assert sorted((key(s), s.token_ids) for s in together) == sorted((key(s), s.token_ids) for s in one_by_one)
    assert len({tuple(s.token_ids) for s in together}) > 1  # it does sample


def test_seed_changes_samples(tiny_lm):
    a = TransformersSampler(tiny_lm, SamplingConfig(num_samples=3, max_new_tokens=8, seed=1)).generate(requests(tiny_lm, 3))
    b = TransformersSampler(tiny_lm, SamplingConfig(num_samples=3, max_new_tokens=8, seed=2)).generate(requests(tiny_lm, 3))
    assert [s.token_ids for s in a] != [s.token_ids for s in b]


def test_matches_unbatched_reference_decoding(tiny_lm):
    """Cache expansion + left padding give the same tokens as a plain full-sequence loop."""
    cfg = SamplingConfig(num_samples=2, max_new_tokens=6, seed=3)
    samples = TransformersSampler(tiny_lm, cfg).generate(requests(tiny_lm, 2))
    model = tiny_lm.model
    for s in samples:
        ids = tiny_lm.tokenizer(PROMPTS[int(s.prompt_id)])["input_ids"]
        out = []
        for step in range(len(s.token_ids)):
            with torch.no_grad():
                logits = model(torch.tensor([ids + out])).logits[:, -1, :].float()
            out.append(int(nucleus_sample(logits, step_uniforms([s.seed], step),
                                          temperature=cfg.temperature, top_p=cfg.top_p)[0]))
        assert out == s.token_ids


def test_reserved_cache_layer_matches_concatenation():
    from transformers.cache_utils import DynamicLayer

    from detoxkit.backends.hf.sampler import ReservedLayer

    k0, v0 = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4)
    grown, reserved = DynamicLayer(), ReservedLayer(k0, v0, room=2)
    grown.update(k0, v0)
    for _ in range(2):
        k, v = torch.randn(3, 2, 1, 4), torch.randn(3, 2, 1, 4)
        want, got = grown.update(k, v), reserved.update(k, v)
        assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])
    assert reserved.get_seq_length() == grown.get_seq_length() == 7
    with pytest.raises(RuntimeError, match="cache full"):
        reserved.update(k, v)


def test_decoding_writes_into_the_reserved_cache(tiny_lm, monkeypatch):
    """The sampler's steps append in place (no per-step copy of the cache) with the tokens that
    the full-sequence reference above checks."""
    from detoxkit.backends.hf import sampler as sampler_module

    seen = []
    real = sampler_module.reserve_cache

    def recording(cache, rows, room):
        real(cache, rows, room)
        seen.append(cache)

    monkeypatch.setattr(sampler_module, "reserve_cache", recording)
    samples = TransformersSampler(tiny_lm, SamplingConfig(num_samples=2, max_new_tokens=6, seed=3)
                                  ).generate(requests(tiny_lm, 2))
    layers = seen[0].layers
    assert all(isinstance(layer, sampler_module.ReservedLayer) for layer in layers)
    width = max(len(r.prompt_ids) for r in requests(tiny_lm, 2))
    if not any(s.finished for s in samples):  # all 6 steps ran; the last token is not fed back
        assert layers[0].get_seq_length() == width + 6 - 1
    assert width < layers[0].get_seq_length() <= width + 6 - 1


def test_eos_ends_a_sample(tiny_lm):
    # force EOS at step 2 by a transform that only allows EOS from then on
    from detoxkit.methods.base import DetoxMethod, LogitsTransform

    eos = tiny_lm.tokenizer.eos_token_id

    class ForceEOS(DetoxMethod):
        name = "force-eos"

        def bind(self, lm):
            class T(LogitsTransform):
                calls = 0

                def __call__(self, input_ids, logits):
                    T.calls += 1
                    if T.calls >= 3:
                        logits = torch.full_like(logits, float("-inf"))
                        logits[:, eos] = 0.0
                    return logits
            return T()

    samples = TransformersSampler(tiny_lm, SamplingConfig(num_samples=2, max_new_tokens=10),
                                  ForceEOS()).generate(requests(tiny_lm, 2))
    assert all(s.finished and s.n_tokens <= 2 for s in samples)


def draw(probs, n=20000, **kw):
    logits = torch.log(torch.tensor(probs)).expand(n, len(probs))
    seeds = [sample_seed(0, "p", i) for i in range(n)]
    tokens = nucleus_sample(logits, step_uniforms(seeds, 0), **kw)
    return (torch.bincount(tokens, minlength=len(probs)).double() / n).tolist()


def test_nucleus_keeps_the_smallest_set_reaching_top_p():
    probs = [0.5, 0.3, 0.15, 0.05]
    freq = draw(probs, top_p=0.9)
    assert freq[3] == 0.0
    assert freq[:3] == pytest.approx([0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95], abs=0.015)
    assert draw(probs, top_k=2)[2:] == [0.0, 0.0]


@pytest.mark.parametrize("offset", [-0.4, 0.0, 0.4])
def test_nucleus_mass_at_top_p_counts_as_reached(offset):
    """A nucleus whose mass lands on top_p (within the tolerance, whatever the CPU's last bits
    of exp/log) stops there: top_p=0.5 over [0.5, 0.3, 0.15, 0.05] keeps the top token only."""
    probs = [0.5, 0.3, 0.15, 0.05]
    top_p = 0.5 + offset * TOP_P_TOLERANCE  # float32 logits move the mass by ~1e-7 at most
    assert draw(probs, n=400, top_p=top_p) == [1.0, 0.0, 0.0, 0.0]
    quarters = draw([0.25] * 4, n=4000, top_p=0.75 + offset * TOP_P_TOLERANCE)
    kept = [f for f in quarters if f > 0]  # which 3 of the equal tokens is topk's choice
    assert len(kept) == 3 and min(kept) > 0.28


def test_nucleus_mass_clearly_short_of_top_p_takes_the_next_token():
    probs = [0.5, 0.3, 0.15, 0.05]
    freq = draw(probs, top_p=0.5 + 100 * TOP_P_TOLERANCE)
    assert freq[2:] == [0.0, 0.0]
    assert freq[:2] == pytest.approx([0.5 / 0.8, 0.3 / 0.8], abs=0.015)


def test_plain_sampling_follows_the_distribution():
    assert draw([0.2, 0.5, 0.3]) == pytest.approx([0.2, 0.5, 0.3], abs=0.015)
    assert draw([0.2, 0.5, 0.3], temperature=0.01, n=100) == [0.0, 1.0, 0.0]


def test_wide_nucleus_beyond_the_first_candidates():
    # 2,000 equally likely tokens: the nucleus needs the full-vocabulary fallback
    freq = draw([1 / 2000] * 2000, n=4000, top_p=0.9)
    used = sum(f > 0 for f in freq)
    assert 1500 < used <= 1800


def test_sampling_config_validates():
    with pytest.raises(ValueError):
        SamplingConfig(top_p=0)
    with pytest.raises(ValueError):
        SamplingConfig(temperature=-0.1)


def test_temperature_zero_is_greedy():
    probs = [0.2, 0.5, 0.3]
    assert draw(probs, n=50, temperature=0) == [0.0, 1.0, 0.0]
    assert draw(probs, n=50, temperature=0, top_p=0.1, top_k=2) == [0.0, 1.0, 0.0]


def test_top_p_per_row():
    """A method that truncates itself asks for its own top-p on its rows (NaN: the run's)."""
    from detoxkit.backends.hf.sampler import row_top_p

    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    n = 4000
    logits = torch.log(probs).expand(n, 4)
    seeds = [sample_seed(0, "p", i) for i in range(n)]
    per_row = row_top_p(0.5, torch.tensor([float("nan"), 1.0]).repeat(n // 2))
    tokens = nucleus_sample(logits, step_uniforms(seeds, 0), top_p=per_row)
    first, second = tokens[0::2], tokens[1::2]
    assert set(first.tolist()) == {0}  # the run's top-p 0.5: the top token only
    freq = torch.bincount(second, minlength=4).double() / len(second)
    assert freq.tolist() == pytest.approx([0.5, 0.3, 0.15, 0.05], abs=0.03)
