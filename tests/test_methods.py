"""Decoding-time methods: synthetic tensors, the sampler, transformers generate, adapters."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from helpers import SAMPLE_PROMPTS, hf_generate, sample_tokens as sample
from detoxkit.errors import DetoxkitError
from detoxkit.methods import build_method
from detoxkit.backends.llamacpp import llamacpp_logits_processor
from detoxkit.artefacts import artefact_name, save_table
from detoxkit.methods.lora import TopLayers
from detoxkit.methods.wordban import BanTable

PROMPTS = SAMPLE_PROMPTS


@pytest.fixture(scope="module")
def words_file(tmp_path_factory, tiny_lm):
    """A word list of words that the tiny tokenizer spells with one and with several tokens."""
    tok = tiny_lm.tokenizer
    single = multi = None
    for w in ["the", "and", "that", "people", "because", "government", "president", "something"]:
        n = len(tok(" " + w, add_special_tokens=False)["input_ids"])
        if n == 1 and single is None:
            single = w
        if n >= 2 and multi is None:
            multi = w
    assert single and multi
    path = tmp_path_factory.mktemp("words") / "words.txt"
    path.write_text(f"# test list\n{single}\n{multi}\n", encoding="utf-8")
    return path, single, multi


@pytest.fixture(scope="module")
def tables(tmp_path_factory, tiny_lm):
    """Small vocab-shift and CFL tables for the tiny tokenizer (no corpus needed)."""
    tok = tiny_lm.tokenizer
    d = tmp_path_factory.mktemp("tables")
    width = len(tok)
    gen = torch.Generator().manual_seed(0)
    ids = torch.arange(0, width, 3, dtype=torch.int32)
    vs = save_table(d / artefact_name("vocab_shift", tok),
                    {"ids": ids, "values": (torch.rand(len(ids), generator=gen) * 2 - 1).half()}, {})
    eff = torch.rand(len(ids), generator=gen) * 0.4 - 0.1
    cfl = save_table(d / artefact_name("cfl", tok),
                     {"ids": ids, "effects": eff, "counts": torch.full((len(ids),), 5, dtype=torch.int32)},
                     {"scorer": "profanity-svm"})
    return vs, cfl


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_lm):
    """Random (non-zero) LoRA adapters for DExperts and GeDi on the tiny model's top layer."""
    out = {}
    for kind, names in (("experts", ("expert", "antiexpert")), ("gedi", ("nontoxic", "toxic"))):
        torch.manual_seed(1)
        top = TopLayers(tiny_lm.model, 1, 4, 2.0, trainable=True)
        with torch.no_grad():
            for _, _, m in top.lora_modules():
                m.lora_B.normal_(std=0.3)
        path = tmp_path_factory.mktemp(kind)
        top.save_adapters(path, names, "tiny", {"base_model": "tiny"})
        out[kind] = path
    return out




def specs(words, tables, adapters):
    vs, cfl = tables
    return {
        "wordban": f"wordban:words={words}",
        "vocab-shift": f"vocab-shift:path={vs}",
        "cfl": f"cfl:path={cfl}",
        "dexperts": f"dexperts:alpha=2.0,path={adapters['experts']}",
        "gedi": f"gedi:weight=5,path={adapters['gedi']}",
        "gate": f"gate:wrap=wordban:words={words},threshold=0.01",  # check=paper
        "gate-dexperts": f"gate:wrap=dexperts:alpha=2.0;path={adapters['experts']},check=cfl,"
                         f"table={cfl},threshold=0.2",
    }


# ---- the interface on synthetic tensors ------------------------------------------------------

@pytest.mark.parametrize("name", ["wordban", "vocab-shift", "cfl", "dexperts", "gedi", "gate",
                                  "gate-dexperts"])
@pytest.mark.parametrize("batch", [1, 4])
def test_shapes_kept_inputs_untouched(name, batch, tiny_lm, words_file, tables, adapters):
    method = build_method(specs(words_file[0], tables, adapters)[name])
    transform = method.bind(tiny_lm)
    ids = torch.randint(1, len(tiny_lm.tokenizer), (batch, 6))
    V = tiny_lm.model.config.vocab_size
    for step in range(3):
        logits = torch.randn(batch, V)
        ids_before, logits_before = ids.clone(), logits.clone()
        if name in ("dexperts", "gedi", "gate-dexperts"):  # these follow the real model's forwards
            tiny_lm.model(input_ids=ids if step == 0 else ids[:, -1:], use_cache=False)
        transform.attention_mask = torch.ones_like(ids)
        out = transform(ids, logits)
        assert out.shape == logits.shape and out.dtype == logits.dtype
        assert torch.equal(ids, ids_before) and torch.equal(logits, logits_before)
        assert not torch.isnan(out).any()
        ids = torch.cat([ids, torch.randint(1, V, (batch, 1))], dim=1)


