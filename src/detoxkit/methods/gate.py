"""GTA: a gate that runs any method only where a toxicity check fires (Kim & Cho, "GTA: Gated
Toxicity Avoidance for LM Performance Preservation", Findings of EMNLP 2023).

    --method "gate:wrap=dexperts:alpha=2.0"                      # check=paper, threshold 0.5
    --method "gate:wrap=dexperts:alpha=2.0,check=cfl,threshold=0.05"
    --method "gate:wrap=wordban+dexperts:alpha=2.0;path=DIR,check=scorer,every=4"

`wrap` is the wrapped method spec or chain (`+` between chained methods); put it in
parentheses, or separate its settings with `;`, so that `,` separates the gate's own
settings (the grammar of detoxkit/specs.py).

Checks, per row and step:
- `check=paper` (default), as the authors' code runs it (HeegyuKim/GTA,
  DExperts/dexperts.py `GatedLogitsProcessor.__call__`): at every step, step 0 included,
  the candidate is the token plain sampling draws from the gate's input logits (computed
  with the step's uniform and the call's sampling config, so a closed gate lets the
  sampler draw that very token); the classifier (`scorer=`, default profanity-svm) scores
  the text of prompt + continuation + candidate; at a score >= `threshold` (0.5) the
  token is drawn again from the wrapped method's distribution, with a second uniform
  derived from the step's (the reference samples again), and the row returns only that
  token. A threshold <= 0 opens every step without classifying (the candidate is not
  needed): the wrapped logits are returned as they are.
  Through a plain model.generate (no uniforms): the candidate is the most likely token,
  and an open row returns the wrapped logits, which generate samples itself.
- `check=cfl`: the base model's probability that the next token is one whose CFL effect
  is >= `token_effect`; the gate opens when it is >= `threshold` (0.05). A token-level
  predictor: one [B, V] softmax and dot product per step.
- `check=scorer`: every `every` tokens (never at step 0) the scorer scores the
  continuation so far (without the prompt or a candidate); the gate opens when the score
  is >= `threshold` (0.5) and stays so until the next check.
An opened gate stays open for `hold` steps (default 1: this step only).

While closed, the wrapped method is skipped (its `skip` keeps stateful methods
such as DExperts in step, and they catch up when the gate opens). The method
object accumulates counters over all its generate calls, `run_stats()`:
steps (row-steps of live rows), open_steps, open_rate, samples, samples_opened,
first_open_step {step: samples}, open_by_step {step: row-steps}, classified (texts the
classifier scored).
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import DetoxkitError
from ..specs import parse_chain
from ..tokens import pad_to_width
from .base import DetoxMethod, LogitsTransform

CHECKS = ("paper", "cfl", "scorer")
_REDRAW_STEP = 1 << 20  # the counter the redraw uniforms are hashed with (no sampling step reaches it)


def build_wrapped(spec: str) -> DetoxMethod:
    from . import build_method

    return build_method(parse_chain(spec))


class Gate(DetoxMethod):
    """Run a wrapped method only where a toxicity check fires (GTA)."""

    name = "gate"

    def __init__(self, wrap: str | None = None, check: str = "paper", threshold: float | None = None,
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
        self.needs_float32 = method.needs_float32
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
                       "first_open_step": {}, "open_by_step": {}, "classified": 0}

    def run_stats(self) -> dict[str, Any]:
        return self._finish_stats(dict(self._stats), self.inner.run_stats())

    def merge_run_stats(self, parts):
        parts = [p for p in parts if p]
        if not parts:
            return {}
        counts = super().merge_run_stats([{k: v for k, v in p.items() if k not in ("open_rate", "inner")}
                                          for p in parts])
        return self._finish_stats(counts, self.inner.merge_run_stats([p.get("inner") or {}
                                                                      for p in parts]))

    @staticmethod
    def _finish_stats(s: dict[str, Any], inner: dict[str, Any]) -> dict[str, Any]:
        """The counters with what is derived from them: the open rate, steps in order."""
        s["open_rate"] = round(s["open_steps"] / s["steps"], 6) if s["steps"] else None
        s["first_open_step"] = dict(sorted(s["first_open_step"].items(), key=lambda kv: int(kv[0])))
        s["open_by_step"] = dict(sorted(s["open_by_step"].items(), key=lambda kv: int(kv[0])))
        if inner:
            s["inner"] = inner
        return s

    def settings(self):
        out = {"wrap": self.inner.describe(), "check": self.check, "threshold": self.threshold,
               "hold": self.hold}
        if self.check == "cfl":
            out.update(token_effect=self.token_effect, table=self.table)
        elif self.check == "scorer":
            out.update(scorer=self.scorer_name, every=self.every)
        else:
            out.update(scorer=self.scorer_name)
        return out

    def guided_by(self):
        if self.check == "cfl":
            own = self._cfl().guided_by()
        else:  # the classifier, and what it learned from (profanity-svm: the corpus)
            from ..scorers import load_scorer

            own = [self.scorer_name, *load_scorer(self.scorer_name).guided_by]
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

    def _check(self, input_ids, logits, step: int, live: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """Rows where the check fires, and whether that depends on this step's draw (then an
        open row's token is drawn again, independently of the candidate)."""
        if self.gate.check == "paper":
            return self._paper_check(input_ids, logits, live)
        if self.risky is not None:
            V = logits.shape[-1]
            if self._risky_fit is None or self._risky_fit.shape[0] != V:
                self._risky_fit = pad_to_width(self.risky, V).to(logits.device)
            risk = torch.softmax(logits.float(), dim=-1) @ self._risky_fit
            return risk >= self.gate.threshold, False
        if step == 0 or step % self.gate.every:
            return self.scored_open, False
        texts = self.tokenizer.batch_decode(input_ids[:, self.start:].tolist(), skip_special_tokens=True)
        self.gate._stats["classified"] += len(texts)
        scores = torch.as_tensor(self.scorer.score(texts)["toxicity"], dtype=torch.float64)
        self.scored_open = (scores.nan_to_num(0.0) >= self.gate.threshold).to(logits.device)
        return self.scored_open, False

    def _candidate(self, logits) -> torch.Tensor:
        """The token plain sampling draws from `logits` at this step (the most likely one when
        the sampler's uniforms are unknown, as through model.generate)."""
        cfg = self.sampling
        if self.step_uniforms is None or cfg is None:
            return logits.argmax(dim=-1)
        from ..backends.sampling import nucleus_sample

        return nucleus_sample(logits, self.step_uniforms, temperature=cfg.temperature,
                              top_p=cfg.top_p, top_k=cfg.top_k)

    def _paper_check(self, input_ids, logits, live) -> tuple[torch.Tensor, bool]:
        if self.gate.threshold <= 0:  # opens whatever the candidate: no need to draw one
            return live.clone(), False
        fired = torch.zeros_like(live)
        rows = live.nonzero().squeeze(-1).tolist()
        if not rows:
            return fired, False
        candidate = self._candidate(logits).tolist()
        mask = self.attention_mask
        seqs = [(input_ids[r][mask[r].bool()] if mask is not None else input_ids[r]).tolist()
                + [candidate[r]] for r in rows]
        texts = self.tokenizer.batch_decode(seqs, skip_special_tokens=True)
        self.gate._stats["classified"] += len(texts)
        scores = torch.as_tensor(self.scorer.score(texts)["toxicity"], dtype=torch.float64)
        fired[rows] = (scores.nan_to_num(0.0) >= self.gate.threshold).to(fired.device)
        return fired, self.step_uniforms is not None and self.sampling is not None

    def _redraw(self, out, rows, inner_top_p):
        """Rows `rows` of `out` replaced by one token drawn from them with a second uniform
        (0 there, -inf elsewhere), so the sampler takes that token whatever its own uniform."""
        from ..backends.sampling import nucleus_sample, step_uniforms

        cfg, u = self.sampling, self.step_uniforms.double()
        fresh = step_uniforms((u * 2.0 ** 53).long().tolist(), _REDRAW_STEP)
        top_p = torch.full((out.shape[0],), float(cfg.top_p), dtype=torch.float64, device=out.device)
        if inner_top_p is not None:
            top_p = torch.where(torch.isnan(inner_top_p), top_p, inner_top_p.double().to(out.device))
        token = nucleus_sample(out[rows], fresh[rows.cpu()], temperature=cfg.temperature,
                               top_p=top_p[rows], top_k=cfg.top_k)
        one = torch.full_like(out[rows], float("-inf"))
        one.scatter_(1, token[:, None], 0.0)
        out = out.clone()
        out[rows] = one
        return out

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
        held = (self.open_until >= step) & live  # open from an earlier step's decision (hold > 1)
        fired, on_draw = self._check(input_ids, logits, step, live)
        fired = fired & live
        self.open_until = torch.where(fired, torch.full_like(self.open_until, step + self.gate.hold - 1),
                                      self.open_until)
        is_open = (self.open_until >= step) & live
        redraw = fired & ~held if on_draw else torch.zeros_like(fired)
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
        inner_top_p = self.inner.top_p_override
        if redraw.any():
            out = self._redraw(out, redraw, inner_top_p)
        if inner_top_p is not None:  # closed (and redrawn) rows sample with the run's top-p
            nan = torch.full_like(inner_top_p, float("nan"))
            self.top_p_override = torch.where(is_open & ~redraw, inner_top_p, nan)
        if n_open == B:
            return out
        return torch.where(is_open[:, None], out, logits)

    def skip(self, input_ids, logits):
        self.share_context(self.inner)
        self.inner.skip(input_ids, logits)
