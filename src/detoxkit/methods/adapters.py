"""Adapters: a detoxkit method as a transformers LogitsProcessor, a llama.cpp
`logits_processor` callable, or a vLLM per-request logits processor.

    from transformers import LogitsProcessorList
    from detoxkit.methods import build_method
    from detoxkit.methods.adapters import as_logits_processor

    proc = as_logits_processor(build_method("wordban"), lm)        # lm: detoxkit LoadedLM
    model.generate(**inputs, do_sample=True, logits_processor=LogitsProcessorList([proc]))

A processor holds the per-row state of ONE generate call: make a new one per call
(`as_logits_processor` binds the method on construction; `proc.reset()` rebinds).

llama.cpp and vLLM see one sequence per call and have no second model here, so
only methods whose backends include "llamacpp" / "vllm" are accepted (DExperts
and GeDi need extra forwards of the transformers model and are refused).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..tokens import TokenizerOnlyLM
from .base import DetoxMethod, LogitsTransform


def _as_lm(lm_or_tokenizer: Any):
    if hasattr(lm_or_tokenizer, "tokenizer"):
        return lm_or_tokenizer
    return TokenizerOnlyLM(lm_or_tokenizer)


def _mask_from_ids(input_ids: torch.Tensor, pad_id: int | None) -> torch.Tensor | None:
    """Best-effort mask for left-padded batches in model.generate (pad tokens on the left)."""
    if pad_id is None or input_ids.shape[0] == 1:
        return None
    is_pad = input_ids == pad_id
    # only leading pads are padding; a pad id later in the row (e.g. EOS as pad) is a real token
    leading = torch.cumprod(is_pad.long(), dim=-1).bool()
    return (~leading).long()


try:  # transformers is a hard dependency, but keep the import local to this adapter
    from transformers import LogitsProcessor as _HFLogitsProcessor
except ImportError:  # pragma: no cover
    _HFLogitsProcessor = object


class DetoxLogitsProcessor(_HFLogitsProcessor):
    """transformers.LogitsProcessor around one bound detoxkit transform."""

    def __init__(self, method: DetoxMethod, lm: Any):
        method.check_backend("transformers")
        self.method = method
        self.lm = lm
        self.transform: LogitsTransform = method.bind(lm)

    def reset(self) -> None:
        self.transform = self.method.bind(self.lm)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        pad = getattr(self.lm.tokenizer, "pad_token_id", None)
        self.transform.attention_mask = _mask_from_ids(input_ids, pad)
        return self.transform(input_ids, scores)


def as_logits_processor(method: DetoxMethod | str | list[str], lm: Any) -> DetoxLogitsProcessor:
    """A transformers LogitsProcessor for `method` (a method, a spec or a list of specs)
    on `lm` (a detoxkit LoadedLM; methods needing only a tokenizer also take a tokenizer).

    Bind it just before model.generate: methods with their own forwards (DExperts, GeDi)
    hook the model from that moment to share its computation."""
    if not isinstance(method, DetoxMethod):
        from . import build_method

        method = build_method(method)
    return DetoxLogitsProcessor(method, _as_lm(lm))


class LlamaCppLogitsProcessor:
    """llama-cpp-python `logits_processor` callable: (input_ids int32 [T], scores float32 [V])
    -> scores float32 [V]. llama-cpp-python passes the whole sequence so far (prompt +
    generated) for one sequence. One instance per completion call (use reset() or a new one)."""

    backend = "llamacpp"

    def __init__(self, method: DetoxMethod | str | list[str], tokenizer_or_lm: Any):
        if not isinstance(method, DetoxMethod):
            from . import build_method

            method = build_method(method)
        method.check_backend(self.backend)
        self.method = method
        self.lm = _as_lm(tokenizer_or_lm)
        self.transform = method.bind(self.lm)

    def reset(self) -> None:
        self.transform = self.method.bind(self.lm)

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        ids = torch.as_tensor(np.asarray(input_ids, dtype=np.int64)).reshape(1, -1)
        logits = torch.from_numpy(np.array(scores, dtype=np.float32, copy=True)).reshape(1, -1)
        self.transform.attention_mask = None
        out = self.transform(ids, logits)
        return out.reshape(-1).detach().cpu().numpy().astype(np.float32, copy=False)


def llamacpp_logits_processor(method, tokenizer_or_lm) -> LlamaCppLogitsProcessor:
    """For `Llama(...)(prompt, logits_processor=LogitsProcessorList([proc]))`. The tokenizer
    must be the GGUF model's (e.g. the HF tokenizer of the same model)."""
    return LlamaCppLogitsProcessor(method, tokenizer_or_lm)


class VLLMRequestProcessor:
    """vLLM per-request logits processor (the `SamplingParams(logits_processors=[...])`
    callable form): (prompt_token_ids, output_token_ids, logits [V]) -> logits [V].
    State is per request, so make one per request (`vllm_logits_processor` is a factory)."""

    backend = "vllm"

    def __init__(self, method: DetoxMethod, lm: Any):
        method.check_backend(self.backend)
        self.transform = method.bind(lm)

    def __call__(self, *args):
        if len(args) == 3:
            prompt_ids, output_ids, logits = args
        else:  # the two-argument form: (output_token_ids, logits)
            prompt_ids, (output_ids, logits) = [], args
        ids = torch.tensor([list(prompt_ids) + list(output_ids)], dtype=torch.long,
                           device=logits.device)
        self.transform.attention_mask = None
        return self.transform(ids, logits.unsqueeze(0)).squeeze(0)


def vllm_logits_processor(method: DetoxMethod | str | list[str], tokenizer_or_lm: Any):
    """A factory: call it once per request to get that request's processor,
    e.g. `SamplingParams(logits_processors=[factory()])`."""
    if not isinstance(method, DetoxMethod):
        from . import build_method

        method = build_method(method)
    method.check_backend("vllm")
    lm = _as_lm(tokenizer_or_lm)
    return lambda: VLLMRequestProcessor(method, lm)


__all__ = ["DetoxLogitsProcessor", "LlamaCppLogitsProcessor", "VLLMRequestProcessor",
           "as_logits_processor", "llamacpp_logits_processor", "vllm_logits_processor"]
