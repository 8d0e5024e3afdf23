"""`detoxkit train rlhf`: segmentation and reward deltas, the PPO arithmetic against hand
computation, PPO steps on the tiny model raising an easy reward, resume after kill -9, the
training prompts and their refusals."""

from __future__ import annotations

import csv
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from detoxkit.store import read_jsonl
import torch

from helpers import RTP_CHALLENGING, RTP_NONTOXIC, corpus_from, write_prompts_jsonl
from detoxkit.cli import main
from detoxkit.errors import DetoxkitError
from detoxkit.registry import SCORERS
from detoxkit.scorers import Scorer
from detoxkit.training.ppo import KLController, gae, kl_per_token, masked_whiten, ppo_loss
from detoxkit.training.rlhf_rewards import (parse_reward_weights, prefix_texts, segment_ends,
                                            toxicity_rewards)


class FirstHalfLetters(Scorer):
    """A deterministic lexical reward model for the loop test: 'toxicity' is the share of the
    text's letters in a..m, so the reward rises as the policy moves to other tokens."""

    name = "first-half-letters"
    version = "1"

    def _score_batch(self, texts):
        out = []
        for text in texts:
            letters = [c for c in text.lower() if c.isalpha()]
            out.append(sum(c <= "m" for c in letters) / len(letters) if letters else 0.5)
        return {"toxicity": out}


if "first-half-letters" not in SCORERS:
    SCORERS.register("first-half-letters", "test_training_rlhf:FirstHalfLetters", "tests only")

SUBJECTS = ["The old farmer", "My little sister", "Our new teacher", "A quiet student",
            "The city council", "Every morning the baker"]
VERBS = ["walked to the market", "opened the window", "wrote a long letter", "planted some trees",
         "cooked a warm dinner", "painted the fence"]


def neutral_prompts(n: int = 36) -> list[str]:
    """Prompts written here (none is in an evaluation set)."""
    return [f"{s} {v} and then" for s in SUBJECTS for v in VERBS][:n]


# ---- segmentation and rewards ------------------------------------------------------------

def _decoder(pieces):
    return lambda ids: "".join(pieces[i] for i in ids)


@pytest.mark.parametrize("pieces, ends", [
    (["He", " left", ".", " Then", " she", " came", "!", " And"], [2, 6, 7]),  # ends mid-sentence
    (["I", " think", " that", " we"], [3]),  # no sentence end: one segment
    (["Yes", ".", " No", "?", " "], [1, 4]),  # trailing whitespace joins the last segment
    (["\n", "The", " end", "."], [3]),  # a leading line break is no segment of its own
    (["It", " costs", " 3", ".", "5", " now", "."], [6]),  # a decimal point ends no sentence
    (["Hi", ".\n", "Ok"], [1, 2]),  # the end inside a token
    (['"', "Stop", '!"', " he", " said"], [2, 4]),  # closing quote after the mark
    (["Wait", "...", " what", "?!"], [1, 3]),  # runs of marks are one end
])
def test_segment_ends_on_hand_written_tokens(pieces, ends):
    assert segment_ends(prefix_texts(_decoder(pieces), list(range(len(pieces))))) == ends


def test_segment_ends_map_back_to_real_tokens(tiny_lm):
    tok = tiny_lm.tokenizer
    ids = tok("The man left. Why did he go? Because it was late and", add_special_tokens=False)["input_ids"]
    decode = lambda x: tok.decode(x, skip_special_tokens=True)  # noqa: E731
    prefixes = prefix_texts(decode, ids)
    ends = segment_ends(prefixes)
    assert len(ends) == 3 and ends[-1] == len(ids) - 1
    assert prefixes[ends[0]].rstrip().endswith("left.") and prefixes[ends[1]].rstrip().endswith("go?")
    assert not prefixes[ends[0] - 1].rstrip().endswith(".")  # the first token that completes it


