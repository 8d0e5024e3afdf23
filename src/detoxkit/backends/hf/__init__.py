"""The hf backend: transformers models in this process, on CPU or CUDA.

Loads embedded offline models (GGUF converted once to safetensors), local model
directories and hub ids (`models.py`, `embedded.py`); samples with per-sample
seeds and a shared prompt prefill (`sampler.py`); measures continuation
log-likelihoods for the perplexity oracle (`loglik.py`); and wraps methods as
transformers LogitsProcessors for a plain `model.generate` (`processors.py`).
"""

from __future__ import annotations

from typing import Any

from ...errors import DetoxkitError
from ..base import CPU_BATCH_ROWS, Backend, Capabilities, Request, Sample, SamplingConfig
from .models import LoadedLM, clear_cache, load_lm, resolve_device, resolve_dtype


class HFBackend(Backend):
    name = "hf"

    def __init__(self, model: str, device: str = "cpu", dtype: str = "auto",
                 nll_batch_size: int = 16, adapter: str | None = None):
        if adapter:  # a trained adapter (detoxkit train dapt|sgeat|rlhf) on its own model copy
            from ...training.lm_adapter import load_adapted_lm

            self.lm = load_adapted_lm(model, adapter, device=device, dtype=dtype)
        else:
            self.lm = load_lm(model, device=device, dtype=dtype)
        self.nll_batch_size = nll_batch_size
        self.context_length = self.lm.context_length
        self.capabilities = Capabilities(
            logits=True, seeded=True, batching=True,
            chat_template=bool(getattr(self.lm.tokenizer, "chat_template", None)))

    def describe(self) -> dict[str, Any]:
        return self.lm.describe()

    def encode(self, text: str, messages: list[dict] | None = None) -> list[int]:
        return encode_prompt(self.lm.tokenizer, text, messages, self.lm.name)

    def generate(self, requests: list[Request], sampling: SamplingConfig, method) -> list[Sample]:
        from .sampler import TransformersSampler

        return TransformersSampler(self.lm, sampling, method).generate(requests)

    def continuation_nll(self, prompts: list[str], continuations: list[str]) -> list[tuple[float, int]]:
        from .loglik import continuation_nll

        return continuation_nll(self.lm, prompts, continuations, batch_size=self.nll_batch_size)

    def published_nll(self, prompts: list[str], continuations: list[str],
                      separate: list[tuple[float, int]]) -> list[tuple[float, int]]:
        from .loglik import published_nll

        return published_nll(self.lm, prompts, continuations, separate, batch_size=self.nll_batch_size)

    def default_batch_rows(self) -> int:
        # a GPU takes much more than a CPU
        return 1024 if str(self.lm.model.device).startswith("cuda") else CPU_BATCH_ROWS

    def is_out_of_memory(self, exc: BaseException) -> bool:
        import torch

        return isinstance(exc, torch.OutOfMemoryError) or (
            isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())

    def release_memory(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def encode_prompt(tok, text: str, messages: list[dict] | None, model_name: str) -> list[int]:
    """A prompt's ids under a transformers tokenizer: the text, or the conversation in the
    tokenizer's chat template (shared by the backends that tokenize here)."""
    if messages is None:
        return tok(text, add_special_tokens=True)["input_ids"]
    if not getattr(tok, "chat_template", None):
        raise DetoxkitError(f"model {model_name} has no chat template: use --prompt-format raw")
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


__all__ = ["HFBackend", "LoadedLM", "clear_cache", "encode_prompt", "load_lm", "resolve_device",
           "resolve_dtype"]
