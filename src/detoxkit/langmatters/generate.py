"""The two generation phases of the protocol: reasoning up to its end-of-thinking marker (or a
token budget), then the answer after a header naming its language.

On the hf backend the reasoning stops *at* the marker: a logits transform ends a row with EOS
on the step after its generated text first holds the marker (a one-token marker such as
Qwen3's </think> or a marker written in several tokens alike). Backends without logits (an
OpenAI-compatible server) generate up to the budget and the reasoning is cut at the marker
afterwards: the same text, at the cost of the tokens after it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backends import Request, SamplingConfig
from ..methods.base import DetoxMethod, LogitsTransform
from .families import cut_at_marker


class _EndAfterMarker(LogitsTransform):
    def __init__(self, tokenizer, marker: str, eos_id: int):
        self.tokenizer, self.marker, self.eos_id = tokenizer, marker, eos_id
        self.width: int | None = None  # the prompt's width: only generated tokens count

    def __call__(self, input_ids, logits):
        if self.width is None:
            self.width = input_ids.shape[1]
        if input_ids.shape[1] == self.width:
            return logits
        out = logits
        tail = input_ids[:, self.width:]
        for row in range(tail.shape[0]):
            # decode only the end of the row: the marker is a handful of tokens at most
            text = self.tokenizer.decode(tail[row, -16:].tolist(), skip_special_tokens=False)
            if self.marker in text:
                if out is logits:
                    out = logits.clone()
                out[row] = float("-inf")
                out[row, self.eos_id] = 0.0
        return out


class StopAtMarker(DetoxMethod):
    """Not a detoxification method: ends each sample right after the end-of-thinking marker."""

    name = "stop-at-marker"
    changes_logits = True
    backends = frozenset({"hf"})

    def __init__(self, marker: str):
        self.marker = marker

    def settings(self):
        return {"marker": self.marker}

    def bind(self, lm):
        from ..tokens import eos_ids

        return _EndAfterMarker(lm.tokenizer, self.marker, eos_ids(lm)[0])


@dataclass
class Drawn:
    key: str  # "<prompt id>|<condition>"
    sample_index: int
    seed: int
    text: str
    n_tokens: int
    finished: bool  # reasoning: reached the marker (or EOS); answer: ended by EOS
    marker_reached: bool = False
    error: str | None = None


def _requests(backend, items: list[tuple[str, list[int], str]]) -> list[Request]:
    """Requests for (key, sample indices, prompt text); the hf backend gets the text's token ids
    (the rendered chat template already holds its special tokens)."""
    tok = getattr(getattr(backend, "lm", None), "tokenizer", None)
    out = []
    for key, indices, text in items:
        ids = tok(text, add_special_tokens=False)["input_ids"] if tok is not None else []
        out.append(Request(key, ids, list(indices), text))
    return out


def draw_reasoning(backend, items, sampling: SamplingConfig, marker: str) -> list[Drawn]:
    """Phase 1 for (key, sample indices, prompt text): reasoning cut at the marker."""
    reqs = _requests(backend, items)
    if backend.name == "hf":
        from ..backends.hf.sampler import TransformersSampler

        samples = TransformersSampler(backend.lm, sampling, StopAtMarker(marker)).generate(reqs)
    else:
        from ..methods.base import NoMethod

        samples = backend.generate(reqs, sampling, NoMethod())
    out = []
    for s in samples:
        if s.error is not None:
            out.append(Drawn(s.prompt_id, s.sample_index, s.seed, "", 0, False, error=s.error))
            continue
        text, reached = cut_at_marker(s.text, marker)
        n = len(s.token_ids) if s.token_ids else (s.tokens or 0)
        if reached and s.token_ids:  # count the tokens before the marker, not the marker's own
            n = len(backend.lm.tokenizer(text, add_special_tokens=False)["input_ids"])
        out.append(Drawn(s.prompt_id, s.sample_index, s.seed, text, n, reached or s.finished,
                         marker_reached=reached))
    return out


def draw_answers(backend, items, sampling: SamplingConfig) -> list[Drawn]:
    """Phase 2 for (key, [sample index], prompt text with its reasoning): one answer each."""
    from ..methods.base import NoMethod

    reqs = _requests(backend, items)
    if backend.name == "hf":
        from ..backends.hf.sampler import TransformersSampler

        samples = TransformersSampler(backend.lm, sampling, NoMethod()).generate(reqs)
    else:
        samples = backend.generate(reqs, sampling, NoMethod())
    return [Drawn(s.prompt_id, s.sample_index, s.seed, s.text, s.n_tokens if s.error is None else 0,
                  s.finished, error=s.error) for s in samples]
