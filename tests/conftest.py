"""Shared fixtures: real prompt data from ../shared/data and a tiny locally built model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
RTP_CHALLENGING = SHARED_DATA / "rtp" / "challenging_toxic.jsonl"
RTP_NONTOXIC = SHARED_DATA / "rtp" / "nontoxic_sample.jsonl"


def rtp_texts(n: int = 400) -> list[str]:
    texts = []
    for path in (RTP_CHALLENGING, RTP_NONTOXIC):
        with open(path, encoding="utf-8") as fh:
            for line, _ in zip(fh, range(n // 2)):
                rec = json.loads(line)
                texts.append(rec["prompt"]["text"] + rec["continuation"]["text"])
    return texts


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer Llama with a BPE tokenizer trained on RTP texts, saved as safetensors."""
    from detoxkit.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), rtp_texts())


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir):
    """The tiny model loaded straight through transformers (fresh per test module)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from detoxkit.models import LoadedLM

    tok = AutoTokenizer.from_pretrained(tiny_model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    return LoadedLM(model, tok, "tiny", "test", 128)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep each test session's caches out of the user's ~/.cache, but share converted models."""
    import os

    if "DETOXKIT_HOME" not in os.environ:
        monkeypatch.setenv("DETOXKIT_HOME", str(tmp_path_factory.getbasetemp() / "detoxkit-home"))
