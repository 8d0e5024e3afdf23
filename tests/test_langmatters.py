"""The Language Matters protocol: prompt assembly for a chat template (the exact token sequence
of the Qwen3 family), the stop at the end-of-thinking marker, only the answer scored, resume,
the LMSYS-toxic layout and the OpenAI-compatible backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detoxkit.langmatters import LangMattersConfig, run_langmatters
from detoxkit.langmatters.families import (FAMILIES, OPENERS, answer_prompt, family_for, header,
                                           reasoning_prompt, render_prompt)
from detoxkit.store import read_jsonl

LMSYS = Path(__file__).parent / "data" / "lmsys_toxic"
QWEN_CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
               "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture
def qwen_style_tokenizer(tiny_model_dir):
    """The tiny model's BPE tokenizer with Qwen3's special tokens and a ChatML template."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.add_tokens(["<think>", "</think>"])
    tok.chat_template = QWEN_CHATML
    return tok


def test_qwen3_prompt_assembly_is_the_exact_token_sequence(qwen_style_tokenizer):
    tok = qwen_style_tokenizer
    fam = family_for("Qwen/Qwen3-8B")
    assert fam.name == "qwen3" and fam.marker == "</think>"
    base = render_prompt([{"role": "user", "content": "Warum sind meine Nachbarn so laut?"}], fam, tok)
    text = reasoning_prompt(base, "prompt", "de")
    assert text == ("<|im_start|>user\nWarum sind meine Nachbarn so laut?<|im_end|>\n"
                    "<|im_start|>assistant\n<think>\n" + OPENERS["de"])
    ids = tok(text, add_special_tokens=False)["input_ids"]
    special = tok.convert_tokens_to_ids

    def plain(s):
        return tok(s, add_special_tokens=False)["input_ids"]

    want = ([special("<|im_start|>")] + plain("user\nWarum sind meine Nachbarn so laut?")
            + [special("<|im_end|>")] + plain("\n") + [special("<|im_start|>")] + plain("assistant\n")
            + [special("<think>")] + plain("\n" + OPENERS["de"]))
    assert ids == want  # no BOS added, each control string one token
    # phase 2: the reasoning, the block closed, the header naming the answer language
    answer = answer_prompt(text, " Sie feiern jede Nacht.", fam, "de")
    assert answer == text + " Sie feiern jede Nacht.\n</think>\n\n" + header("de") + "\n"
    assert special("</think>") in tok(answer, add_special_tokens=False)["input_ids"]
    # "english" prefills the English opener, "default" nothing after <think>\n
    assert reasoning_prompt(base, "english", "de").endswith("<think>\n" + OPENERS["en"])
    assert reasoning_prompt(base, "default", "de").endswith("assistant\n<think>\n")


def test_a_template_that_opens_the_thinking_itself_is_not_doubled(qwen_style_tokenizer):
    tok = qwen_style_tokenizer
    tok.chat_template = QWEN_CHATML.replace("assistant\n{% endif %}", "assistant\n<think>\n{% endif %}")
    fam = family_for("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")
    assert fam.name == "deepseek-r1"
    base = render_prompt([{"role": "user", "content": "Hallo"}], fam, tok)
    assert base.endswith("assistant\n<think>\n") and base.count("<think>") == 1
    # no tokenizer (a model behind an API): the family's own format
    assert render_prompt([{"role": "user", "content": "Hallo"}], FAMILIES["gpt-oss"]) == \
        "<|start|>user<|message|>Hallo<|end|><|start|>assistant<|channel|>analysis<|message|>"
    custom = family_for("x", "generic", think_open="<reason>", think_close="</reason>")
    assert custom.marker == "</reason>" and render_prompt([{"role": "user", "content": "Hi"}], custom).endswith("<reason>")


def test_reasoning_stops_at_the_end_of_thinking_marker(tiny_model_dir):
    from detoxkit.backends import SamplingConfig
    from detoxkit.backends.hf import HFBackend
    from detoxkit.langmatters.generate import draw_reasoning

    backend = HFBackend(str(tiny_model_dir))
    tok = backend.lm.tokenizer
    greedy = SamplingConfig(num_samples=1, max_new_tokens=12, temperature=0.0, seed=0)
    prompt = "<think>\nThe man said that"
    (free,) = draw_reasoning(backend, [("p|default", [0], prompt)], greedy, "\x01never\x01")
    assert not free.marker_reached and free.n_tokens == 12
    ids = tok(free.text, add_special_tokens=False)["input_ids"]
    # a marker the greedy path writes as its 5th and 6th tokens, not seen before them
    marker = tok.decode(ids[4:6])
    before = tok.decode(ids[:4])
    assert marker.strip() and marker not in before
    (cut,) = draw_reasoning(backend, [("p|default", [0], prompt)], greedy, marker)
    assert cut.marker_reached and cut.finished
    assert cut.text == free.text[:free.text.find(marker)]
    assert cut.n_tokens < 12  # generation stopped there; nothing after the marker was drawn


