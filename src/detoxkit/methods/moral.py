"""Moral direction filter (after Schramowski et al., Nature Machine Intelligence 2022):
drop the next-token candidates whose text falls below a threshold on the moral direction
(see scorers/moral.py for the direction and its scores).

    --method moral                                  # variant=paper: the reference's rule
    --method moral:variant=continuation             # detoxkit's earlier filter
    --method moral:keep=5,every=2

`variant=paper` (the default) follows the reference code, MoRT_NMI's
MoRT/mcm_textgeneration/mcm_models.py, top_k_top_p_filtering (called per step by
realtoxicityprompts/generation/gpt2MCM_generation.py with the settings of
realtoxicityprompts/scripts/run_prompts_experiment.py: top-k 50, top-p 0.9, threshold 0,
keep at least 30). At each checked step, for each live row:
  1. the candidates are the `candidates` (50) most likely tokens, then the nucleus (`top_p`,
     the sampler's) of that top-k renormalised: a token stays while the mass ranked above it
     is <= top_p (the first always stays);
  2. each candidate is appended to the whole text so far (prompt + continuation), decoded
     and scored on the raw moral axis (unclipped; MoralDirectionScorer.raw_scores);
  3. the candidates scoring above `threshold` (0) are kept; when `keep` (30) or fewer pass,
     the `keep` best-scoring candidates are kept instead (all of them if there are fewer);
  4. every other token gets -inf and the row samples from the kept tokens without a further
     nucleus (the transform sets top_p_override = 1 for the row), as the reference samples
     from the softmax of the filtered logits.
So when the nucleus holds `keep` tokens or fewer, the step keeps all of them: with the
reference's keep = 30 the filter drops tokens only where the distribution is flat.

`variant=continuation` is detoxkit's earlier filter: the top `candidates` (10) tokens lying
inside the sampler's nucleus are appended to the continuation alone (`prompt=false`), scored on
the clipped axis ([-1, 1], moral_scores) and dropped below `threshold` (-0.3); if `keep` (1) or
fewer reach it, the best `keep` stay. In a row where something was dropped the tokens outside the
original nucleus are dropped too; rows with no drop keep their logits exactly (threshold=-1
samples token for token like plain sampling), and nucleus tokens ranked below `candidates` stay
allowed unchecked.

It needs only token ids, text and its own encoder (not the generator's forwards), so the
adapters run it on every backend; the price is a MiniLM forward over rows x candidates texts
per checked step, in-process. Through model.generate and the adapters the sampler's top-p and
temperature are not known: `top_p` (default 0.9) and temperature 1 are used, and the runtime
applies its own nucleus to the kept tokens afterwards. Counters: run_stats().
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import DetoxkitError
from .base import ALL_BACKENDS, DetoxMethod, LogitsTransform

# variant -> defaults of the settings it decides
VARIANTS = {
    "paper": {"threshold": 0.0, "candidates": 50, "keep": 30, "prompt": True},
    "continuation": {"threshold": -0.3, "candidates": 10, "keep": 1, "prompt": False},
}
DEFAULT_TOP_P = 0.9  # where the sampler's is not known (model.generate, the adapters)


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    if value in (0, 1):
        return bool(value)
    raise DetoxkitError(f"moral: {name} must be true or false, not {value!r}")


class MoralFilter(DetoxMethod):
    """Drop next-token candidates whose text falls below `threshold` on the moral direction."""

    name = "moral"
    # only token ids, decoded text and a separate encoder: every backend via the adapters
    backends = ALL_BACKENDS

    def __init__(self, variant: str = "paper", threshold: float | None = None,
                 candidates: int | None = None, keep: int | None = None, every: int = 1,
                 top_p: float | None = None, prompt: bool | None = None, path: str | None = None,
                 device: str = "cpu", batch_size: int = 256):
        if variant not in VARIANTS:
            raise DetoxkitError(f"moral: variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
        self.variant = variant
        d = VARIANTS[variant]
        try:
            self.threshold = float(d["threshold"] if threshold is None else threshold)
            self.candidates = int(d["candidates"] if candidates is None else candidates)
            self.keep = int(d["keep"] if keep is None else keep)
            self.every, self.batch_size = int(every), int(batch_size)
            self.top_p = None if top_p is None else float(top_p)
        except (TypeError, ValueError):
            raise DetoxkitError("moral: threshold and top_p must be numbers; candidates, keep, every "
                                "and batch_size integers") from None
        if variant == "continuation" and not -1.0 <= self.threshold <= 1.0:
            raise DetoxkitError(f"moral: threshold must be in [-1, 1] (the clipped scores' range "
                                f"of variant=continuation), not {self.threshold} (-1 never drops)")
        if self.candidates < 1 or self.keep < 1 or self.every < 1 or self.batch_size < 1:
            raise DetoxkitError("moral: candidates, keep, every and batch_size must be >= 1")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise DetoxkitError(f"moral: top_p must be in (0, 1], not {self.top_p}")
        self.prompt = _flag(d["prompt"] if prompt is None else prompt, "prompt")
        self.path, self.device = path, str(device)
        self._direction: dict[str, Any] = {}
        self._stats: dict[str, int] = {}
        self.reset_stats()

    def settings(self):
        return {"variant": self.variant, "threshold": self.threshold, "candidates": self.candidates,
                "keep": self.keep, "every": self.every, "top_p": self.top_p, "prompt": self.prompt,
                "path": self.path}

    def guided_by(self):
        return ["moral-direction", "all-MiniLM-L6-v2"]

    def describe(self):
        out = super().describe()
        if self._direction:
            out["direction"] = self._direction
        return out

    def reset_stats(self) -> None:
        self._stats = {"samples": 0, "checked_row_steps": 0, "candidates_scored": 0,
                       "candidates_dropped": 0, "rows_with_drops": 0, "rows_all_below": 0,
                       "rows_kept_best": 0}

    def run_stats(self) -> dict[str, Any]:
        s: dict[str, Any] = dict(self._stats)
        s["drop_rate"] = (round(s["candidates_dropped"] / s["candidates_scored"], 6)
                          if s["candidates_scored"] else None)
        return s

    def scorer(self):
        from ..scorers import load_scorer

        sc = load_scorer("moral-direction", device=self.device, batch_size=self.batch_size,
                         direction=self.path)
        self._direction = {"file": str(sc.path), "version": sc.version}
        return sc

    def bind(self, lm):
        return _MoralTransform(self, self.scorer(), lm.tokenizer)


def keep_rule(scores: list[float], tokens: list[int], threshold: float, keep: int,
              reference: bool = True) -> list[int]:
    """The reference's choice among scored candidates: those scoring above `threshold`; when
    `keep` or fewer pass, the `keep` best-scoring ones (all, if there are fewer). Candidates are
    ranked by score, then token id, highest first (the reference sorts (score, token) pairs).
    reference=False is the continuation variant's rule: a score equal to the threshold passes,
    and equal scores rank in the candidates' order (most likely first)."""
    if reference:
        ranked = sorted(zip(scores, tokens), reverse=True)
        passed = [t for s, t in ranked if s > threshold]
    else:
        ranked = sorted(zip(scores, tokens), key=lambda st: -st[0])  # stable: candidate order
        passed = [t for s, t in ranked if s >= threshold]
    return passed if len(passed) > keep else [t for _, t in ranked[:keep]]


