"""Trained artefacts: the one lookup every method and scorer uses, and their file helpers.

An artefact (a token table, an adapter directory, an HMM, a scorer head) is found in
order: an explicit path setting, then the cache (`detoxkit train ...` writes there:
`$DETOXKIT_HOME/<folder>/`), then the files shipped in the package
(src/detoxkit/data/<folder>/, built for SmolLM2). Token tables belong to one tokenizer
and are named after its fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .errors import DetoxkitError
from .paths import cache_dir, package_data
from .store import atomic_target, write_text_atomic

if TYPE_CHECKING:  # pragma: no cover - torch is imported where a table is read or built
    import torch


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


def _folder(folder: str) -> tuple[str, ...]:
    return tuple(p for p in folder.split("/") if p)


def find_artefact(name: str, *, train_hint: str, explicit: str | os.PathLike | None = None,
                  folder: str = "methods", shipped: str | None = None,
                  is_valid: Callable[[Path], bool] = Path.exists) -> Path:
    """The artefact `name` (a file or a directory): explicit path, else the cache's `folder`,
    else the package data's (at `shipped`, a path under data/, where the shipped copy lies
    elsewhere).
    `is_valid` tells a complete artefact from a stray path (e.g. a directory without its
    metadata file)."""
    if explicit:
        return existing_path(explicit, is_valid)
    parts = _folder(folder)
    shipped_path = package_data(*_folder(shipped)) if shipped else package_data(*parts, name)
    for path in (cache_dir(*parts) / name, shipped_path):
        if is_valid(path):
            return path
    raise DetoxkitError(f"no trained artefact {name} (looked in {cache_dir(*parts)} and the "
                        f"package data). Build it with `{train_hint}`.")


def existing_path(path: str | os.PathLike, is_valid: Callable[[Path], bool] = Path.exists) -> Path:
    """An explicit artefact path, checked."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DetoxkitError(f"{path} does not exist")
    if not is_valid(path):
        raise DetoxkitError(f"{path} is not a complete detoxkit artefact")
    return path


def output_path(name: str, out: str | os.PathLike | None = None, folder: str = "methods") -> Path:
    """Where a recipe writes its artefact: `out` if given, else the cache, where lookups look."""
    return Path(out).expanduser() if out else cache_dir(*_folder(folder)) / name


@lru_cache(maxsize=32)
def _load_safetensors(path: str, mtime: float) -> "tuple[dict[str, torch.Tensor], dict[str, str]]":
    from safetensors import safe_open

    with safe_open(path, framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata() or {})


def load_table(path: Path) -> "tuple[dict[str, torch.Tensor], dict[str, str]]":
    """(tensors, metadata) of a safetensors file, cached per process."""
    path = Path(path)
    return _load_safetensors(str(path), path.stat().st_mtime)


def save_table(path: Path, tensors: "dict[str, torch.Tensor]", metadata: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
        tmp.chmod(0o644)
    return path


def dense_from_sparse(ids: "torch.Tensor", values: "torch.Tensor", width: int) -> "torch.Tensor":
    """A [width] float32 vector holding values at ids (ids >= width are dropped)."""
    import torch

    out = torch.zeros(width, dtype=torch.float32)
    keep = ids < width
    out[ids[keep].long()] = values[keep].float()
    return out


# ---- file hashes: one helper, cached in memory and on disk ----

_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike, use_cache: bool = True) -> str:
    """sha256 (64 hex digits) of a file, cached keyed by (path, size, mtime)."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    record = cache_dir("hashes") / (hashlib.sha256(str(path).encode()).hexdigest()[:32] + ".json")
    if use_cache:
        if key in _HASHES:
            return _HASHES[key]
        try:
            saved = json.loads(record.read_text(encoding="utf-8"))
            if (saved["path"], saved["size"], saved["mtime_ns"]) == key:
                _HASHES[key] = saved["sha256"]
                return saved["sha256"]
        except (OSError, ValueError, KeyError):
            pass
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    sha = _HASHES[key] = digest.hexdigest()
    if not use_cache:
        return sha
    # atomic: readers never see half a record
    write_text_atomic(record, json.dumps({"path": key[0], "size": key[1], "mtime_ns": key[2],
                                          "sha256": sha}))
    return sha