def test_ls_lists_every_method():
    from detoxkit.registry import METHODS

    names = {e.name for e in METHODS.entries()}
    assert {"none", "wordban", "vocab-shift", "cfl", "dexperts", "gedi", "gate"} <= names


def test_bad_settings_are_clear_errors():
    with pytest.raises(DetoxkitError, match="unknown setting .colour."):
        build_method("wordban:colour=red")
    with pytest.raises(DetoxkitError, match="wrap"):
        build_method("gate:threshold=0.5")
    with pytest.raises(DetoxkitError, match="check must be"):
        build_method("gate:wrap=wordban,check=magic")


def test_missing_artefact_names_the_train_command(tiny_lm, tmp_path, monkeypatch):
    monkeypatch.setenv("DETOXKIT_HOME", str(tmp_path))
    with pytest.raises(DetoxkitError, match="detoxkit train vocab-shift"):
        build_method("vocab-shift").bind(tiny_lm)
    with pytest.raises(DetoxkitError, match="detoxkit train experts"):
        build_method("dexperts").bind(tiny_lm)
    with pytest.raises(DetoxkitError, match="detoxkit train cfl --model"):
        build_method("cfl").bind(tiny_lm)
    with pytest.raises(DetoxkitError, match="detoxkit train cfl --estimator substitute"):
        build_method("cfl:variant=substitute").bind(tiny_lm)


def test_cfl_variants():
    """paper (default) reads the `cfl-` table, substitute detoxkit's earlier `cfl-substitute-`."""
    from detoxkit.methods.tables import CFL

    assert build_method("cfl").settings()["variant"] == "paper" and CFL().kind == "cfl"
    assert CFL(variant="substitute").kind == "cfl-substitute"
    with pytest.raises(DetoxkitError, match="variant must be one of paper, substitute"):
        build_method("cfl:variant=magic")


# ---- word banning ----------------------------------------------------------------------------

def test_wordban_blocks_single_and_multi_token_variants(tiny_lm, words_file):
    path, single, multi = words_file
    tok = tiny_lm.tokenizer
    transform = build_method(f"wordban:words={path}").bind(tiny_lm)
    V = len(tok)
    s_ids = tok(" " + single, add_special_tokens=False)["input_ids"]
    m_ids = tok(" " + multi, add_special_tokens=False)["input_ids"]
    cap_ids = tok(" " + multi.capitalize(), add_special_tokens=False)["input_ids"]
    prompt = tok("I said", add_special_tokens=False)["input_ids"]
    # after the prefix of the multi-token word, its last token is banned
    rows = [prompt + m_ids[:-1], prompt, prompt + cap_ids[:-1]]
    width = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])  # left padding
    out = transform(ids, torch.zeros(3, V))
    assert out[0, m_ids[-1]] == float("-inf")
    assert out[2, cap_ids[-1]] == float("-inf")  # case variant
    assert out[:, s_ids[0]].eq(float("-inf")).all()  # single-token word: every row, every step
    if m_ids[-1] not in (s_ids[0],):
        assert torch.isfinite(out[1, m_ids[-1]])  # no prefix, no ban
    assert torch.isfinite(out).sum() >= 3 * V - 3 * 20


def test_wordban_no_space_variant_only_at_word_boundary(tiny_lm, tmp_path):
    tok = tiny_lm.tokenizer
    word = next(w for w in ["the", "and", "to", "of", "in", "is", "it", "he", "on", "at", "an"]
                if len(tok(w, add_special_tokens=False)["input_ids"]) == 1)
    bare = tok(word, add_special_tokens=False)["input_ids"]
    path = tmp_path / "w.txt"
    path.write_text(word + "\n", encoding="utf-8")
    table = BanTable(tok, [word])
    transform = build_method(f"wordban:words={path}").bind(tiny_lm)
    after_paren = tok("I said (", add_special_tokens=False)["input_ids"]
    mid_word = tok("I said x", add_special_tokens=False)["input_ids"]
    assert table.ends_word[mid_word[-1]] and not table.ends_word[after_paren[-1]]
    out = transform(torch.tensor([after_paren[-3:], mid_word[-3:]]), torch.zeros(2, len(tok)))
    assert out[0, bare[0]] == float("-inf")
    assert torch.isfinite(out[1, bare[0]])


