"""Batched, reproducible sampling with the transformers backend.

Reproducibility: every sample (prompt id, sample index) has its own seed, and at
each step its token is drawn by inverse-CDF sampling with one uniform number
derived from (sample seed, step) by a counter-based hash. So a sample depends
only on its own seed and its logits: the same config and seed give the same
samples whatever the batch size or order.

Efficiency: a prompt's forward pass runs once, then its KV cache is expanded to
the k samples (`reorder_cache`), instead of re-running the prompt per sample.
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass, field

import numpy as np
import torch

from .methods.base import DetoxMethod, LogitsTransform, NoMethod
from .models import LoadedLM

_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class SamplingConfig:
    num_samples: int = 25
    max_new_tokens: int = 20
    top_p: float = 0.9
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    seed: int = 0

    def __post_init__(self):
        if self.num_samples < 1:
            raise ValueError("num_samples must be >= 1")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_p must be in (0, 1]")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0 (use a small value for near-greedy)")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")


@dataclass
class Sample:
    prompt_id: str
    sample_index: int
    seed: int
    text: str
    token_ids: list[int]
    finished: bool  # ended with EOS before max_new_tokens

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class Request:
    """One prompt and the sample indices still to draw for it."""

    prompt_id: str
    prompt_ids: list[int]  # tokenized prompt
    sample_indices: list[int] = field(default_factory=list)


def sample_seed(seed: int, prompt_id: str, sample_index: int) -> int:
    """A 63-bit seed for one sample, independent of batching."""
    digest = hashlib.sha256(f"{seed}\x00{prompt_id}\x00{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def step_uniforms(seeds: list[int], step: int) -> torch.Tensor:
    """One uniform in [0, 1) per row for this decoding step (53-bit precision)."""
    values = [(_splitmix64(s ^ (step * 0xD1B54A32D192ED03 & _MASK64)) >> 11) / float(1 << 53)
              for s in seeds]
    return torch.tensor(values, dtype=torch.float64)


def nucleus_sample(logits: torch.Tensor, uniforms: torch.Tensor, *, temperature: float = 1.0,
                   top_p: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """Temperature, top-k, then nucleus (top-p) sampling by inverse CDF, one token per row.

    Exact, but avoids sorting the whole vocabulary: the nucleus is looked for among
    the top 64 tokens, then 1,024, 8,192, then all, for the rows that need more.
    Candidates are ordered by descending logit; `uniforms` holds one number per row.
    """
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    vocab = logits.shape[-1]
    tokens = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
    rows = torch.arange(logits.shape[0], device=logits.device)
    limit = min(top_k, vocab) if top_k else vocab
    # top-k renormalizes among the k best (as transformers' warpers do)
    lse = (torch.logsumexp(torch.topk(logits, limit).values, dim=-1) if top_k
           else torch.logsumexp(logits, dim=-1)).double()
    if top_p >= 1.0 and not top_k:  # plain sampling: the CDF in token-id order needs no sort
        cdf = torch.exp(logits.double() - lse[:, None]).cumsum(dim=-1)
        target = uniforms.to(cdf.device)[:, None].double() * cdf[:, -1:]
        return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp_(max=vocab - 1)
    for k in (64, 1024, 8192, limit):
        k = min(k, limit)
        values, index = torch.topk(logits[rows], k, dim=-1)
        cum = torch.exp(values.double() - lse[rows, None]).cumsum(dim=-1)
        complete = (cum[:, -1] >= top_p) | (k == limit)
        if complete.any():
            c = complete.nonzero().squeeze(-1)
            cum_c = cum[c]
            # keep a token while the tokens ranked above it hold less than top_p
            above = torch.cat([torch.zeros_like(cum_c[:, :1]), cum_c[:, :-1]], dim=-1)
            n_keep = (above < top_p).sum(dim=-1).clamp_(min=1)
            mass = cum_c.gather(-1, (n_keep - 1)[:, None])
            target = uniforms.to(cum_c.device)[rows[c], None].double() * mass
            pos = torch.searchsorted(cum_c, target, right=True).squeeze(-1)
            pos = torch.minimum(pos, n_keep - 1)
            tokens[rows[c]] = index[c].gather(-1, pos[:, None]).squeeze(-1)
            rows = rows[~complete]
        if len(rows) == 0:
            break
    return tokens


class TransformersSampler:
    """Draws samples for batches of requests with a transformers causal LM."""

    def __init__(self, lm: LoadedLM, sampling: SamplingConfig, method: DetoxMethod | None = None):
        self.lm = lm
        self.sampling = sampling
        self.method = method or NoMethod()
        self.method.check_backend("transformers")
        tok = lm.tokenizer
        self.eos_ids = _eos_ids(lm)
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.eos_ids[0]
        self._cache_arg = cache_kwarg(lm.model)

    # no_grad rather than inference_mode: gradient-based methods (PPLM, semantic control)
    # re-enable autograd inside their transform, which inference tensors would forbid.
    @torch.no_grad()
    def generate(self, requests: list[Request]) -> list[Sample]:
        """Samples for every (request, sample index), rows in request order."""
        model, device = self.lm.model, self.lm.model.device
        cfg = self.sampling
        rows = [(r, i) for r in requests for i in r.sample_indices]
        if not rows:
            return []
        seeds = [sample_seed(cfg.seed, r.prompt_id, i) for r, i in rows]

        # Bound before the prefill: methods that share the model's computation (DExperts, GeDi)
        # hook its forward from this moment.
        transform: LogitsTransform = self.method.bind(self.lm)
        transform.max_new_tokens = cfg.max_new_tokens

        # Prefill each distinct prompt once, left-padded.
        width = max(len(r.prompt_ids) for r in requests)
        prompt_ids = torch.full((len(requests), width), self.pad_id, dtype=torch.long)
        prompt_mask = torch.zeros((len(requests), width), dtype=torch.long)
        for j, r in enumerate(requests):
            prompt_ids[j, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
            prompt_mask[j, width - len(r.prompt_ids):] = 1
        prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
        positions = (prompt_mask.cumsum(-1) - 1).clamp_(min=0)
        out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions,
                    use_cache=True)

        # Expand the prompt's cache and last logits to its samples.
        row_of = torch.tensor([j for j, r in enumerate(requests) for _ in r.sample_indices],
                              device=device)
        cache = _cache_of(out)
        cache.reorder_cache(row_of)
        logits = out.logits[:, -1, :].float().index_select(0, row_of)
        ids = prompt_ids.index_select(0, row_of)
        mask = prompt_mask.index_select(0, row_of)
        next_pos = mask.sum(-1, keepdim=True)

        n = len(rows)
        done = torch.zeros(n, dtype=torch.bool, device=device)
        finished = torch.zeros(n, dtype=torch.bool, device=device)
        lengths = torch.zeros(n, dtype=torch.long, device=device)
        eos = torch.tensor(self.eos_ids, device=device)
        for step in range(cfg.max_new_tokens):
            transform.attention_mask = mask
            scores = transform(ids, logits)
            token = nucleus_sample(scores, step_uniforms(seeds, step), temperature=cfg.temperature,
                                   top_p=cfg.top_p, top_k=cfg.top_k)
            token = torch.where(done, torch.full_like(token, self.pad_id), token)
            is_eos = torch.isin(token, eos) & ~done
            finished |= is_eos
            lengths += (~done & ~is_eos).long()
            done |= is_eos
            ids = torch.cat([ids, token[:, None]], dim=-1)
            mask = torch.cat([mask, (~done | is_eos).long()[:, None]], dim=-1)
            if bool(done.all()) or step == cfg.max_new_tokens - 1:
                break
            out = model(input_ids=token[:, None], attention_mask=mask, position_ids=next_pos,
                        use_cache=True, **{self._cache_arg: cache})
            cache = _cache_of(out)
            logits = out.logits[:, -1, :].float()
            next_pos = next_pos + 1

        new_tokens = ids[:, width:].tolist()
        samples = []
        for (r, i), seed, toks, length, fin in zip(rows, seeds, new_tokens, lengths.tolist(),
                                                   finished.tolist()):
            toks = toks[:length]
            text = self.lm.tokenizer.decode(toks, skip_special_tokens=True)
            samples.append(Sample(r.prompt_id, i, seed, text, toks, bool(fin)))
        return samples


def cache_kwarg(model) -> str:
    """transformers >= 5.2x calls the KV cache argument `cache`; older releases `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_of(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _eos_ids(lm: LoadedLM) -> list[int]:
    ids = set()
    for source in (lm.tokenizer.eos_token_id, getattr(lm.model.generation_config, "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(source)
    if not ids:
        raise ValueError(f"model {lm.name} declares no EOS token")
    return sorted(ids)
