"""GTA: a gate that runs any method only where a cheap check says the continuation
is turning toxic (after Kim et al., "Gated Toxicity Avoidance", 2024).

    --method "gate:wrap=dexperts:alpha=2.0,check=cfl,threshold=0.05"
    --method "gate:wrap=wordban+dexperts:alpha=2.0;path=DIR,check=scorer,every=4"

`wrap` is the wrapped method spec or chain (`+` between chained methods); put it in
parentheses, or separate its settings with `;`, so that `,` separates the gate's own
settings (the grammar of detoxkit/specs.py).

Checks, per row and step:
- `check=cfl` (default): the base model's probability that the next token is one
  whose CFL effect is >= `token_effect`; the gate opens when it is >= `threshold`.
  A token-level predictor: one [B, V] softmax and dot product per step.
- `check=scorer`: every `every` tokens the scorer (`scorer=NAME`, default
  profanity-svm) scores the continuation so far; the gate opens when the score is
  >= `threshold` and stays so until the next check.
An opened gate stays open for `hold` steps (default 1: this step only).

While closed, the wrapped method is skipped (its `skip` keeps stateful methods
such as DExperts in step, and they catch up when the gate opens). The method
object accumulates counters over all its generate calls, `run_stats()`:
steps (row-steps of live rows), open_steps, open_rate, samples, samples_opened,
first_open_step {step: samples}, open_by_step {step: row-steps}.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import DetoxkitError
from ..specs import parse_chain
from ..tokens import pad_to_width
from .base import DetoxMethod, LogitsTransform

CHECKS = ("cfl", "scorer")


def build_wrapped(spec: str) -> DetoxMethod:
    from . import build_method

    return build_method(parse_chain(spec))


class Gate(DetoxMethod):
    """Run a wrapped method only where a cheap toxicity check fires (GTA)."""

    name = "gate"

    def __init__(self, wrap: str | None = None, check: str = "cfl", threshold: float | None = None,
                 token_effect: float = 0.1, every: int = 4, hold: int = 1,
                 scorer: str = "profanity-svm", table: str | None = None,
                 method: DetoxMethod | None = None):
        if method is None:
            if not wrap:
                raise DetoxkitError("gate needs the method to wrap: gate:wrap=NAME[:k=v;k=v]")
            method = build_wrapped(wrap)
        if check not in CHECKS:
            raise DetoxkitError(f"gate: check must be one of {', '.join(CHECKS)}, not '{check}'")
        if int(every) < 1 or int(hold) < 1:
            raise DetoxkitError("gate: every and hold must be >= 1")
        self.inner = method
        self.check = check
        self.threshold = float(threshold if threshold is not None else (0.05 if check == "cfl" else 0.5))
        self.token_effect = float(token_effect)
        self.every, self.hold = int(every), int(hold)
        self.scorer_name, self.table = scorer, table
        self.backends = method.backends
        self._stats: dict[str, Any] = {}
        self.reset_stats()

    def reset_stats(self) -> None:
        self._stats = {"steps": 0, "open_steps": 0, "samples": 0, "samples_opened": 0,
                       "first_open_step": {}, "open_by_step": {}}

    def run_stats(self) -> dict[str, Any]:
        s = dict(self._stats)
        s["open_rate"] = round(s["open_steps"] / s["steps"], 6) if s["steps"] else None
        s["first_open_step"] = dict(sorted(s["first_open_step"].items()))
        s["open_by_step"] = dict(sorted(s["open_by_step"].items()))
        inner = self.inner.run_stats()
        if inner:
            s["inner"] = inner
        return s

    def settings(self):
        out = {"wrap": self.inner.describe(), "check": self.check, "threshold": self.threshold,
               "hold": self.hold}
        if self.check == "cfl":
            out.update(token_effect=self.token_effect, table=self.table)
        else:
            out.update(scorer=self.scorer_name, every=self.every)
        return out

    def guided_by(self):
        own = [self.scorer_name] if self.check == "scorer" else self._cfl().guided_by()
        return sorted(set(self.inner.guided_by()) | set(own))

    def _cfl(self):
        from .tables import CFL

        return CFL(path=self.table)

    def bind(self, lm):
        inner = self.inner.bind(lm)
        if self.check == "cfl":
            effects = self._cfl().effects(lm.tokenizer)
            return _GateTransform(self, inner, risky=(effects >= self.token_effect).float())
        from ..scorers import load_scorer

        return _GateTransform(self, inner, scorer=load_scorer(self.scorer_name),
                              tokenizer=lm.tokenizer)


class _GateTransform(LogitsTransform):
    def __init__(self, gate: Gate, inner: LogitsTransform, risky: torch.Tensor | None = None,
                 scorer=None, tokenizer=None):
        self.gate, self.inner = gate, inner
        self.risky, self.scorer, self.tokenizer = risky, scorer, tokenizer
        self.start: int | None = None
        self.open_until: torch.Tensor | None = None
        self.ever_open: torch.Tensor | None = None
        self.scored_open: torch.Tensor | None = None
        self._risky_fit: torch.Tensor | None = None

    def _check(self, input_ids, logits, step: int) -> torch.Tensor:
        B, V = logits.shape
        if self.risky is not None:
            if self._risky_fit is None or self._risky_fit.shape[0] != V:
                self._risky_fit = pad_to_width(self.risky, V).to(logits.device)
            risk = torch.softmax(logits.float(), dim=-1) @ self._risky_fit
            return risk >= self.gate.threshold
        if step == 0 or step % self.gate.every:
            return self.scored_open
        texts = self.tokenizer.batch_decode(input_ids[:, self.start:].tolist(), skip_special_tokens=True)
        scores = torch.as_tensor(self.scorer.score(texts)["toxicity"], dtype=torch.float64)
        self.scored_open = (scores.nan_to_num(0.0) >= self.gate.threshold).to(logits.device)
        return self.scored_open

    def __call__(self, input_ids, logits):
        B, T = input_ids.shape
        stats = self.gate._stats
        if self.start is None:
            self.start = T
            self.open_until = torch.full((B,), -1, dtype=torch.long, device=logits.device)
            self.ever_open = torch.zeros(B, dtype=torch.bool, device=logits.device)
            self.scored_open = torch.zeros(B, dtype=torch.bool, device=logits.device)
            stats["samples"] += B
        step = T - self.start
        live = torch.ones(B, dtype=torch.bool, device=logits.device)
        if self.attention_mask is not None and step > 0:
            live = self.attention_mask[:, -1].to(logits.device).bool()
        fired = self._check(input_ids, logits, step) & live
        self.open_until = torch.where(fired, torch.full_like(self.open_until, step + self.gate.hold - 1),
                                      self.open_until)
        is_open = (self.open_until >= step) & live
        n_open = int(is_open.sum())
        stats["steps"] += int(live.sum())
        stats["open_steps"] += n_open
        if n_open:
            stats["open_by_step"][step] = stats["open_by_step"].get(step, 0) + n_open
            first = is_open & ~self.ever_open
            n_first = int(first.sum())
            if n_first:
                stats["first_open_step"][step] = stats["first_open_step"].get(step, 0) + n_first
                stats["samples_opened"] += n_first
                self.ever_open |= first
        self.share_context(self.inner)
        self.top_p_override = None
        if not n_open:
            self.inner.skip(input_ids, logits)
            return logits
        out = self.inner(input_ids, logits)
        if self.inner.top_p_override is not None:  # closed rows sample with the run's top-p
            nan = torch.full_like(self.inner.top_p_override, float("nan"))
            self.top_p_override = torch.where(is_open, self.inner.top_p_override, nan)
        if n_open == B:
            return out
        return torch.where(is_open[:, None], out, logits)

    def skip(self, input_ids, logits):
        self.share_context(self.inner)
        self.inner.skip(input_ids, logits)
