"""Fixtures (a tiny locally built model, isolated caches) and the optional-part markers.
Shared helper functions are in helpers.py."""

from __future__ import annotations

import importlib.util
import os
import socket
from functools import lru_cache
from pathlib import Path

import pytest

from helpers import rtp_texts

# marker -> (is the part available?, why the test is skipped otherwise)
OPTIONAL_PARTS = {
    "requires_gpu": (lambda: _cuda(), "needs a CUDA GPU"),
    "requires_vllm": (lambda: importlib.util.find_spec("vllm") is not None,
                      "needs vLLM (pip install vllm, on a CUDA machine)"),
    "requires_ray": (lambda: importlib.util.find_spec("ray") is not None, "needs Ray (pip install ray)"),
    "requires_llamacpp": (lambda: all(importlib.util.find_spec(m) is not None
                                      for m in ("llama_cpp", "uvicorn", "sse_starlette")),
                          "needs llama-cpp-python[server] (install.sh builds it)"),
    "requires_network": (lambda: _network(), "needs a network connection to huggingface.co"),
}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@lru_cache(maxsize=1)
def _network() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        return False


def pytest_configure(config):
    for name, (_, reason) in OPTIONAL_PARTS.items():
        config.addinivalue_line("markers", f"{name}: {reason}; skipped where it is absent")


def pytest_collection_modifyitems(config, items):
    for item in items:
        for name, (available, reason) in OPTIONAL_PARTS.items():
            if item.get_closest_marker(name) is not None and not available():
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer Llama with a BPE tokenizer trained on RTP texts, saved as safetensors."""
    from detoxkit.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), rtp_texts())


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir):
    """The tiny model loaded straight through transformers (fresh per test module)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from detoxkit.backends.hf import LoadedLM

    tok = AutoTokenizer.from_pretrained(tiny_model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    return LoadedLM(model, tok, "tiny", "test", 128)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep each test session's caches out of the user's ~/.cache, but share converted models."""
    import os

    if "DETOXKIT_HOME" not in os.environ:
        monkeypatch.setenv("DETOXKIT_HOME", str(tmp_path_factory.getbasetemp() / "detoxkit-home"))
