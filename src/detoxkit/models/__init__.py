"""Causal language models: the embedded offline ones, any hub id or local path."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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


# Re-exported last: loader imports LoadedLM from this module. Heavy imports (torch,
# transformers) happen inside the functions, so importing detoxkit.models stays cheap.
from .loader import clear_cache, load_lm, resolve_device, resolve_dtype  # noqa: E402

__all__ = ["LoadedLM", "load_lm", "clear_cache", "resolve_device", "resolve_dtype"]
