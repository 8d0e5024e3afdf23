"""The backend interface: where samples and log-likelihoods come from.

A backend turns requests (a prompt and the sample indices still to draw for it)
into samples under a sampling config, scores continuations' log-likelihoods (for
the perplexity oracle), and declares what it can do. The runner talks only to
this interface; methods that transform logits run only on backends that expose
them.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import DetoxkitError

# sequences per generate call on a CPU when the user does not set --batch-size: about 8
# prompts x 25 samples share each decoding forward
CPU_BATCH_ROWS = 200

if TYPE_CHECKING:  # pragma: no cover
    from ..methods.base import DetoxMethod


@dataclass(frozen=True)
class SamplingConfig:
    num_samples: int = 25
    max_new_tokens: int = 20
    top_p: float = 0.9
    temperature: float = 1.0  # 0 = greedy: always the most likely token
    top_k: int = 0  # 0 = off
    seed: int = 0

    def __post_init__(self):
        if self.num_samples < 1:
            raise ValueError("num_samples must be >= 1")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_p must be in (0, 1]")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0 (0 = greedy: the most likely token)")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")


@dataclass
class Request:
    """One prompt and the sample indices still to draw for it."""

    prompt_id: str
    prompt_ids: list[int]  # the prompt's token ids (empty where the backend tokenizes remotely)
    sample_indices: list[int] = field(default_factory=list)
    text: str = ""  # the prompt's text
    messages: list[dict] | None = None  # chat mode: the conversation to answer


@dataclass
class Sample:
    prompt_id: str
    sample_index: int
    seed: int
    text: str
    token_ids: list[int]
    finished: bool  # ended with EOS before max_new_tokens
    tokens: int | None = None  # generated tokens where the ids are not known (API backends)
    error: str | None = None  # why this sample could not be drawn (it is retried on resume)

    @property
    def n_tokens(self) -> int:
        return self.tokens if self.tokens is not None else len(self.token_ids)


@dataclass(frozen=True)
class Capabilities:
    logits: bool  # decoding methods may transform the next-token logits
    seeded: bool  # a sample depends only on its seed: reruns and resumes reproduce it exactly
    chat_template: bool  # can format a prompt as a chat turn
    batching: bool  # draws many sequences per forward pass
    loglikelihoods: bool = True  # can measure continuations (be the perplexity oracle)
    # a sample does not depend on which others share its batch (separate requests): a resume
    # then draws only the missing samples instead of whole batches
    batch_invariant: bool = False


class Backend(ABC):
    name: str = ""  # registry name; methods list the backends they support by it
    # Python modules the backend needs beyond detoxkit's own dependencies: (module, pip command)
    requires: tuple[tuple[str, str], ...] = ()

    capabilities: Capabilities
    context_length: int | None = None  # prompt + new tokens the model accepts (None: unknown)

    @classmethod
    def from_config(cls, model: str, cfg: Any, **settings) -> "Backend":
        """The backend for a run's config (a RunConfig); API backends read their settings."""
        return cls(model, device=cfg.device, dtype=cfg.dtype, **settings)

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The model's provenance for run.json (name, revision, device, ...)."""

    @abstractmethod
    def encode(self, text: str, messages: list[dict] | None = None) -> list[int]:
        """The prompt's token ids as the model will see them: the text, or in chat mode the
        conversation in the model's chat template (empty where the server tokenizes)."""

    @abstractmethod
    def generate(self, requests: list[Request], sampling: SamplingConfig,
                 method: "DetoxMethod") -> list[Sample]:
        """A sample for every (request, sample index), in request order."""

    @abstractmethod
    def continuation_nll(self, prompts: list[str], continuations: list[str]) -> list[tuple[float, int]]:
        """(summed negative log-likelihood, token count) of each continuation given its prompt;
        (0.0, 0) for an empty continuation."""

    def published_nll(self, prompts: list[str], continuations: list[str],
                      separate: list[tuple[float, int]]) -> list[tuple[float, int]] | None:
        """The NLL as the DExperts code measures it (prompt and continuation tokenized together,
        minus the prompt's own NLL), for `perplexity_published`; None where the backend cannot."""
        return None

    def run_stats(self) -> dict[str, Any]:
        """Counters of this process's calls (requests, retries, token usage) for run.json."""
        return {}

    def default_batch_rows(self) -> int:
        """Sequences per generate call when the user does not set --batch-size."""
        return CPU_BATCH_ROWS

    def is_out_of_memory(self, exc: BaseException) -> bool:
        """Whether `exc` means the batch was too big (the runner halves it and retries)."""
        return False

    def release_memory(self) -> None:
        """Free what a failed batch left behind before the retry."""


def check_requirements(name: str, requires: tuple[tuple[str, str], ...]) -> None:
    """A clear error with the pip command for each optional module a backend needs."""
    missing = [(module, pip) for module, pip in requires if importlib.util.find_spec(module) is None]
    if missing:
        raise DetoxkitError(f"the {name} backend needs {', '.join(m for m, _ in missing)}, which is "
                            f"not installed. Install it with: {'; '.join(p for _, p in missing)}")


def check_method_support(method: "DetoxMethod", backend: Backend) -> None:
    """Refuse, before any sample is drawn, a method chain the backend cannot run."""
    if not method.changes_logits:
        return  # plain sampling runs everywhere
    if not backend.capabilities.logits:
        raise DetoxkitError(f"method '{method.name}' transforms the next-token logits, which the "
                            f"{backend.name} backend does not expose (methods there: none; "
                            f"'{method.name}' supports: {', '.join(sorted(method.backends))})")
    method.check_backend(backend.name)