TABLE = {"He left.": 0.1, "He left. Then she came!": 0.7, "He left. Then she came! And": 0.4,
         "I think that we": 0.3}


def _table_toxicity(texts):
    return [TABLE[t] for t in texts]


def test_fine_grained_rewards_are_minus_each_segments_increase():
    pieces = ["He", " left", ".", " Then", " she", " came", "!", " And", "I", " think", " that", " we"]
    rollouts = [list(range(8)), [8, 9, 10, 11]]
    rewards, whole, segments = toxicity_rewards("fine-grained", rollouts, _decoder(pieces),
                                                _table_toxicity)
    # first segment against 0, then the differences; the partial last segment at the last token
    assert rewards[0] == pytest.approx([0, 0, -0.1, 0, 0, 0, -(0.7 - 0.1), -(0.4 - 0.7)])
    assert sum(rewards[0]) == pytest.approx(-0.4)  # telescopes to -tox(whole continuation)
    assert rewards[1] == pytest.approx([0, 0, 0, -0.3])  # no sentence end: one segment
    assert whole == pytest.approx([0.4, 0.3]) and segments == [3, 1]


def test_holistic_reward_at_the_last_token_only():
    pieces = ["He", " left", ".", " Then", " she", " came", "!", " And"]
    rewards, whole, segments = toxicity_rewards("holistic", [list(range(8))], _decoder(pieces),
                                                _table_toxicity)
    assert rewards[0] == pytest.approx([0] * 7 + [1 - 0.4]) and segments == [1]


def test_a_segment_the_scorer_cannot_score_changes_nothing():
    pieces = ["A", ".", " B", ".", " C"]
    tox = {"A.": 0.2, "A. B.": math.nan, "A. B. C": 0.5}
    rewards, _, _ = toxicity_rewards("fine-grained", [list(range(5))], _decoder(pieces),
                                     lambda texts: [tox[t] for t in texts])
    assert rewards[0] == pytest.approx([0, -0.2, 0, 0, -0.3])


def test_reward_weights():
    assert parse_reward_weights("toxicity=1,fluency=0.1") == {"toxicity": 1.0, "fluency": 0.1}
    assert parse_reward_weights("fluency=0.5") == {"toxicity": 0.0, "fluency": 0.5}
    for bad, why in (("toxcity=1", "TERM=WEIGHT"), ("toxicity", "TERM=WEIGHT"),
                     ("toxicity=a", "not a number"), ("toxicity=0", "nothing to learn")):
        with pytest.raises(DetoxkitError, match=why):
            parse_reward_weights(bad)


# ---- PPO arithmetic ------------------------------------------------------------------------

