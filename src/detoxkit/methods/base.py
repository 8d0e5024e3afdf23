"""The decoding-time method interface.

A method is configured once (its settings) and bound to a model for each
generate call: `method.bind(lm)` returns a LogitsTransform that holds the
per-row state of that call. A transform maps (input_ids [B, T], next-token
logits [B, V]) to new logits [B, V] and never mutates its inputs. Rows keep
their position in the batch for the whole call.

A method that needs extra models declares the backends it supports; asking for
another backend is an error, never a silent fallback.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import torch

from ..counters import fold_counts
from ..errors import DetoxkitError

if TYPE_CHECKING:  # pragma: no cover
    from ..backends.hf import LoadedLM

ALL_BACKENDS = frozenset({"hf", "vllm", "llamacpp"})


class LogitsTransform(ABC):
    # [B, T] mask aligned with input_ids (0 = left padding or after EOS). detoxkit's sampler
    # sets it before every call; through model.generate it stays None (see backends/hf/processors.py).
    attention_mask: torch.Tensor | None = None
    # The call's generation length, set by detoxkit's sampler before the first step (methods that
    # look ahead, e.g. TRACE, plan up to it); None through model.generate (use a method setting).
    max_new_tokens: int | None = None
    # This step's uniform number per row, the one the sampler draws the token with, and the
    # call's SamplingConfig: a method that needs the token plain sampling would draw (GTA's
    # candidate) computes it exactly. Set by detoxkit's sampler; None through model.generate.
    step_uniforms: torch.Tensor | None = None
    sampling: Any = None
    # Set by a transform during __call__ when it truncates the distribution itself: the top-p
    # the sampler must use for this step, per row (NaN: the run's top-p). DExperts' reference,
    # say, filters the base logits at 0.9 and samples its ensemble with p = 1.
    top_p_override: torch.Tensor | None = None
    # True where a row's output depends only on that row's input_ids and logits and nothing is
    # kept between calls: one instance then serves any rows in any order (the vLLM processor
    # shares it across requests instead of binding one per request).
    row_independent: bool = False

    @abstractmethod
    def __call__(self, input_ids: torch.LongTensor, logits: torch.FloatTensor) -> torch.FloatTensor:
        ...

    def share_context(self, inner: "LogitsTransform") -> None:
        """Hand this step's context (mask, generation length, uniforms, sampling config) to a
        wrapped transform, and clear its top-p override of the previous step."""
        inner.attention_mask = self.attention_mask
        inner.max_new_tokens = self.max_new_tokens
        inner.step_uniforms = self.step_uniforms
        inner.sampling = self.sampling
        inner.top_p_override = None

    def skip(self, input_ids: torch.LongTensor, logits: torch.FloatTensor) -> None:
        """Called instead of __call__ for a step whose logits this transform must not change
        (a closed gate). A stateful transform (one with its own KV cache) keeps in step here."""
        return None


class DetoxMethod(ABC):
    name: str = ""
    backends: frozenset[str] = ALL_BACKENDS
    changes_logits: bool = True  # False only for plain sampling, which runs on every backend
    # gradient-based methods (PPLM, semantic control) step through the model's activations:
    # `--dtype auto` keeps their runs in float32, the precision their references ran in
    needs_float32: bool = False
    specs: tuple[str, ...] = ()  # set by build_method: the specs that rebuild this method

    def __init__(self, **settings: Any):
        if settings:
            raise DetoxkitError(f"method '{self.name}' takes no settings, got {sorted(settings)}")

    def settings(self) -> dict[str, Any]:
        """The resolved settings, recorded with every run."""
        return {}

    def guided_by(self) -> list[str]:
        """Models, scorers or artefacts that steer this method (for evaluation hygiene)."""
        return []

    _guided: list[str] | None = None  # what the method's trained artefact records (see below)

    def _record_guided_by(self, meta: dict | None, fallback: list[str]) -> None:
        """Keep the guided_by a loaded artefact's metadata records (`fallback` for the shipped
        artefacts, which predate the record)."""
        from ..hygiene import recorded_guided_by

        self._guided = recorded_guided_by(meta, fallback)

    def _artefact_guided_by(self, fallback: list[str], path=None, read_meta=None) -> list[str]:
        """guided_by as the method's artefact records it: the artefact loaded last, else the one
        an explicit path setting names (read_meta(path): its metadata), else `fallback`. An
        artefact found by tokenizer in the cache is known only once bound: give it by path to
        have a run's provenance record it. A missing path is reported by bind, not here."""
        from pathlib import Path

        if self._guided is None and path and Path(path).expanduser().exists():
            self._record_guided_by(read_meta(path), fallback)
        return list(fallback if self._guided is None else self._guided)

    def check_backend(self, backend: str) -> None:
        if backend not in self.backends:
            raise DetoxkitError(f"method '{self.name}' does not support the {backend} backend "
                                f"(supported: {', '.join(sorted(self.backends))})")

    @abstractmethod
    def bind(self, lm: "LoadedLM") -> LogitsTransform:
        """Fresh per-call state for one generate call on `lm`."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "settings": self.settings(), "guided_by": self.guided_by()}

    def run_stats(self) -> dict[str, Any]:
        """Counters accumulated over this method's generate calls (e.g. how often a gate
        opened), for metrics.json. Empty for methods that count nothing."""
        return {}

    def merge_run_stats(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        """run_stats() of several processes (Ray actors) as one: the counters added. A method
        whose stats hold ratios recomputes them (the gate's open_rate)."""
        return fold_counts([p for p in parts if p])


class _Identity(LogitsTransform):
    row_independent = True

    def __call__(self, input_ids, logits):
        return logits


class NoMethod(DetoxMethod):
    """Plain sampling."""

    name = "none"
    changes_logits = False

    def bind(self, lm):
        return _Identity()
