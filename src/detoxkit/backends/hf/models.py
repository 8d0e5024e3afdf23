"""Causal LMs in transformers: `load_lm` for embedded names, local directories and hub ids.

Only safetensors weights are loaded (pickle files can run code when loaded).
Each (source, device, dtype) is loaded once per process and shared.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...artefacts import file_sha256
from ...errors import DetoxkitError


@dataclass
class LoadedLM:
    model: Any  # a transformers PreTrainedModel in eval mode
    tokenizer: Any  # a transformers tokenizer with pad token set, padding_side="left"
    name: str  # what the user asked for (registry name, hub id or path)
    revision: str  # hub commit or a content hash of the weights
    context_length: int  # max positions the model accepts (prompt + new tokens)
    device: str = "cpu"
    dtype: str = "float32"
    info: dict[str, Any] = field(default_factory=dict)  # source path, license, ...

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "revision": self.revision, "context_length": self.context_length,
                "device": self.device, "dtype": self.dtype, **self.info}


DTYPES = ("float32", "bfloat16", "float16")
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}
# What a causal LM needs from a hub repo: config, tokenizer files and safetensors, never pickles.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "tokenizer*"]
DEFAULT_CONTEXT = 2048  # only when neither config nor tokenizer says

_LOADED: dict[tuple[str, str, str], LoadedLM] = {}
_LOCK = threading.Lock()


def resolve_device(device: str = "cpu") -> str:
    """'auto' -> 'cuda' when available, else 'cpu'; an unavailable device is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise DetoxkitError(f"unknown device '{device}' (use cpu, cuda, cuda:N, mps or auto)") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise DetoxkitError(f"device '{device}' requested but CUDA is not available "
                            f"(torch {torch.__version__}); use --device cpu or auto")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise DetoxkitError(f"device '{device}' requested but MPS is not available; use --device cpu")
    return device


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX-512 BF16 or AMX): there
    bf16 runs about twice the float32 rate; elsewhere it is emulated and slower than float32.
    DETOXKIT_CPU_BF16=0|1 overrides the detection (e.g. to test the other path)."""
    forced = os.environ.get("DETOXKIT_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_dtype(dtype: str, device: str) -> str:
    """'auto' -> bfloat16 on CUDA (float16 where bf16 is unsupported) and on CPUs with native
    bf16 (cpu_has_native_bf16), float32 on other CPUs. The agreement of bf16 with float32 on
    the RTP protocol is measured in docs/benchmarks.md."""
    if dtype == "auto":
        if device.startswith("cuda"):
            import torch

            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return "bfloat16" if device == "cpu" and cpu_has_native_bf16() else "float32"
    if dtype not in DTYPES:
        raise DetoxkitError(f"unknown dtype '{dtype}' (use {', '.join(DTYPES)} or auto)")
    return dtype


def load_lm(spec: str, device: str = "cpu", dtype: str = "float32") -> LoadedLM:
    """Load a causal LM by embedded name, local directory or Hugging Face hub id ("org/name[@rev]").

    The model is in eval mode on `device`; the tokenizer pads on the left with a pad
    token set. Repeated calls with the same (spec, device, dtype) return the same object.
    """
    from ... import registry

    spec = str(spec)  # a Path works too
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    local = Path(spec).expanduser()
    is_dir = spec not in registry.MODELS and local.is_dir()
    key = (str(local.resolve()) if is_dir else spec, dev, dt)
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = _load(spec, dev, dt)
        return _LOADED[key]


def clear_cache() -> None:
    """Forget loaded models (frees their memory once no one else holds them)."""
    with _LOCK:
        _LOADED.clear()


@dataclass
class _Source:
    path: Path
    revision: str | None = None  # None: hash the safetensors files
    info: dict[str, Any] = field(default_factory=dict)


def _resolve(spec: str) -> _Source:
    from ... import registry

    if spec in registry.MODELS:
        embedded = registry.MODELS.load(spec)
        path = embedded.converted_dir()
        prov = embedded.provenance()
        prov.pop("fingerprint", None)
        return _Source(path, prov.get("revision"), {"source": "embedded", "path": str(path), **prov})
    local = Path(spec).expanduser()
    if local.is_dir():
        return _Source(local.resolve(), None, {"source": "local", "path": str(local.resolve())})
    if local.exists():
        raise DetoxkitError(f"{spec} is a file; pass the model's directory (config.json, tokenizer "
                            f"files and *.safetensors weights), a hub id or an embedded name")
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec:
        raise DetoxkitError(f"model directory {spec} does not exist")
    return _from_hub(spec)


def _from_hub(spec: str) -> _Source:
    from huggingface_hub import snapshot_download
    from huggingface_hub import errors as hf_errors

    from ... import registry

    repo_id, _, rev = spec.partition("@")
    # Read per call (huggingface_hub reads it once at import): offline means cached files only.
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    try:
        path = Path(snapshot_download(repo_id, revision=rev or None, allow_patterns=HUB_PATTERNS,
                                      local_files_only=offline))
    except hf_errors.HFValidationError:
        raise DetoxkitError(f"'{spec}' is not an embedded model name, an existing directory or a "
                            f"valid hub id (see `detoxkit ls models`)") from None
    except hf_errors.RevisionNotFoundError:
        raise DetoxkitError(f"hub repo '{repo_id}' has no revision '{rev}'") from None
    except hf_errors.RepositoryNotFoundError:  # also gated/private repos
        raise DetoxkitError(f"hub repo '{repo_id}' was not found, or is private/gated "
                            f"(log in with `hf auth login` after accepting its license)") from None
    except (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled,
            hf_errors.HfHubHTTPError, OSError) as exc:
        close = difflib.get_close_matches(spec, [e.name for e in registry.MODELS.entries()], n=2)
        hint = f" Did you mean the embedded model {' or '.join(close)}?" if close else ""
        why = "HF_HUB_OFFLINE is set and it is not in the local hub cache" if offline \
            else f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        raise DetoxkitError(
            f"cannot get '{spec}' from the Hugging Face hub: the hub is unreachable ({why}).{hint} "
            f"Without a network, pass a local directory instead: on a machine with one, run "
            f"`hf download {repo_id} --local-dir DIR` (or save_pretrained(DIR)), copy DIR here "
            f"and use --model DIR. Embedded offline models: `detoxkit ls models`.") from None
    if not list(path.glob("*.safetensors")):
        raise DetoxkitError(f"hub repo '{repo_id}' has no safetensors weights; detoxkit does not load "
                            f"pickle (.bin/.pt) weights because loading them can run arbitrary code")
    return _Source(path, path.name, {"source": "hub", "hub_id": repo_id, "path": str(path)})


def _check_model_dir(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise DetoxkitError(f"{path} has no config.json: not a transformers model directory")
    if list(path.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise DetoxkitError(
            f"{path} has only pickle weights ({', '.join(pickles[:3])}); detoxkit loads safetensors "
            f"weights only, because loading a pickle can run arbitrary code. Where you trust the "
            f"file's origin, convert it once with transformers: "
            f"AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(OUT) writes model.safetensors")
    raise DetoxkitError(f"{path} has no model weights (*.safetensors)")


def _load(spec: str, device: str, dtype: str) -> LoadedLM:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = _resolve(spec)
    path = source.path
    _check_model_dir(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left", trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, trust_remote_code=False,
                                                     dtype=getattr(torch, dtype))
    except (OSError, ValueError, KeyError) as exc:
        raise DetoxkitError(f"cannot load a causal LM from {path}: {exc}") from None
    tokenizer.padding_side = "left"  # generation appends on the right
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise DetoxkitError(f"{path}: the tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device).eval()
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id  # silences a warning per call
    revision = source.revision or weights_revision(path)
    info = {**source.info, "architecture": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters())}
    if dtype != "float32":
        from .heads import keep_head_in_float32

        info["head_dtype"] = "float32" if keep_head_in_float32(model) else dtype
    return LoadedLM(model=model, tokenizer=tokenizer, name=spec, revision=revision,
                    context_length=context_length(model.config, tokenizer), device=device,
                    dtype=dtype, info=info)


def context_length(config: Any, tokenizer: Any) -> int:
    """Positions the model accepts: from the config, capped by a sane tokenizer limit."""
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    n = next((v for a in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
              if isinstance(v := getattr(cfg, a, None), int) and v > 0), None)
    tmax = getattr(tokenizer, "model_max_length", None)
    sane = isinstance(tmax, int) and 0 < tmax < 10_000_000  # "no limit" is reported as ~1e30
    if n is None:
        return tmax if sane else DEFAULT_CONTEXT
    return min(n, tmax) if sane else n


# ---- revision: a content hash of the safetensors weights ----


def weights_revision(model_dir: Path, use_cache: bool = True) -> str:
    """'sha256:<16 hex>' over the names and contents of the directory's *.safetensors files."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise DetoxkitError(f"{model_dir} has no *.safetensors files to hash")
    joined = "\n".join(f"{f.name}:{file_sha256(f, use_cache)}" for f in files)
    return "sha256:" + hashlib.sha256(joined.encode()).hexdigest()[:16]