@pytest.fixture(scope="module")
def tiny_langmatters(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("langmatters") / "run"
    cfg = LangMattersConfig(prompts=str(LMSYS), model=str(tiny_model_dir), out=str(out), samples=2,
                            reasoning_tokens=10, answer_tokens=6, scorer="profanity-svm",
                            conditions=["english", "prompt", "default"], limit=8)
    return cfg, run_langmatters(cfg)


def test_only_the_answer_is_scored(tiny_langmatters):
    from detoxkit.lang import detect
    from detoxkit.scorers import load_scorer

    cfg, metrics = tiny_langmatters
    rows = read_jsonl(Path(cfg.out) / "generations.jsonl")
    assert len(rows) == 8 * 3 * 2 and not any(r.get("failed") for r in rows)
    scorer = load_scorer("profanity-svm")
    scores = scorer.score([r["text"] for r in rows])["toxicity"]
    for r, s in zip(rows, scores):
        assert r["scores"]["profanity-svm"]["toxicity"] == pytest.approx(s, abs=1e-12)
        assert r["language"] == detect(r["text"]).as_json()
        assert r["reasoning_language"] == detect(r["reasoning"]).as_json()
        assert r["target_reasoning_language"] == {"english": "en", "prompt": r["prompt_language"],
                                                  "default": None}[r["condition"]]
    joined = scorer.score([r["reasoning"] + r["text"] for r in rows])["toxicity"]
    assert any(abs(a - b) > 1e-9 for a, b in zip(joined, scores))  # the reasoning would change them


def test_metrics_per_language_and_condition(tiny_langmatters):
    cfg, metrics = tiny_langmatters
    rows = read_jsonl(Path(cfg.out) / "generations.jsonl")
    table = metrics["by_language_condition"]
    assert set(table) <= {"de", "en", "fr", "ja"} and len(table) >= 2
    for lang, conds in table.items():
        assert set(conds) == {"english", "prompt", "default"}
        for cond, m in conds.items():
            mine = [r for r in rows if r["prompt_language"] == lang and r["condition"] == cond]
            tox = [r["scores"]["profanity-svm"]["toxicity"] >= 0.5 for r in mine]
            assert m["toxic_answer_rate"] == pytest.approx(sum(tox) / len(tox))
            same = [r["language"]["code"] == lang for r in mine]
            assert m["answer_language_adherence"] == pytest.approx(sum(same) / len(same))
            assert m["reasoning_tokens_mean"] == pytest.approx(sum(r["reasoning_tokens"] for r in mine) / len(mine))
            lo, hi = m["toxic_answer_rate_ci"]
            assert lo <= m["toxic_answer_rate"] <= hi
            if cond == "english":
                hits = [r["reasoning_language"]["code"] == "en" for r in mine]
                assert m["reasoning_language_adherence"] == pytest.approx(sum(hits) / len(hits))


def test_rerun_resumes_and_other_settings_are_refused(tiny_langmatters):
    from dataclasses import replace

    from detoxkit.errors import DetoxkitError

    cfg, metrics = tiny_langmatters
    path = Path(cfg.out) / "generations.jsonl"
    before = path.read_bytes()
    again = run_langmatters(replace(cfg))
    assert path.read_bytes() == before and again["by_language_condition"] == metrics["by_language_condition"]
    with pytest.raises(DetoxkitError, match="other settings.*reasoning_tokens"):
        run_langmatters(replace(cfg, reasoning_tokens=11))


def test_cli_on_a_prompt_file_with_a_language_column(tiny_model_dir, tmp_path, capsys):
    from detoxkit.cli import main

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [
        {"id": "a", "text": "Warum sind meine Nachbarn so laut?", "language": "de"},
        {"id": "b", "text": "Why are my neighbours so loud?"}]), encoding="utf-8")
    out = tmp_path / "run"
    assert main(["langmatters", "--model", str(tiny_model_dir), "--prompts", str(prompts),
                 "--reasoning-tokens", "6", "--answer-tokens", "4", "--scorer", "profanity-svm",
                 "--conditions", "english,default", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "reasoning adherence" in text and "default" in text
    assert "| de | english |" in (out / "report.md").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["by_condition"]) == {"english", "default"}


def test_openai_backend_gets_the_assembled_prompts_and_the_marker_cut(tmp_path):
    from fault_api_server import FaultAPIServer

    with FaultAPIServer() as server:
        cfg = LangMattersConfig(prompts=str(LMSYS / "de" / "test.jsonl"), model="openai:reasoner",
                                base_url=server.url, out=str(tmp_path / "run"), limit=2,
                                reasoning_tokens=32, answer_tokens=8, scorer="profanity-svm",
                                conditions=["prompt"], family="qwen3", think_close="\n to ")
        run_langmatters(cfg)
        bodies = list(server.bodies)
    phase1 = [b["prompt"] for b in bodies if b["max_tokens"] == 32]
    phase2 = [b["prompt"] for b in bodies if b["max_tokens"] == 8]
    assert len(phase1) == len(phase2) == 2
    assert all(p.startswith("<|im_start|>user\n") and p.endswith("<think>\n" + OPENERS["de"])
               for p in phase1)
    rows = read_jsonl(tmp_path / "run" / "generations.jsonl")
    for r in rows:  # the server's " reply <seed>-0 to <n> chars": the reasoning cut at "to"
        assert r["reasoning_marker_reached"] and r["reasoning"].startswith(" reply ")
        assert "to" not in r["reasoning"] and r["prompt_language"] == "de"
        assert any(p.endswith(r["reasoning"] + "\n to " + header("de") + "\n") for p in phase2)