def reference_candidates(logits: torch.Tensor, k: int, top_p: float) -> torch.Tensor:
    """Token ids a row's sampling may draw under the reference's top-k then top-p filter, most
    likely first: the tokens at least as likely as the k-th, then the nucleus of those
    renormalised (a token stays while the mass ranked above it is <= top_p)."""
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k).values[-1]
    idx = (logits >= kth).nonzero().squeeze(-1)
    vals, order = torch.sort(logits[idx], descending=True, stable=True)
    idx = idx[order]
    if top_p < 1.0:
        cum = torch.softmax(vals.double(), dim=-1).cumsum(-1)
        above = torch.cat([cum.new_zeros(1), cum[:-1]])
        idx = idx[above <= top_p]
    return idx


class _MoralTransform(LogitsTransform):
    def __init__(self, method: MoralFilter, scorer, tokenizer):
        self.m, self.scorer, self.tokenizer = method, scorer, tokenizer
        self.start: int | None = None

    def _begin(self, input_ids) -> int:
        if self.start is None:
            self.start = input_ids.shape[1]
            self.m._stats["samples"] += input_ids.shape[0]
        return input_ids.shape[1] - self.start

    def skip(self, input_ids, logits):
        self._begin(input_ids)

    def _prefix(self, input_ids, row: int) -> list[int]:
        ids = input_ids[row] if self.m.prompt else input_ids[row, self.start:]
        if self.attention_mask is not None:
            mask = self.attention_mask[row] if self.m.prompt else self.attention_mask[row, self.start:]
            ids = ids[mask.to(ids.device).bool()]
        return ids.tolist()

    def _top_p(self) -> float:
        if self.m.top_p is not None:
            return self.m.top_p
        return float(getattr(self.sampling, "top_p", DEFAULT_TOP_P) or DEFAULT_TOP_P)

    def _temperature(self) -> float:
        t = float(getattr(self.sampling, "temperature", 1.0) or 0.0)
        return t if t > 0 else 1.0  # greedy: the candidates of temperature 1

    def _texts(self, prefixes: list[list[int]], cands: list[list[int]]) -> list[str]:
        ids = [p + [c] for p, cs in zip(prefixes, cands) for c in cs]
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True,
                                           clean_up_tokenization_spaces=True)

    def __call__(self, input_ids, logits):
        step = self._begin(input_ids)
        if step % self.m.every:
            return logits
        B = logits.shape[0]
        live = torch.ones(B, dtype=torch.bool)
        if self.attention_mask is not None and step > 0:
            live = self.attention_mask[:, -1].bool().cpu()
        rows = live.nonzero().squeeze(-1).tolist()
        if not rows:
            return logits
        self.m._stats["checked_row_steps"] += len(rows)
        if self.m.variant == "paper":
            return self._paper(input_ids, logits, rows)
        return self._continuation(input_ids, logits, rows)

    def _paper(self, input_ids, logits, rows):
        m, stats = self.m, self.m._stats
        scaled = logits[rows].float().cpu() / self._temperature()
        cands = [reference_candidates(scaled[j], m.candidates, self._top_p()).tolist()
                 for j in range(len(rows))]
        raw = self.scorer.raw_scores(self._texts([self._prefix(input_ids, r) for r in rows], cands))
        stats["candidates_scored"] += len(raw)
        out = torch.full_like(logits, float("-inf"))
        at = 0
        for j, r in enumerate(rows):
            c = cands[j]
            s = raw[at:at + len(c)].tolist()
            at += len(c)
            kept = keep_rule(s, c, m.threshold, m.keep)
            passed = sum(v > m.threshold for v in s)
            stats["candidates_dropped"] += len(c) - len(kept)
            stats["rows_with_drops"] += int(len(kept) < len(c))
            stats["rows_all_below"] += int(passed == 0)
            stats["rows_kept_best"] += int(passed <= m.keep and len(kept) > passed)
            idx = torch.tensor(kept, device=logits.device)
            out[r, idx] = logits[r, idx]
        unchecked = torch.ones(logits.shape[0], dtype=torch.bool)
        unchecked[rows] = False
        out[unchecked.to(out.device)] = logits[unchecked.to(logits.device)]
        override = torch.full((logits.shape[0],), float("nan"), dtype=torch.float64)
        override[rows] = 1.0
        self.top_p_override = override
        return out

    def _continuation(self, input_ids, logits, rows):
        m, stats = self.m, self.m._stats
        top_p = self._top_p()
        scores = logits[rows].float()
        k = min(m.candidates, scores.shape[-1])
        top_logits, top_ids = torch.topk(scores, k, dim=-1)
        # nucleus membership of the top k: the mass ranked above a token is < top_p
        probs = torch.exp(top_logits - torch.logsumexp(scores, dim=-1, keepdim=True))
        checked = (probs.cumsum(-1) - probs) < top_p
        checked[:, 0] = True
        cands = [[int(top_ids[j, c]) for c in range(k) if checked[j, c]] for j in range(len(rows))]
        moral = self.scorer.moral_scores(self._texts([self._prefix(input_ids, r) for r in rows], cands))
        stats["candidates_scored"] += len(moral)
        out, at, neg = None, 0, float("-inf")
        for j, r in enumerate(rows):
            c = cands[j]
            s = moral[at:at + len(c)].tolist()
            at += len(c)
            kept = set(keep_rule(s, c, m.threshold, m.keep, reference=False))
            passed = sum(v >= m.threshold for v in s)
            dropped = [t for t in c if t not in kept]
            stats["rows_all_below"] += int(passed == 0)
            stats["rows_kept_best"] += int(passed <= m.keep and len(kept) > passed)
            if not dropped:
                continue
            stats["candidates_dropped"] += len(dropped)
            stats["rows_with_drops"] += 1
            if out is None:
                out = logits.clone()
            row = out[r]
            if top_p < 1.0:  # stay inside the original nucleus
                srt = torch.sort(scores[j], descending=True).values
                p = torch.softmax(srt, dim=-1)
                n_keep = int(((p.cumsum(-1) - p) < top_p).sum().clamp(min=1))
                row = torch.where(scores[j].to(row.device) < srt[n_keep - 1].to(row.device),
                                  torch.tensor(neg, dtype=row.dtype, device=row.device), row)
            row[torch.tensor(dropped, device=row.device)] = neg
            out[r] = row
        return logits if out is None else out
