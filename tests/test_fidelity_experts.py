"""DExperts and GeDi against their authors' reference decoding.

Each test writes the reference's formula out in a few lines (from the equations of
alisawuffles/DExperts generation/dexperts_generation.py and salesforce/GeDi modeling_utils.py
_generate_no_beam_search), computes the expert / class-LM logits with independent full PEFT
forwards of the tiny model, and compares the next-token distribution detoxkit's sampler draws
from (method output, its per-row top-p, temperature) with the reference's. A second test per
method shows that detoxkit's earlier variant differs where it matters.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from detoxkit.backends.hf.sampler import cache_kwarg, cache_of, row_top_p
from detoxkit.backends.sampling import nucleus_sample
from detoxkit.errors import DetoxkitError
from detoxkit.methods import build_method
from detoxkit.methods.lora import TopLayers

LOGIT_SCALE = 1.7  # written into the test GeDi adapters' detoxkit.json: gedi must apply it


@pytest.fixture(scope="module")
def adapter_dirs(tmp_path_factory, tiny_lm):
    """Random (non-zero) LoRA adapters on the tiny model's top layer."""
    out = {}
    for kind, names, extra in (("experts", ("expert", "antiexpert"), {}),
                               ("gedi", ("nontoxic", "toxic"), {"logit_scale": LOGIT_SCALE})):
        torch.manual_seed(2)
        top = TopLayers(tiny_lm.model, 1, 4, 2.0, trainable=True)
        with torch.no_grad():
            for _, _, m in top.lora_modules():
                m.lora_B.normal_(std=0.3)
        path = tmp_path_factory.mktemp(kind)
        top.save_adapters(path, names, "tiny", {"base_model": "tiny", **extra})
        out[kind] = path
    return out


def peft_logits(lm, path, names):
    """name (or None: the base model) -> all-position logits [T, V] of one unpadded row."""
    from peft import PeftModel

    pm = PeftModel.from_pretrained(copy.deepcopy(lm.model), str(path / names[0]), adapter_name=names[0])
    pm.load_adapter(str(path / names[1]), adapter_name=names[1])
    pm.eval()

    @torch.no_grad()
    def logits(ids: list[int], name: str | None) -> torch.Tensor:
        x = torch.tensor([ids])
        if name is None:
            with pm.disable_adapter():
                return pm(input_ids=x).logits[0].float()
        pm.set_adapter(name)
        return pm(input_ids=x).logits[0].float()
    return logits


def sampled_distribution(scores: torch.Tensor, temperature: float, top_p: float, n: int = 40000):
    """The distribution detoxkit's sampler draws one row from: its inverse-CDF token for n
    evenly spaced uniforms (exact to 1/n per token)."""
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    tokens = nucleus_sample(scores[None].expand(n, -1), u, temperature=temperature, top_p=top_p)
    return torch.bincount(tokens, minlength=scores.shape[-1]).double() / n


class Stepper:
    """Drives a bound transform the way the sampler does: the model's forward (which the
    adapters hook) on the new tokens, then the transform on (ids, mask, logits)."""

    def __init__(self, lm, transform, rows: list[list[int]]):
        self.lm, self.t = lm, transform
        pad = lm.tokenizer.pad_token_id
        width = max(map(len, rows))
        self.ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        self.mask = (torch.arange(width)[None] >= torch.tensor([width - len(r) for r in rows])[:, None]).long()
        self.cache = None
        self.pending = self.ids

    @torch.no_grad()
    def step(self, logits_fn=None):
        from detoxkit.tokens import position_ids

        model = self.lm.model
        pos = position_ids(self.mask)[:, -self.pending.shape[1]:]
        kw = {} if self.cache is None else {cache_kwarg(model): self.cache}
        out = model(input_ids=self.pending, attention_mask=self.mask, position_ids=pos,
                    use_cache=True, **kw)
        self.cache = cache_of(out)
        base = out.logits[:, -1].float()
        if logits_fn is not None:
            base = logits_fn(base)
        self.t.attention_mask, self.t.top_p_override = self.mask, None
        return base, self.t(self.ids, base)

    def append(self, tokens: list[int]):
        self.pending = torch.tensor(tokens)[:, None]
        self.ids = torch.cat([self.ids, self.pending], dim=1)
        self.mask = torch.cat([self.mask, torch.ones_like(self.pending)], dim=1)


