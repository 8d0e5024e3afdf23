"""A detoxkit method as a vLLM per-request logits processor.

This is the callable form `(prompt_token_ids, output_token_ids, logits) -> logits`
that older vLLM releases take in `SamplingParams(logits_processors=[...])`; vLLM
0.33 takes processor classes at engine construction instead, which a vLLM
backend will wrap. Only methods whose backends include "vllm" are accepted.
"""

from __future__ import annotations

from typing import Any

import torch

from ..methods import build_method
from ..methods.base import DetoxMethod
from ..tokens import as_bindable


class VLLMRequestProcessor:
    """(prompt_token_ids, output_token_ids, logits [V]) -> logits [V]. State is per request,
    so make one per request (`vllm_logits_processor` is a factory)."""

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
    method = build_method(method)
    method.check_backend("vllm")
    lm = as_bindable(tokenizer_or_lm)
    return lambda: VLLMRequestProcessor(method, lm)