def test_wordban_banned_words_never_sampled(tiny_lm, words_file):
    path, single, multi = words_file
    tok = tiny_lm.tokenizer
    samples = sample(tiny_lm, build_method(f"wordban:words={path}"), k=8, n=12)
    for ids in samples:
        text = " " + tok.decode(ids).lower() + " "
        assert f" {single} " not in text and f" {multi} " not in text
        assert tok(" " + single, add_special_tokens=False)["input_ids"][0] not in ids


# ---- neutral settings and the sampler --------------------------------------------------------

@pytest.mark.parametrize("spec", ["none", "dexperts:alpha=0", "gedi:weight=0", "vocab-shift:strength=0",
                                  "cfl:strength=0", "GATE_NEVER", "CHAIN_NEUTRAL"])
def test_neutral_settings_sample_like_plain_sampling(spec, tiny_lm, tables, adapters):
    _, cfl = tables
    if spec == "GATE_NEVER":  # a gate that never opens around a real DExperts
        spec = [f"gate:wrap=dexperts:alpha=2.0;path={adapters['experts']},table={cfl},threshold=2"]
    elif spec == "CHAIN_NEUTRAL":
        spec = ["vocab-shift:strength=0", "dexperts:alpha=0"]
    method = build_method(spec)
    assert sample(tiny_lm, method) == sample(tiny_lm)
    if method.name == "gate":
        stats = method.run_stats()
        assert stats["open_steps"] == 0 and stats["steps"] > 0 and stats["samples"] == 9


def test_methods_change_samples(tiny_lm, tables, adapters, words_file):
    plain = sample(tiny_lm)
    for name, spec in specs(words_file[0], tables, adapters).items():
        if name.startswith("gate"):
            continue
        assert sample(tiny_lm, build_method(spec)) != plain, name


@pytest.mark.parametrize("kind", ["dexperts", "gedi"])
def test_adapter_methods_independent_of_batching(kind, tiny_lm, tables, adapters, words_file):
    """Left padding, shared prefill and the experts' own cache: a prompt's samples are the same
    alone or batched with longer and shorter prompts."""
    spec = specs(words_file[0], tables, adapters)[kind]
    together = sample(tiny_lm, build_method(spec), k=2)
    alone = [s for p in PROMPTS for s in sample(tiny_lm, build_method(spec), k=2, prompts=[p])]
    assert together == alone


def test_gate_open_everywhere_equals_the_wrapped_method(tiny_lm, tables, adapters):
    _, cfl = tables
    inner = f"dexperts:alpha=2.0;path={adapters['experts']}"
    gate = build_method(f"gate:wrap={inner},table={cfl},threshold=0")
    assert sample(tiny_lm, gate) == sample(tiny_lm, build_method(inner.replace(";", ",")))
    stats = gate.run_stats()
    assert stats["open_rate"] == 1.0 and stats["samples_opened"] == stats["samples"] == 9
    assert stats["first_open_step"] == {0: 9}


def test_gate_records_where_it_opened(tiny_lm, tables, adapters):
    from detoxkit.methods.tables import CFL

    _, cfl = tables
    # a threshold between the prompts' next-token risks, so that the gate opens for some rows
    risky = (CFL(path=str(cfl)).effects(tiny_lm.tokenizer) >= 0.1).float()
    with torch.no_grad():
        risks = [float(torch.softmax(tiny_lm.model(**tiny_lm.tokenizer(p, return_tensors="pt"))
                                     .logits[0, -1], -1) @ risky[:tiny_lm.model.config.vocab_size])
                 for p in PROMPTS]
    threshold = sorted(risks)[1]
    gate = build_method(f"gate:wrap=gedi:weight=5;path={adapters['gedi']},check=cfl,table={cfl},"
                        f"threshold={threshold}")
    sample(tiny_lm, gate, n=10)
    stats = gate.run_stats()
    assert 0 < stats["open_steps"] < stats["steps"]
    assert sum(stats["first_open_step"].values()) == stats["samples_opened"] <= stats["samples"]
    assert sum(stats["open_by_step"].values()) == stats["open_steps"]


def test_gate_with_scorer_check(tiny_lm, adapters):
    gate = build_method(f"gate:wrap=dexperts:path={adapters['experts']},check=scorer,every=2,"
                        f"threshold=0.0")
    sample(tiny_lm, gate, n=6)
    stats = gate.run_stats()
    # opens at the first check (step 2) and stays open until the next one
    assert min(stats["first_open_step"]) == 2 and stats["open_by_step"].get(1) is None
    assert "profanity-svm" in gate.guided_by()


