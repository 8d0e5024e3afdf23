"""Where methods find their trained artefacts, and token-table helpers.

A token table (vocabulary shift bias, CFL effects) belongs to one tokenizer. It is
stored as safetensors named after the tokenizer's fingerprint and looked up in
order: an explicit path, the cache (`detoxkit train ...` writes there), then the
files shipped in the package (src/detoxkit/data/methods/, built for SmolLM2).
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from ..errors import DetoxkitError
from ..paths import cache_dir, package_data


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """12 hex digits identifying a tokenizer's vocabulary (ids and token strings)."""
    key = id(tokenizer)
    cached = _FP.get(key)
    if cached is not None and cached[0] is tokenizer:
        return cached[1]
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    fp = hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:12]
    _FP[key] = (tokenizer, fp)
    return fp


_FP: dict[int, tuple[Any, str]] = {}


def artefact_name(kind: str, tokenizer: Any, suffix: str = "safetensors") -> str:
    return f"{kind}-{tokenizer_fingerprint(tokenizer)}.{suffix}"


def find_artefact(filename: str, train_hint: str, explicit: str | None = None,
                  folder: str = "methods") -> Path:
    """An artefact file: explicit path, else the cache's `folder`, else the package data's."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.exists():
            raise DetoxkitError(f"{path} does not exist")
        return path
    for path in (cache_dir(folder) / filename, package_data(folder, filename)):
        if path.exists():
            return path
    raise DetoxkitError(f"no trained artefact {filename} (looked in {cache_dir(folder)} and the "
                        f"package data). Build it with `{train_hint}`.")


@lru_cache(maxsize=32)
def _load_safetensors(path: str, mtime: float) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata() or {})


def load_table(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file, cached per process."""
    return _load_safetensors(str(path), path.stat().st_mtime)


def save_table(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
              metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    tmp.chmod(0o644)
    tmp.replace(path)
    return path


def dense_from_sparse(ids: torch.Tensor, values: torch.Tensor, width: int) -> torch.Tensor:
    """A [width] float32 vector holding values at ids (ids >= width are dropped)."""
    out = torch.zeros(width, dtype=torch.float32)
    keep = ids < width
    out[ids[keep].long()] = values[keep].float()
    return out


def fit_width(vector: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Pad or cut a [V_tokenizer] vector to the logits' width, on their device and dtype."""
    width = logits.shape[-1]
    if vector.shape[0] < width:
        vector = torch.cat([vector, vector.new_zeros(width - vector.shape[0])])
    return vector[:width].to(device=logits.device, dtype=logits.dtype)


class TokenizerOnlyLM:
    """A stand-in for LoadedLM where only a tokenizer exists (llama.cpp, vLLM adapters)."""

    def __init__(self, tokenizer: Any, name: str = "tokenizer-only"):
        self.tokenizer = tokenizer
        self.model = None
        self.name = name
