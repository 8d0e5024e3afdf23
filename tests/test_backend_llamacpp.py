"""The embedded SmolLM2 through a real llama.cpp server (llama-cpp-python's OpenAI-compatible
server) on loopback, in chat mode, behind a fault proxy: the resumed run has every sample once."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from detoxkit.cli import main
from fault_api_server import FaultAPIServer
from helpers import write_prompts_jsonl
from detoxkit.store import read_jsonl

pytestmark = [pytest.mark.requires_llamacpp, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    from detoxkit.backends.hf.embedded import SMOLLM2_135M

    gguf = SMOLLM2_135M.source_files()[0]
    port = free_port()
    log = open(tmp_path_factory.mktemp("llama") / "server.log", "w+")  # a pipe would fill and block it
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf),
                             "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port),
                             "--n_ctx", "1024", "--n_threads", "2"],
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"llama.cpp server exited: {log.read()[-2000:]}")
        try:
            urllib.request.urlopen(url + "/models", timeout=2).read()
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("llama.cpp server did not come up in 120 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def test_chat_run_through_llama_cpp_with_faults_resumes_exactly_once(llama_server, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "unused-by-llama-cpp")
    prompts = write_prompts_jsonl(tmp_path / "p.jsonl", [
        "The weather today is", "429x1 My favourite food is", "500x2 The best way to learn is",
        "dropx1 Yesterday I went to", "always500 The city at night"])
    args = ["run", "--model", "openai:smollm2", "--prompts", str(prompts), "--samples", "2",
            "--max-new-tokens", "8", "--oracle", "none", "--scorer", "profanity-svm",
            "--prompt-format", "chat", "--api-concurrency", "2", "--api-retries", "3",
            "--api-timeout", "60", "--out", str(tmp_path / "run")]
    with FaultAPIServer(upstream=llama_server) as proxy:
        assert main([*args, "--base-url", proxy.url]) == 0
        first = read_jsonl((tmp_path / "run" / "generations.jsonl"))
        assert sum(bool(r.get("failed")) for r in first) == 2  # the always500 prompt's 2 samples
        assert all(isinstance(r["text"], str) and r["text"].strip() for r in first if not r.get("failed"))
        proxy.heal = True
        assert main([*args, "--base-url", proxy.url]) == 0
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "complete" and info["backend_stats"]["completion_tokens"] > 0
    rows = read_jsonl((tmp_path / "run" / "generations.jsonl"))
    latest = {(r["prompt_id"], r["sample_index"]): r for r in rows}
    assert len(latest) == 10 and not any(r.get("failed") for r in latest.values())
    assert len(rows) == 12  # 2 redrawn samples; nothing else was asked twice
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_samples"] == 10 and metrics["n_generation_failed"] == 0