# ---- DExperts ---------------------------------------------------------------------------------

def dexperts_reference(base, expert, anti, alpha, filter_p, temperature):
    """DExperts' reference step: the base logits cut to their filter_p nucleus (the tokens
    whose higher-ranked mass does not exceed filter_p), + alpha (expert - anti-expert), then
    divided by the temperature and sampled with p = 1: the next-token distribution."""
    order = base.argsort(descending=True)
    mass_above = torch.softmax(base[order], -1).cumsum(-1) - torch.softmax(base[order], -1)
    cut = torch.full_like(base, float("-inf"))
    inside = order[mass_above <= filter_p]
    cut[inside] = base[inside]
    return torch.softmax((cut + alpha * (expert - anti)) / temperature, -1)


def _dexperts_case(tiny_lm, adapter_dirs, spec, text, logits_fn=None):
    transform = build_method(spec).bind(tiny_lm)
    ids = tiny_lm.tokenizer(text)["input_ids"]
    stepper = Stepper(tiny_lm, transform, [ids])
    base, scores = stepper.step(logits_fn)
    return ids, base[0], scores[0], transform


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_dexperts_paper_mode_is_the_reference_distribution(temperature, tiny_lm, adapter_dirs):
    path = adapter_dirs["experts"]
    ref = peft_logits(tiny_lm, path, ("expert", "antiexpert"))  # before binding: no hooks copied
    ids, base, scores, transform = _dexperts_case(tiny_lm, adapter_dirs, f"dexperts:path={path}",
                                                  "The man said that")
    assert torch.allclose(base, ref(ids, None)[-1], atol=1e-4)
    want = dexperts_reference(base, ref(ids, "expert")[-1], ref(ids, "antiexpert")[-1],
                              alpha=2.0, filter_p=0.9, temperature=temperature)
    top_p = row_top_p(0.9, transform.top_p_override)  # the run asks for 0.9; paper mode for 1
    assert float(top_p[0]) == 1.0
    got = sampled_distribution(scores, temperature, float(top_p[0]))
    assert (got - want).abs().max() <= 2 / 40000 + 1e-6
    assert torch.allclose(torch.softmax(scores / temperature, -1), want, atol=1e-5)
    assert (want[torch.isinf(scores)] == 0).all() and torch.isinf(scores).any()


def test_dexperts_earlier_variant_samples_outside_the_base_nucleus(tiny_lm, adapter_dirs):
    """Where expert - anti-expert favours tokens the base model rules out, ensembling first and
    cutting the ensemble at 0.9 samples them; the reference never does."""
    path = adapter_dirs["experts"]
    ids = tiny_lm.tokenizer("I think")["input_ids"]
    ref = peft_logits(tiny_lm, path, ("expert", "antiexpert"))
    delta = ref(ids, "expert")[-1] - ref(ids, "antiexpert")[-1]
    alpha = max(2.0, 24.0 / float(delta.max() - delta.min()))
    peaked = torch.zeros_like(delta)
    peaked[delta.argsort()[:4]] = 8.0  # the base nucleus: the 4 tokens the experts like least

    def base_logits(_):
        return peaked[None].clone()

    nucleus = torch.zeros_like(delta, dtype=torch.bool)
    nucleus[delta.argsort()[:4]] = True
    want = dexperts_reference(peaked, delta, torch.zeros_like(delta), alpha, 0.9, 1.0)
    assert want[~nucleus].sum() == 0

    _, _, paper, t_paper = _dexperts_case(tiny_lm, adapter_dirs, f"dexperts:alpha={alpha},path={path}",
                                          "I think", base_logits)
    got = sampled_distribution(paper, 1.0, float(row_top_p(0.9, t_paper.top_p_override)[0]))
    assert (got - want).abs().max() <= 2 / 40000 + 1e-6

    _, _, old, t_old = _dexperts_case(
        tiny_lm, adapter_dirs, f"dexperts:alpha={alpha},mode=ensemble-then-nucleus,path={path}",
        "I think", base_logits)
    assert t_old.top_p_override is None
    old_dist = sampled_distribution(old, 1.0, 0.9)
    assert old_dist[~nucleus].sum() > 0.5  # most of its mass where the reference puts none
    assert 0.5 * (old_dist - want).abs().sum() > 0.5