def test_gate_paper_check_opens_per_candidate(tiny_lm, adapters):
    """check=paper (the default) around a stateful method, at a threshold between the prompts'
    scores: some row-steps open (their token drawn again under DExperts), step 0 is checked,
    and every live row-step's candidate is classified."""
    from detoxkit.scorers import load_scorer

    scores = sorted(load_scorer("profanity-svm").score(PROMPTS)["toxicity"])
    gate = build_method(f"gate:wrap=dexperts:alpha=2.0;path={adapters['experts']},"
                        f"threshold={scores[1]}")
    out = sample(tiny_lm, gate, n=8)
    stats = gate.run_stats()
    assert len(out) == 9 and 0 < stats["open_steps"] < stats["steps"] == stats["classified"]
    assert gate.settings()["check"] == "paper" and "profanity-svm" in gate.guided_by()


def _peft_reference(lm, path):
    from peft import PeftModel

    pm = PeftModel.from_pretrained(copy.deepcopy(lm.model), str(path / "expert"), adapter_name="expert")
    pm.load_adapter(str(path / "antiexpert"), adapter_name="antiexpert")
    pm.eval()

    def logits(ids, name):
        if name is None:
            with pm.disable_adapter():
                return pm(input_ids=ids).logits[:, -1]
        pm.set_adapter(name)
        return pm(input_ids=ids).logits[:, -1]
    return logits


@torch.no_grad()
def test_dexperts_equals_three_peft_forwards_and_catches_up_after_skips(tiny_lm, adapters):
    """The adapters are PEFT-loadable; the top-layer batched forward with its own KV cache gives
    base + alpha * (expert - anti-expert) of three full PEFT forwards, also after skipped steps."""
    ref = _peft_reference(tiny_lm, adapters["experts"])
    # the ensemble itself (mode=paper would also cut the base to its nucleus: see test_fidelity_experts)
    transform = build_method(f"dexperts:alpha=2.0,mode=ensemble-then-nucleus,"
                             f"path={adapters['experts']}").bind(tiny_lm)
    ids = torch.tensor([tiny_lm.tokenizer("The man said that")["input_ids"]])
    model = tiny_lm.model
    out = model(input_ids=ids, use_cache=True)
    cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
    arg = "cache" if getattr(out, "cache", None) is not None else "past_key_values"
    for step in range(5):
        transform.attention_mask = torch.ones_like(ids)
        base = out.logits[:, -1].float()
        if step in (1, 2):  # a closed gate: the transform only keeps up
            transform.skip(ids, base)
            nxt = base.argmax(-1, keepdim=True)
        else:
            got = transform(ids, base)
            want = ref(ids, None) + 2.0 * (ref(ids, "expert") - ref(ids, "antiexpert"))
            assert torch.allclose(got, want, atol=1e-4), step
            nxt = got.argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
        out = model(input_ids=nxt, use_cache=True, **{arg: cache})
        cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values


# ---- transformers generate, llama.cpp and vLLM adapters ---------------------------------------

def test_logits_processor_in_model_generate(tiny_lm, words_file, adapters):
    path, single, _ = words_file
    banned = tiny_lm.tokenizer(" " + single, add_special_tokens=False)["input_ids"][0]

    def generate(spec=None):
        return hf_generate(tiny_lm, spec, 10, 3)[0]

    out, width = hf_generate(tiny_lm, f"wordban:words={path}", 10, 3)
    assert banned not in out[:, width:].flatten().tolist()
    dex = generate(f"dexperts:alpha=2.0,path={adapters['experts']}")
    assert dex.shape[0] == 6
    assert torch.equal(generate(f"dexperts:alpha=0,path={adapters['experts']}"), generate())


def test_llamacpp_adapter_numpy_in_out(tiny_lm, words_file, tables, adapters):
    """Synthetic arrays only: llama-cpp-python itself is not installed here."""
    path, single, _ = words_file
    tok = tiny_lm.tokenizer
    proc = llamacpp_logits_processor(f"wordban:words={path}", tok)  # a tokenizer is enough
    ids = np.array(tok("I said", add_special_tokens=False)["input_ids"], dtype=np.intc)
    scores = np.random.default_rng(0).standard_normal(len(tok)).astype(np.single)
    before = scores.copy()
    out = proc(ids, scores)
    assert out.dtype == np.float32 and out.shape == scores.shape
    assert np.array_equal(scores, before)
    assert out[tok(" " + single, add_special_tokens=False)["input_ids"][0]] == -np.inf
    chained = llamacpp_logits_processor([f"vocab-shift:path={tables[0]}", f"cfl:path={tables[1]}"], tok)
    assert np.isfinite(chained(ids, scores)).all()
    with pytest.raises(DetoxkitError, match="does not support the llamacpp backend"):
        llamacpp_logits_processor(f"dexperts:path={adapters['experts']}", tok)
