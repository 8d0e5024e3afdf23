"""A detoxkit method as a transformers LogitsProcessor, for a plain `model.generate`.

    from transformers import LogitsProcessorList
    from detoxkit import as_logits_processor

    proc = as_logits_processor("wordban", lm)        # lm: detoxkit LoadedLM
    model.generate(**inputs, do_sample=True, logits_processor=LogitsProcessorList([proc]))

A processor holds the per-row state of ONE generate call: make a new one per call
(`as_logits_processor` binds the method on construction; `proc.reset()` rebinds).
The llama.cpp and vLLM equivalents are in backends/llamacpp.py and backends/vllm.py.
"""

from __future__ import annotations

from typing import Any

import torch

from ...methods.base import DetoxMethod, LogitsTransform
from ...tokens import as_bindable


def mask_from_ids(input_ids: torch.Tensor, pad_id: int | None) -> torch.Tensor | None:
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
        method.check_backend("hf")
        self.method = method
        self.lm = lm
        self.transform: LogitsTransform = method.bind(lm)

    def reset(self) -> None:
        self.transform = self.method.bind(self.lm)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        pad = getattr(self.lm.tokenizer, "pad_token_id", None)
        self.transform.attention_mask = mask_from_ids(input_ids, pad)
        return self.transform(input_ids, scores)


def as_logits_processor(method: DetoxMethod | str | list[str], lm: Any) -> DetoxLogitsProcessor:
    """A transformers LogitsProcessor for `method` (a method, a spec or a list of specs)
    on `lm` (a detoxkit LoadedLM; methods needing only a tokenizer also take a tokenizer).

    Bind it just before model.generate: methods with their own forwards (DExperts, GeDi)
    hook the model from that moment to share its computation."""
    from ...methods import build_method

    return DetoxLogitsProcessor(build_method(method), as_bindable(lm))