def test_dexperts_mode_settings_are_checked():
    with pytest.raises(DetoxkitError, match="mode must be one of paper, ensemble-then-nucleus"):
        build_method("dexperts:mode=ensemble")
    with pytest.raises(DetoxkitError, match="filter_p apply to mode=paper only"):
        build_method("dexperts:mode=ensemble-then-nucleus,filter_p=0.8")
    assert build_method("dexperts").settings()["filter_p"] == 0.9


# ---- GeDi -------------------------------------------------------------------------------------

def gedi_reference(seq, prompt_len, base, lp_desired_lm, lp_undesired_lm, *, weight=30.0,
                   class_bias=2.0, scale=LOGIT_SCALE, filter_p=0.8, target_p=0.8,
                   penalty=1.2, penalty_scale=10.0):
    """GeDi's reference step for one row (`seq`: prompt + continuation, no padding). The control
    code is the adapter, so the class LM scores every token after the first, plus the candidate.
    lp_*: [len(seq), V] log-softmax of each class LM. Returns (logits before the temperature,
    log P(desired | seq, v))."""
    n = len(seq)  # scored tokens (len - 1) + the candidate
    ll = [sum(float(lp[i, seq[i + 1]]) for i in range(len(seq) - 1)) for lp in (lp_desired_lm, lp_undesired_lm)]
    desired = (ll[0] + lp_desired_lm[-1]) / n * scale + class_bias
    undesired = (ll[1] + lp_undesired_lm[-1]) / n * scale
    logp_des = desired - torch.logaddexp(desired, undesired)
    out = torch.log_softmax(base, -1) + weight * logp_des
    # generate_GeDi.py moves target_p by the class bias
    t = 1 / (1 + math.exp(-(math.log(target_p / (1 - target_p)) + class_bias)))
    order = logp_des.argsort()  # least desired first
    cum = torch.softmax(out, -1)[order].cumsum(-1)
    out[order[(cum < filter_p) & (logp_des[order] < math.log(t))]] -= 10000
    out = out - out.max() + penalty_scale
    rescaled = 0
    for tok in seq[prompt_len:]:  # generated tokens, in order, once per occurrence
        top = bool(out[tok] == penalty_scale)
        out[tok] /= penalty
        if top:
            out = out - out.max() + penalty_scale
            rescaled += 1
    return out, logp_des, rescaled


def test_gedi_paper_mode_is_the_reference_step(tiny_lm, adapter_dirs):
    path = adapter_dirs["gedi"]
    tok = tiny_lm.tokenizer
    prompts = [tok("The man said that")["input_ids"], tok("I think")["input_ids"]]
    ref = peft_logits(tiny_lm, path, ("nontoxic", "toxic"))  # before binding: no hooks copied
    transform = build_method(f"gedi:path={path}").bind(tiny_lm)
    stepper = Stepper(tiny_lm, transform, prompts)
    V = tiny_lm.model.config.vocab_size
    a, x = 11, 29  # continuation a, x, a: row 0 repeats a token it is pushed to (the maximum)
    bump = torch.zeros(2, V)
    bump[0, a] = 40.0
    seqs, rescaled = [list(p) for p in prompts], 0
    for cont in ([a, a], [x, x], [a, a], None):
        base, scores = stepper.step(lambda b: b + bump)
        assert torch.equal(transform.top_p_override, torch.ones(2, dtype=torch.float64))
        for r, seq in enumerate(seqs):
            lp = [torch.log_softmax(ref(seq, name), -1) for name in ("nontoxic", "toxic")]
            want, _, k = gedi_reference(seq, len(prompts[r]), base[r].clone(), *lp)
            rescaled += k
            removed = want < -5000
            assert torch.equal(scores[r] < -5000, removed)
            assert torch.allclose(scores[r][~removed], want[~removed], atol=2e-3)
            for temperature in (1.0, 0.7):
                assert torch.allclose(torch.softmax(scores[r] / temperature, -1),
                                      torch.softmax(want / temperature, -1), atol=1e-5)
        if cont is None:
            break
        stepper.append(cont)
        for seq, t in zip(seqs, cont):
            seq.append(t)
    assert rescaled >= 2  # the penalised-maximum branch ran