def test_gae_against_hand_computation():
    rewards = torch.tensor([[0.0, 0.5, 1.0], [0.2, -1.0, 9.0]])
    values = torch.tensor([[0.1, 0.3, 0.6], [0.4, 0.2, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # row 2 ends after two tokens
    g, lam = 0.9, 0.8
    adv, ret = gae(rewards, values, mask, g, lam)
    # row 1: deltas from the end, V after the last token = 0
    d2 = 1.0 - 0.6
    d1 = 0.5 + g * 0.6 - 0.3
    d0 = 0.0 + g * 0.3 - 0.1
    a2, a1 = d2, d1 + g * lam * d2
    a0 = d0 + g * lam * a1
    # row 2: the padded token (reward 9, value 5) is not part of the episode
    e1 = -1.0 - 0.2
    e0 = 0.2 + g * 0.2 - 0.4
    b1, b0 = e1, e0 + g * lam * e1
    assert adv.flatten().tolist() == pytest.approx([a0, a1, a2, b0, b1, 0.0])
    assert ret.flatten().tolist() == pytest.approx([a0 + 0.1, a1 + 0.3, a2 + 0.6, b0 + 0.4, b1 + 0.2, 0.0])


def test_whitened_advantages_over_valid_tokens_only():
    adv = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    out = masked_whiten(adv, mask)
    valid = torch.tensor([1.0, 2.0, 3.0, 4.0])
    expected = (valid - valid.mean()) / valid.var(unbiased=False).sqrt()
    assert out[mask.bool()].tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    assert out[~mask.bool()].tolist() == [0.0, 0.0]


def test_k1_kl_per_token_and_its_expectation():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]])
    ref = torch.tensor([[-1.5, -1.0], [-0.5, -0.2]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    assert kl_per_token(logp, ref, mask).flatten().tolist() == pytest.approx([0.5, -1.0, 0.0, 0.0])
    # sampled from p, the mean of log p - log q is KL(p || q)
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    q = torch.tensor([0.25, 0.25, 0.25, 0.25])
    draws = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    k1 = kl_per_token(p.log()[draws], q.log()[draws], torch.ones(len(draws)))
    assert float(k1.mean()) == pytest.approx(float((p * (p / q).log()).sum()), abs=0.01)


def test_clipped_ppo_loss_against_hand_computation():
    eps, eps_v, vf = 0.2, 0.5, 0.1
    ratios = [1.5, 0.5, 1.1, 0.7]  # clipped (A > 0), clipped (A < 0), inside, outside but A > 0
    adv = torch.tensor([[1.0, -2.0, 0.5, 3.0]])
    old = torch.tensor([[-1.0, -2.0, -0.5, -1.5]])
    logp = (old + torch.log(torch.tensor([ratios]))).requires_grad_(True)
    old_v = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    values = torch.tensor([[2.0, 1.2, -1.0, 0.1]], requires_grad=True)
    returns = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    mask = torch.ones(1, 4)
    out = ppo_loss(logp, old, adv, values, old_v, returns, mask, eps, eps_v, vf)
    # per token max(-A r, -A clip(r)): 1.5 -> -1.2 (clipped), 0.5 -> 1.6 (clipped), 1.1 -> -0.55,
    # 0.7 -> max(-2.1, -2.4) = -2.1 (the unclipped term: the pessimistic bound)
    policy = (-1.2 + 1.6 - 0.55 - 2.1) / 4
    # value: clipped prediction old + clip(v - old, -0.5, 0.5); max of the squared errors
    value = 0.5 * (max(1.0, (0.5 - 1.0) ** 2) + max(1.44, 1.44) + max(1.0, 0.25) + max(0.01, 0.01)) / 4
    assert out.policy == pytest.approx(policy)
    assert out.value == pytest.approx(value)
    assert float(out.loss.detach()) == pytest.approx(policy + vf * value)
    assert out.clip_fraction == pytest.approx(3 / 4)  # 1.5, 0.5, 0.7 lie outside [0.8, 1.2]
    out.loss.backward()
    grad = logp.grad[0].tolist()
    assert grad[0] == 0.0 and grad[1] == 0.0  # clipped tokens give no policy gradient
    assert grad[2] == pytest.approx(-0.5 * 1.1 / 4) and grad[3] == pytest.approx(-3.0 * 0.7 / 4)


def test_kl_controller_fixed_and_adaptive():
    fixed = KLController(0.1)
    assert fixed.update(50.0, 16) == 0.1
    adaptive = KLController(0.1, target=2.0, horizon=100)
    assert adaptive.update(10.0, 16) == pytest.approx(0.1 * (1 + 0.2 * 16 / 100))  # error clipped
    assert adaptive.update(1.8, 16) == pytest.approx(0.1 * (1 + 0.2 * 0.16) * (1 - 0.1 * 0.16))
    with pytest.raises(ValueError):
        KLController(0.1, target=0.0)


# ---- training prompts --------------------------------------------------------------------

def _doubled(text: str) -> str:
    return f"{text} {text}"  # its first half of words is `text` again


@pytest.fixture(scope="module")
def continuation_corpus(tmp_path_factory) -> Path:
    """A labelled corpus from RTP continuations labelled by their toxicity, plus rows whose
    first half is an RTP challenging prompt (an evaluation prompt: never to be picked)."""
    path = tmp_path_factory.mktemp("rlhf-corpus") / "clean_data.csv"
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["is_offensive", "text"])
        challenging = RTP_CHALLENGING.read_text(encoding="utf-8").splitlines()
        for line in challenging[:60]:
            writer.writerow([1, _doubled(json.loads(line)["prompt"]["text"])])
        for src in (RTP_CHALLENGING, RTP_NONTOXIC):
            for line in src.read_text(encoding="utf-8").splitlines()[:400]:
                part = json.loads(line)["continuation"]
                if part.get("toxicity") is not None:
                    writer.writerow([int(part["toxicity"] >= 0.5), part["text"]])
    return path


def test_corpus_prompts_are_balanced_first_halves_of_training_rows(continuation_corpus):
    from detoxkit.corpus import clean_text, iter_corpus
    from detoxkit.training.rlhf_prompts import check_disjoint, corpus_prompts, holdout_texts

    with corpus_from(continuation_corpus):
        rows = {r.row: r for r in iter_corpus(pool="train")}
        everything = corpus_prompts(len(rows) // 4, seed=1)  # no holdout given
        prompts = corpus_prompts(len(rows) // 4, seed=1, held_out=holdout_texts("auto"))
        check_disjoint(prompts, "auto")  # no error: disjoint from the embedded and RTP sets
        with pytest.raises(DetoxkitError, match="overlap"):
            check_disjoint(everything, "auto")  # the doubled rows were reachable
    assert len(prompts.texts) == len(rows) // 4 and prompts.toxic == (len(rows) // 4 + 1) // 2
    picked = [rows[int(i.split("-")[1])] for i in prompts.ids]
    assert sum(r.is_offensive for r in picked) == prompts.toxic
    for row, text in zip(picked, prompts.texts):
        words = clean_text(row.text).split()
        assert text == " ".join(words[:min(len(words) // 2, 24)]) and len(text.split()) >= 3


def _rlhf_args(model, prompts, out, *extra):
    return ["train", "rlhf", "--model", str(model), "--prompts", str(prompts), "--out", str(out),
            "--scorer", "profanity-svm", "--threads", "1", *extra]


def test_bad_prompt_files_are_refused(tiny_model_dir, tmp_path, capsys):
    first_challenging = json.loads(RTP_CHALLENGING.read_text(encoding="utf-8").splitlines()[3])
    from detoxkit.prompts import load_prompts

    embedded = load_prompts("embedded").prompts[5].text
    cases = {
        "missing.jsonl": (None, "does not exist"),
        "empty.jsonl": ("", "no usable prompts"),
        "nofield.jsonl": ('{"id": "a", "body": "The farmer walked"}\n', "text"),
        "prompts.csv": ("text\nThe farmer walked\n", "not a .jsonl file"),
        "rtp.jsonl": (json.dumps(first_challenging) + "\n", "overlap"),
        "embedded.jsonl": (json.dumps({"text": embedded}) + "\n", "embedded prompt set"),
    }
    for name, (body, why) in cases.items():
        path = tmp_path / name
        if body is not None:
            path.write_text(body, encoding="utf-8")
        assert main(_rlhf_args(tiny_model_dir, path, tmp_path / "out", "--steps", "1")) == 2, name
        assert why in capsys.readouterr().err, name
    assert not (tmp_path / "out").exists()  # refused before anything was written


# ---- the loop on the tiny model ----------------------------------------------------------

def _mean_reward(lm, prompts, scorer, seed=99):
    from detoxkit.backends import Request, SamplingConfig
    from detoxkit.backends.hf.sampler import TransformersSampler

    cfg = SamplingConfig(num_samples=4, max_new_tokens=12, top_p=0.9, seed=seed)
    reqs = [Request(str(i), lm.tokenizer(t)["input_ids"], list(range(4))) for i, t in enumerate(prompts)]
    texts = [s.text for s in TransformersSampler(lm, cfg).generate(reqs)]
    rewards = 1 - scorer.score(texts)["toxicity"]
    return float(rewards.mean()), float(rewards.std() / math.sqrt(len(rewards)))


def test_ppo_steps_raise_an_easy_reward(tiny_model_dir, tmp_path):
    """Holistic PPO on the lexical reward: fresh samples from the trained adapter (reloaded with
    PEFT) score well above the base model's, and the shared base model is left as it was."""
    from detoxkit.backends.hf import load_lm
    from detoxkit.scorers import load_scorer
    from detoxkit.training.lm_adapter import load_adapted_lm

    prompts = write_prompts_jsonl(tmp_path / "prompts.jsonl", neutral_prompts())
    base = load_lm(str(tiny_model_dir))
    probe = base.tokenizer("The farmer said", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        before = base.model(probe).logits
    out = tmp_path / "adapter"
    assert main(_rlhf_args(tiny_model_dir, prompts, out, "--scorer", "first-half-letters",
                           "--reward", "holistic", "--steps", "16", "--prompts-per-step", "8",
                           "--rollouts-per-prompt", "4", "--max-new-tokens", "12", "--lr", "1e-2",
                           "--kl-coef", "0", "--ppo-epochs", "4",
                           "--target-modules", "q_proj,v_proj,lm_head")) == 0
    with torch.no_grad():
        assert torch.equal(base.model(probe).logits, before)  # the adapter was taken out again
    meta = json.loads((out / "detoxkit.json").read_text())
    assert meta["recipe"] == "rlhf-holistic" and meta["steps"] == 16
    assert meta["guided_by"] == ["first-half-letters"] and meta["kl"]["coef_final"] == 0
    assert (out / "value_head.safetensors").stat().st_size > 0
    log = [json.loads(x) for x in (out / "rlhf_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == list(range(1, 17))
    scorer = load_scorer("first-half-letters")
    eval_prompts = [f"{s} {v}" for s in SUBJECTS for v in VERBS[:4]]  # not the training prompts
    base_mean, base_se = _mean_reward(base, eval_prompts, scorer)
    trained_mean, trained_se = _mean_reward(load_adapted_lm(str(tiny_model_dir), out), eval_prompts,
                                            scorer)
    print("reward before, after:", base_mean, trained_mean, base_se, trained_se)
    assert trained_mean - base_mean > max(0.1, 5 * math.hypot(base_se, trained_se)), \
        (base_mean, trained_mean)


def test_fine_grained_run_writes_the_contract_metadata(tiny_model_dir, tmp_path):
    from detoxkit.training.lm_adapter import METADATA_KEYS, read_adapter

    prompts = write_prompts_jsonl(tmp_path / "prompts.jsonl", neutral_prompts(12))
    out = tmp_path / "fg"
    args = _rlhf_args(tiny_model_dir, prompts, out, "--steps", "2", "--prompts-per-step", "4",
                      "--max-new-tokens", "10", "--kl-target", "1.0", "--reward-weights",
                      "toxicity=1,fluency=0.01")
    assert main(args) == 0
    info = read_adapter(out)
    meta = info.metadata
    assert set(METADATA_KEYS) <= set(meta) and meta["recipe"] == "rlhf-fine-grained"
    assert meta["data"]["rows"] == 12 and meta["data"]["source"] == str(prompts)
    assert meta["reward"]["weights"] == {"toxicity": 1.0, "fluency": 0.01}
    assert meta["kl"]["adaptive"] and meta["kl"]["coef_final"] != meta["kl"]["coef_initial"]
    assert meta["tokens_seen"] > 0 and meta["trainable_params"] > 0
    assert not (out / "checkpoints").exists()
    assert main(args) == 0  # a finished run is not redone
    assert json.loads((out / "detoxkit.json").read_text())["wall_s"] == meta["wall_s"]


def test_reference_is_the_base_model_with_the_adapter_disabled(tiny_model_dir):
    """The policy's log-probabilities move with the adapter; under disable_adapter they are the
    base model's, and restore() leaves the shared model as it was."""
    from detoxkit.backends.hf import load_lm
    from detoxkit.training.rlhf import Policy, RLHFConfig, Rollouts

    lm = load_lm(str(tiny_model_dir))
    fresh = type(lm.model).from_pretrained(tiny_model_dir).eval()
    ids = torch.tensor([lm.tokenizer("The farmer walked to the market and")["input_ids"]])
    P = 4
    batch = Rollouts(ids, torch.ones_like(ids), torch.ones(1, ids.shape[1] - P), P, [""], [[]])
    with torch.no_grad():
        logits = fresh(ids).logits[:, P - 1:-1].log_softmax(-1)
        base_logp = logits.gather(-1, ids[:, P:, None]).squeeze(-1)
    policy = Policy(lm, RLHFConfig(model=str(tiny_model_dir), target_modules="q_proj,v_proj,lm_head"))
    try:
        with torch.no_grad():
            for name, param in policy.peft.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
            moved, values = policy.forward(batch, [0])
            with policy.peft.disable_adapter():
                reference, _ = policy.forward(batch, [0], with_values=False)
        assert values.shape == moved.shape
        assert (moved - base_logp).abs().max() > 0.01
        assert torch.allclose(reference, base_logp, atol=1e-5)
    finally:
        policy.restore()
    with torch.no_grad():
        assert torch.allclose(lm.model(ids).logits, fresh(ids).logits, atol=1e-6)


def test_reward_terms_combine_with_their_weights_and_the_kl_penalty(tiny_model_dir):
    """score_rollouts on real rollouts: per token, w_tox x the fine-grained reward + w_flu x
    log p_ref - kl_coef x (log p - log p_ref)."""
    from detoxkit.backends.hf import load_lm
    from detoxkit.scorers import load_scorer
    from detoxkit.training.rlhf import Policy, RLHFConfig, rollout, score_rollouts

    lm = load_lm(str(tiny_model_dir))
    config = RLHFConfig(model=str(tiny_model_dir), max_new_tokens=10, rollouts_per_prompt=2,
                        target_modules="q_proj,v_proj")
    scorer = load_scorer("first-half-letters")
    policy = Policy(lm, config)
    try:
        with torch.no_grad():  # move the policy away from the reference: a nonzero KL
            for name, param in policy.peft.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.3, generator=torch.Generator().manual_seed(2))
        prompts = [(str(i), lm.tokenizer(t)["input_ids"]) for i, t in enumerate(neutral_prompts(3))]
        batch = rollout(policy, prompts, config, step=0)
        tox_only = score_rollouts(batch, policy, scorer, config, {"toxicity": 1.0, "fluency": 0.0}, 0.0)
        mixed = score_rollouts(batch, policy, scorer, config, {"toxicity": 2.0, "fluency": 0.5}, 0.3)
    finally:
        policy.restore()
    logp, ref_logp, _, tox_rewards, _ = tox_only
    _, _, _, rewards, stats = mixed
    mask = batch.response_mask
    expected = 2.0 * tox_rewards + 0.5 * ref_logp * mask - 0.3 * (logp - ref_logp) * mask
    assert torch.allclose(rewards, expected, atol=1e-5)
    assert float(((logp - ref_logp) * mask).abs().sum()) > 0.01  # the penalty was not 0
    assert stats["reward_mean"] == pytest.approx(float((2.0 * tox_rewards + 0.5 * ref_logp * mask)
                                                       .sum(1).mean()), abs=1e-4)
    assert len(batch.tokens) == 6 and stats["response_tokens"] == int(mask.sum())


def _cli(args) -> list[str]:
    return [sys.executable, "-c", "import sys; from detoxkit.cli import main; sys.exit(main(sys.argv[1:]))",
            *args]


def test_resume_after_kill_continues_where_it_stopped(tiny_model_dir, tmp_path, capsys):
    prompts = write_prompts_jsonl(tmp_path / "prompts.jsonl", neutral_prompts(16))
    extra = ["--steps", "40", "--checkpoint-every", "2", "--prompts-per-step", "4",
             "--max-new-tokens", "8", "--kl-target", "0.5"]
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    with open(tmp_path / "killed.log", "wb") as err:
        proc = subprocess.Popen(_cli(_rlhf_args(tiny_model_dir, prompts, killed, *extra)),
                                stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + 240
    while not (killed / "checkpoints" / "latest").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "detoxkit.json").exists()
    assert main(_rlhf_args(tiny_model_dir, prompts, killed, *extra, "--lr", "1e-3")) == 2
    assert "checkpoint of a run with other settings" in capsys.readouterr().err
    assert main(_rlhf_args(tiny_model_dir, prompts, killed, *extra)) == 0
    assert main(_rlhf_args(tiny_model_dir, prompts, whole, *extra)) == 0
    meta = json.loads((killed / "detoxkit.json").read_text())
    assert meta["resumed_from_step"] and meta["resumed_from_step"] % 2 == 0
    a = [json.loads(x) for x in (killed / "rlhf_log.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (whole / "rlhf_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in a] == list(range(1, 41))  # every step once
    for key in ("reward_mean", "kl", "kl_coef", "loss"):  # the resumed run follows the whole one
        assert [e[key] for e in a] == pytest.approx([e[key] for e in b], rel=1e-3, abs=1e-5), key
    assert meta["tokens_seen"] == json.loads((whole / "detoxkit.json").read_text())["tokens_seen"]


def test_resume_refuses_other_settings(tiny_model_dir, tmp_path, capsys):
    prompts = write_prompts_jsonl(tmp_path / "prompts.jsonl", neutral_prompts(8))
    out = tmp_path / "run"
    assert main(_rlhf_args(tiny_model_dir, prompts, out, "--steps", "2", "--prompts-per-step", "4",
                           "--max-new-tokens", "6")) == 0
    assert main(_rlhf_args(tiny_model_dir, prompts, out, "--steps", "2", "--prompts-per-step", "4",
                           "--max-new-tokens", "6", "--lr", "1e-3")) == 2
    assert "other settings" in capsys.readouterr().err


def test_detoxkit_run_evaluates_the_adapter_with_a_method(tiny_model_dir, tmp_path, caplog):
    """`detoxkit run --adapter DIR` (training/lm_adapter.py) on an rlhf adapter, under wordban."""
    prompts = write_prompts_jsonl(tmp_path / "prompts.jsonl", neutral_prompts(8))
    adapter = tmp_path / "adapter"
    assert main(_rlhf_args(tiny_model_dir, prompts, adapter, "--steps", "2", "--prompts-per-step",
                           "4", "--max-new-tokens", "8")) == 0
    words = tmp_path / "words.txt"
    words.write_text("farmer\nbaker\n", encoding="utf-8")
    eval_prompts = write_prompts_jsonl(tmp_path / "eval.jsonl", ["The river was", "On Monday we"])
    out = tmp_path / "run"
    assert main(["run", "--model", str(tiny_model_dir), "--adapter", str(adapter), "--prompts",
                 str(eval_prompts), "--samples", "2", "--max-new-tokens", "5", "--oracle", "none",
                 "--scorer", "profanity-svm", "--method", f"wordban:words={words}",
                 "--out", str(out)]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and run["method"]["name"] == "wordban"
    assert run["adapter"]["metadata"]["recipe"] == "rlhf-fine-grained"
    assert "profanity-svm" in run["guided_by"] and "profanity-svm" in run["judge_also_guided"]
    assert "also guided" in caplog.text
    assert len(read_jsonl((out / "generations.jsonl"))) == 4
