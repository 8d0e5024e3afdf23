"""The openai backend against a fault-injecting OpenAI-compatible server on loopback: retries,
failures stored and retried on resume, usage recorded, chat mode, `n`, the key kept secret."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from detoxkit.cli import main
from fault_api_server import FaultAPIServer
from helpers import write_prompts_jsonl
from detoxkit.store import read_jsonl

pytest.importorskip("httpx")
SECRET = "sk-test-5ecr3t-never-written"
PROMPTS = ["The man said that", "A 429x2 slow start", "Then 500x1 a crash", "A malformedx1 answer",
           "dropx1 the line", "hangx1 for a while", "always500 until healed"]


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with FaultAPIServer(hang_s=1.5) as s:
        yield s


def run(server, tmp_path: Path, *extra, out="run") -> int:
    prompts = write_prompts_jsonl(tmp_path / "p.jsonl", PROMPTS)
    return main(["run", "--model", "openai:smollm2", "--base-url", server.url, "--prompts",
                 str(prompts), "--samples", "3", "--max-new-tokens", "5", "--oracle", "none",
                 "--scorer", "profanity-svm", "--api-timeout", "0.8", "--api-retries", "3",
                 *map(str, extra), "--out", str(tmp_path / out)])


def rows(run_dir: Path) -> list[dict]:
    return read_jsonl((run_dir / "generations.jsonl"))


def test_faults_are_retried_failures_stored_and_drawn_again_on_resume(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    assert run(server, tmp_path) == 0
    out = tmp_path / "run"
    first = rows(out)
    failed = [r for r in first if r.get("failed")]
    assert len(first) == 21 and len(failed) == 3  # the 3 samples of the always-failing prompt
    assert all(r["text"] is None and "scores" not in r and r["failed"] == "HTTP 500" for r in failed)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_generation_failed"] == 3 and metrics["n_samples"] == 18
    assert metrics["generation_failures"] == {"HTTP 500": 3}
    stats = json.loads((out / "run.json").read_text())["backend_stats"]
    assert stats["retries"] >= 2 + 1 + 1 + 1 + 1 + 3 * 3 and stats["failed_requests"] == 3
    assert stats["prompt_tokens"] > 0 and stats["completion_tokens"] == 18 * 5

    server.heal = True
    assert run(server, tmp_path) == 0  # the same command: only the failed samples are asked again
    resumed = rows(out)
    latest = {(r["prompt_id"], r["sample_index"]): r for r in resumed}
    assert len(latest) == 21 and not any(r.get("failed") for r in latest.values())
    assert len(resumed) == 24  # 21 lines + the 3 redrawn samples, the old failed lines superseded
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_generation_failed"] == 0 and metrics["n_samples"] == 21
    # every sample was asked with its own seed: its text names it
    for r in latest.values():
        assert r["text"].startswith(f" reply {r['seed'] % (2 ** 31 - 1)}-0")

    everything = caplog.text + "".join(p.read_text() for p in out.iterdir() if p.is_file())
    assert SECRET not in everything
    assert any(h.get("Authorization") == f"Bearer {SECRET}" for h in server.headers)


def test_same_seeds_same_samples(server, tmp_path):
    server.heal = True
    assert run(server, tmp_path, out="a") == 0
    assert run(server, tmp_path, out="b") == 0
    key = lambda r: (r["prompt_id"], r["sample_index"], r["text"])  # noqa: E731
    assert sorted(map(key, rows(tmp_path / "a"))) == sorted(map(key, rows(tmp_path / "b")))


def test_samples_per_request_and_a_server_that_ignores_n(server, tmp_path, monkeypatch):
    prompts = write_prompts_jsonl(tmp_path / "n.jsonl", ["Plain prompt", "ignoren prompt"])
    assert main(["run", "--model", "openai:m", "--base-url", server.url, "--prompts", str(prompts),
                 "--samples", "4", "--max-new-tokens", "3", "--oracle", "none", "--scorer",
                 "profanity-svm", "--api-samples-per-request", "4", "--out", str(tmp_path / "n")]) == 0
    got = rows(tmp_path / "n")
    assert len(got) == 8 and not any(r.get("failed") for r in got)
    asked = [b["n"] for b in server.bodies]
    assert sorted(asked) == [1, 1, 1, 4, 4]  # one request of 4 each, then 3 single ones


def test_chat_mode_sends_the_instruction_and_system_prompt(server, tmp_path):
    server.heal = True
    prompts = write_prompts_jsonl(tmp_path / "c.jsonl", ["The man said that"])
    assert main(["run", "--model", "openai:m", "--base-url", server.url, "--prompts", str(prompts),
                 "--samples", "2", "--max-new-tokens", "3", "--oracle", "none", "--scorer",
                 "profanity-svm", "--prompt-format", "chat", "--system-prompt", "Be brief.",
                 "--out", str(tmp_path / "c")]) == 0
    body = server.bodies[-1]
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["messages"][1]["role"] == "user" and "The man said that" in body["messages"][1]["content"]
    info = json.loads((tmp_path / "c" / "run.json").read_text())
    assert info["config"]["prompt_format"] == "chat" and info["config"]["system_prompt"] == "Be brief."


def test_methods_and_oracles_that_need_logits_are_refused(server, tmp_path, capsys):
    assert run(server, tmp_path, "--method", "cfl", out="m") == 2
    assert "does not expose" in capsys.readouterr().err
    assert run(server, tmp_path, "--oracle", "openai:smollm2", out="o") == 2
    assert "no log-likelihoods" in capsys.readouterr().err
    assert not (tmp_path / "m").exists() and not (tmp_path / "o").exists()


def test_a_final_4xx_keeps_the_key_out_of_the_reason(server, tmp_path):
    prompts = write_prompts_jsonl(tmp_path / "b.jsonl", ["a bad400 request"])
    assert main(["run", "--model", "openai:m", "--base-url", server.url, "--prompts", str(prompts),
                 "--samples", "1", "--max-new-tokens", "3", "--oracle", "none", "--scorer",
                 "profanity-svm", "--out", str(tmp_path / "b")]) == 0
    (row,) = rows(tmp_path / "b")
    assert row["failed"].startswith("HTTP 400") and "***" in row["failed"] and SECRET not in row["failed"]


def test_the_backend_needs_a_url(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    prompts = write_prompts_jsonl(tmp_path / "p.jsonl", ["x"])
    assert main(["run", "--model", "openai:m", "--prompts", str(prompts), "--oracle", "none",
                 "--scorer", "profanity-svm", "--out", str(tmp_path / "r")]) == 2
    assert "--base-url" in capsys.readouterr().err


def test_a_conversation_file_is_sent_as_it_is_in_chat_mode(server, tmp_path):
    server.heal = True
    conv = tmp_path / "conv.jsonl"
    turns = [{"role": "system", "content": "You are terse."},
             {"role": "user", "content": "Tell me about the weather"}]
    conv.write_text(json.dumps({"id": "c1", "messages": turns}) + "\n")
    assert main(["run", "--model", "openai:m", "--base-url", server.url, "--prompts", str(conv),
                 "--samples", "1", "--max-new-tokens", "3", "--oracle", "none", "--scorer",
                 "profanity-svm", "--prompt-format", "chat", "--out", str(tmp_path / "cv")]) == 0
    assert server.bodies[-1]["messages"] == turns
    (row,) = rows(tmp_path / "cv")
    assert row["prompt"] == "Tell me about the weather"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "assistant", "content": "hi"}]}) + "\n")
    assert main(["run", "--model", "openai:m", "--base-url", server.url, "--prompts", str(bad),
                 "--oracle", "none", "--scorer", "profanity-svm", "--prompt-format", "chat",
                 "--out", str(tmp_path / "bad")]) == 2