def test_gedi_earlier_variant_differs_from_the_first_step(tiny_lm, adapter_dirs):
    """mode=continuation scores the continuation only, normalised by its length (1 at the first
    step), without class bias: at the first step its posterior separates candidates far more
    than the reference's, and the distributions differ."""
    path = adapter_dirs["gedi"]
    ids = tiny_lm.tokenizer("The man said that")["input_ids"]
    ref = peft_logits(tiny_lm, path, ("nontoxic", "toxic"))
    lp = [torch.log_softmax(ref(ids, name), -1) for name in ("nontoxic", "toxic")]
    old_t = build_method(f"gedi:mode=continuation,path={path}").bind(tiny_lm)
    base, old = Stepper(tiny_lm, old_t, [ids]).step()
    want, logp_des, _ = gedi_reference(ids, len(ids), base[0].clone(), *lp)
    old_post = old[0] - base[0]  # weight * log P(non-toxic | v) of the earlier variant
    ref_post = 30.0 * logp_des
    assert float(old_post.max() - old_post.min()) > 2 * float(ref_post.max() - ref_post.min())
    assert old_t.top_p_override is None  # the run's top-p
    old_dist = sampled_distribution(old[0], 1.0, 0.9)
    assert 0.5 * (old_dist - torch.softmax(want, -1)).abs().sum() > 0.05


def test_gedi_mode_settings():
    paper = build_method("gedi").settings()
    assert paper["class_bias"] == 2.0 and paper["filter_p"] == 0.8 and paper["target_p"] == 0.8
    assert paper["repetition_penalty"] == 1.2 and paper["rep_penalty_scale"] == 10.0
    assert build_method("gedi:mode=continuation").settings()["class_bias"] == 0.0
    with pytest.raises(DetoxkitError, match="apply to mode=paper only"):
        build_method("gedi:mode=continuation,repetition_penalty=1.2")
    with pytest.raises(DetoxkitError, match="mode must be one of"):
        build_method("gedi:mode=prompt")


def test_ranked_prefix_equals_a_full_sort():
    """The nucleus cut and GeDi's heuristic rank tokens without sorting the vocabulary: the same
    sets as a full sort (large vocabularies, excluded tokens, mass ranked above every token)."""
    from detoxkit.methods.experts import ranked_prefix

    g = torch.Generator().manual_seed(0)
    for trial in range(8):
        B, V = 4, [50, 3000, 49152, 20000][trial % 4]
        key = torch.randn(B, V, generator=g, dtype=torch.float64) * (1 + 4 * trial)
        if trial % 2:
            key[:, ::3] = float("-inf")
        probs = torch.softmax(torch.randn(B, V, generator=g, dtype=torch.float64) * 3, -1)
        above = torch.rand(B, generator=g, dtype=torch.float64) * 0.3
        order = key.argsort(-1, descending=True)
        live = torch.isfinite(key.gather(-1, order))
        p = probs.gather(-1, order) * live
        before = above[:, None] + torch.cat([torch.zeros(B, 1, dtype=torch.float64),
                                             p.cumsum(-1)[:, :-1]], dim=-1)
        for limit in (0.0, 0.2, 0.9):
            for inclusive in (True, False):
                inside = (before <= limit if inclusive else before < limit) & live
                want = torch.zeros(B, V, dtype=torch.bool).scatter(-1, order, inside)
                assert torch.equal(ranked_prefix(key, probs, limit, inclusive, above), want)
