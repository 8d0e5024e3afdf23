"""Moral direction filter (after Schramowski et al., Nature Machine Intelligence 2022):
drop the next-token candidates whose continuation falls below a threshold on the moral
direction (see scorers/moral.py for the direction and its [-1, 1] score).

    --method moral                      # defaults: threshold=-0.3, candidates=10, every=1
    --method moral:threshold=0,candidates=20,every=2,prompt=true

At each checked step (every `every` steps, from the first), for each live row the top
`candidates` tokens by the current logits that lie inside the nucleus (`top_p`, the
sampler's; temperature 1 assumed) are appended in turn to the continuation so far (with
the prompt in front if `prompt=true`), the texts are decoded and embedded with
all-MiniLM-L6-v2, and candidates scoring below `threshold` get -inf. A row never loses
every candidate: if all checked candidates fall below, the best-scoring one stays. In a
row where something was dropped, tokens outside the original nucleus are dropped too, so
that the renormalised nucleus cannot reach tokens that were never checked (the paper
likewise kept only checked candidates). Rows where nothing is dropped keep their logits
exactly, so threshold=-1 (scores are clipped to [-1, 1]) samples token for token like plain
sampling. Nucleus tokens ranked below `candidates` are not checked and stay allowed.

It needs only token ids, text and its own encoder (not the generator's forwards), so the
adapters run it on every backend; the price is a MiniLM forward over rows x candidates
texts per checked step, in-process. Counters over the method's calls: run_stats().
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import DetoxkitError
from .base import ALL_BACKENDS, DetoxMethod, LogitsTransform


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    if value in (0, 1):
        return bool(value)
    raise DetoxkitError(f"moral: {name} must be true or false, not {value!r}")


class MoralFilter(DetoxMethod):
    """Drop candidates whose continuation falls below `threshold` on the moral direction."""

    name = "moral"
    # only token ids, decoded text and a separate encoder: every backend via the adapters
    backends = ALL_BACKENDS

    def __init__(self, threshold: float = -0.3, candidates: int = 10, every: int = 1,
                 top_p: float = 0.9, prompt: bool = False, path: str | None = None,
                 device: str = "cpu", batch_size: int = 256):
        try:
            self.threshold = float(threshold)
            self.candidates, self.every, self.batch_size = int(candidates), int(every), int(batch_size)
            self.top_p = float(top_p)
        except (TypeError, ValueError):
            raise DetoxkitError("moral: threshold and top_p must be numbers; candidates, every and "
                                "batch_size integers") from None
        if not -1.0 <= self.threshold <= 1.0:
            raise DetoxkitError(f"moral: threshold must be in [-1, 1] (moral scores' range), "
                                f"not {self.threshold} (-1 never drops anything)")
        if self.candidates < 1 or self.every < 1 or self.batch_size < 1:
            raise DetoxkitError("moral: candidates, every and batch_size must be >= 1")
        if not 0.0 < self.top_p <= 1.0:
            raise DetoxkitError(f"moral: top_p must be in (0, 1], not {self.top_p}")
        self.prompt = _flag(prompt, "prompt")
        self.path, self.device = path, str(device)
        self._direction: dict[str, Any] = {}
        self._stats: dict[str, int] = {}
        self.reset_stats()

    def settings(self):
        return {"threshold": self.threshold, "candidates": self.candidates, "every": self.every,
                "top_p": self.top_p, "prompt": self.prompt, "path": self.path}

    def guided_by(self):
        return ["moral-direction", "all-MiniLM-L6-v2"]

    def describe(self):
        out = super().describe()
        if self._direction:
            out["direction"] = self._direction
        return out

    def reset_stats(self) -> None:
        self._stats = {"samples": 0, "checked_row_steps": 0, "candidates_scored": 0,
                       "candidates_dropped": 0, "rows_with_drops": 0, "rows_all_below": 0}

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
        stats = self.m._stats
        stats["checked_row_steps"] += len(rows)
        scores = logits[rows].float()
        k = min(self.m.candidates, scores.shape[-1])
        top_logits, top_ids = torch.topk(scores, k, dim=-1)
        # nucleus membership of the top k: the mass ranked above a token is < top_p
        probs = torch.exp(top_logits - torch.logsumexp(scores, dim=-1, keepdim=True))
        above = probs.cumsum(-1) - probs
        checked = above < self.m.top_p
        checked[:, 0] = True
        texts, where = [], []
        for j, r in enumerate(rows):
            prefix = self._prefix(input_ids, r)
            for c in range(k):
                if checked[j, c]:
                    texts.append(prefix + [int(top_ids[j, c])])
                    where.append((j, c))
        moral = self.scorer.moral_scores(self.tokenizer.batch_decode(texts, skip_special_tokens=True))
        stats["candidates_scored"] += len(texts)
        value = torch.full((len(rows), k), float("nan"), dtype=torch.float64)
        for (j, c), s in zip(where, moral.tolist()):
            value[j, c] = s
        drop = checked & (value < self.m.threshold)
        all_below = checked.sum(-1) == drop.sum(-1)
        if all_below.any():  # keep the best-scoring checked candidate
            best = value.nan_to_num(-float("inf")).argmax(-1)
            drop[all_below, best[all_below]] = False
            stats["rows_all_below"] += int(all_below.sum())
        stats["candidates_dropped"] += int(drop.sum())
        hit = drop.any(-1)
        if not hit.any():
            return logits
        stats["rows_with_drops"] += int(hit.sum())
        out = logits.clone()
        neg = torch.tensor(float("-inf"), dtype=out.dtype, device=out.device)
        for j in hit.nonzero().squeeze(-1).tolist():
            r = rows[j]
            row = out[r]
            if self.m.top_p < 1.0:  # stay inside the original nucleus
                srt = torch.sort(scores[j], descending=True).values
                p = torch.softmax(srt, dim=-1)
                n_keep = int(((p.cumsum(-1) - p) < self.m.top_p).sum().clamp(min=1))
                row = torch.where(scores[j].to(row.device) < srt[n_keep - 1].to(row.device), neg, row)
            row[top_ids[j][drop[j]].to(row.device)] = neg
            out[r] = row
        return out
