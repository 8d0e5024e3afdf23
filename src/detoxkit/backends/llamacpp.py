"""A detoxkit method as a llama-cpp-python `logits_processor`.

llama.cpp sees one sequence per call and holds no second model here, so only
methods whose backends include "llamacpp" are accepted (DExperts and GeDi need
extra forwards of the transformers model and are refused).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..methods import build_method
from ..methods.base import DetoxMethod
from ..tokens import as_bindable


class LlamaCppLogitsProcessor:
    """(input_ids int32 [T], scores float32 [V]) -> scores float32 [V]. llama-cpp-python passes
    the whole sequence so far (prompt + generated) for one sequence. One instance per
    completion call (use reset() or a new one)."""

    backend = "llamacpp"

    def __init__(self, method: DetoxMethod | str | list[str], tokenizer_or_lm: Any):
        method = build_method(method)
        method.check_backend(self.backend)
        self.method = method
        self.lm = as_bindable(tokenizer_or_lm)
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
