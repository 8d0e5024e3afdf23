"""Small token-level helpers shared by the sampler, the oracle and the decoding methods."""

from __future__ import annotations

from typing import Any

import torch

from .errors import DetoxkitError


def vocab_width(tokenizer: Any) -> int:
    """1 + the largest token id the tokenizer can produce (added tokens included)."""
    return max(tokenizer.get_vocab().values()) + 1


def pad_to_width(values: torch.Tensor, width: int, fill: float = 0.0) -> torch.Tensor:
    """`values` [..., n] padded with `fill` (or cut) to [..., width]. The logits of a model
    can be wider than its tokenizer (padded embedding rows); such ids get `fill`."""
    n = values.shape[-1]
    if n < width:
        values = torch.cat([values, values.new_full((*values.shape[:-1], width - n), fill)], dim=-1)
    return values[..., :width]


def fit_width(vector: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """A per-token vector padded or cut to the logits' width, on their device and dtype."""
    return pad_to_width(vector, logits.shape[-1]).to(device=logits.device, dtype=logits.dtype)


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Position of every column of a left-padded [B, T] attention mask (padding gets 0)."""
    return (mask.long().cumsum(-1) - 1).clamp_(min=0)


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) [B, T] with every sequence right-aligned, so they all end in the last column."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for j, s in enumerate(sequences):
        if s:
            ids[j, width - len(s):] = torch.tensor(s)
            mask[j, width - len(s):] = 1
    return ids, mask


def eos_ids(lm: Any) -> list[int]:
    """Every id that ends a sequence: the tokenizer's EOS and the generation config's."""
    ids: set[int] = set()
    config = getattr(getattr(lm, "model", None), "generation_config", None)
    for source in (lm.tokenizer.eos_token_id, getattr(config, "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(source)
    if not ids:
        raise DetoxkitError(f"model {getattr(lm, 'name', '?')} declares no EOS token")
    return sorted(ids)


class TokenizerOnlyLM:
    """A stand-in for a loaded model where only its tokenizer is here (the llama.cpp and vLLM
    processors: the runtime owns the model)."""

    def __init__(self, tokenizer: Any, name: str = "tokenizer-only"):
        self.tokenizer = tokenizer
        self.model = None
        self.name = name


def as_bindable(lm_or_tokenizer: Any) -> Any:
    """What a method binds to: a loaded model as it is, a bare tokenizer wrapped (methods that
    need only the tokenizer)."""
    if hasattr(lm_or_tokenizer, "tokenizer"):
        return lm_or_tokenizer
    return TokenizerOnlyLM(lm_or_tokenizer)
