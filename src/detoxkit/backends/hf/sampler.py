"""Batched sampling with a transformers causal LM (the hf backend's generate).

Seeds and the nucleus rule are backend-neutral (backends/sampling.py). Efficiency:
a prompt's forward pass runs once, then its KV cache is expanded to the k samples
(`reserve_cache`), instead of re-running the prompt per sample, into buffers that hold
the new tokens too, so that a decoding step writes its keys and values in place.
"""

from __future__ import annotations

import inspect

import torch

try:  # transformers >= 4.56 keeps a cache's tensors in layer objects
    from transformers.cache_utils import DynamicLayer
except ImportError:  # pragma: no cover - older transformers: caches are expanded as they are
    DynamicLayer = None

from ...methods.base import DetoxMethod, LogitsTransform, NoMethod
from ...tokens import eos_ids, left_pad, position_ids
from ..base import Request, Sample, SamplingConfig
from ..sampling import nucleus_sample, sample_seed, step_uniforms
from .models import LoadedLM


class TransformersSampler:
    """Draws samples for batches of requests with a transformers causal LM."""

    def __init__(self, lm: LoadedLM, sampling: SamplingConfig, method: DetoxMethod | None = None):
        self.lm = lm
        self.sampling = sampling
        self.method = method or NoMethod()
        tok = lm.tokenizer
        self.eos_ids = eos_ids(lm)
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
        prompt_ids, prompt_mask = left_pad([r.prompt_ids for r in requests], self.pad_id)
        width = prompt_ids.shape[1]
        prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
        positions = position_ids(prompt_mask)
        # logits of the last position only: the others predict prompt tokens nobody samples
        out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions,
                    use_cache=True, logits_to_keep=1)

        # Expand the prompt's cache and last logits to its samples.
        row_of = torch.tensor([j for j, r in enumerate(requests) for _ in r.sample_indices],
                              device=device)
        cache = cache_of(out)
        reserve_cache(cache, row_of, room=cfg.max_new_tokens)
        logits = out.logits[:, -1, :].float().index_select(0, row_of)
        ids = prompt_ids.index_select(0, row_of)
        mask = prompt_mask.index_select(0, row_of)
        next_pos = mask.sum(-1, keepdim=True)

        n = len(rows)
        done = torch.zeros(n, dtype=torch.bool, device=device)
        finished = torch.zeros(n, dtype=torch.bool, device=device)
        lengths = torch.zeros(n, dtype=torch.long, device=device)
        eos = torch.tensor(self.eos_ids, device=device)
        transform.sampling = cfg
        for step in range(cfg.max_new_tokens):
            uniforms = step_uniforms(seeds, step)
            transform.attention_mask, transform.step_uniforms = mask, uniforms
            transform.top_p_override = None
            scores = transform(ids, logits)
            token = nucleus_sample(scores, uniforms, temperature=cfg.temperature,
                                   top_p=row_top_p(cfg.top_p, transform.top_p_override),
                                   top_k=cfg.top_k)
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
            cache = cache_of(out)
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


class ReservedLayer(DynamicLayer or object):
    """A layer's keys and values in buffers with room for `room` more positions.

    transformers' DynamicLayer grows by concatenation, which copies the whole cache at every
    step: about a quarter of a bf16 run's time at 200 rows. Here a step writes its positions in
    place and attention reads a view of the filled part: the same values as concatenation.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, room: int):
        super().__init__()
        b, h, n, _ = keys.shape
        self._keys = keys.new_empty(b, h, n + room, keys.shape[-1])
        self._values = values.new_empty(b, h, n + room, values.shape[-1])
        self._keys[:, :, :n], self._values[:, :, :n] = keys, values
        self.filled = n
        self.keys, self.values = self._keys[:, :, :n], self._values[:, :, :n]
        self.device, self.is_initialized = keys.device, True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        start, end = self.filled, self.filled + key_states.shape[-2]
        if end > self._keys.shape[-2]:
            raise RuntimeError(f"reserved KV cache full: {end} positions, room for "
                               f"{self._keys.shape[-2]}")
        self._keys[:, :, start:end], self._values[:, :, start:end] = key_states, value_states
        self.filled = end
        self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.filled

    def _not_reservable(self, *args, **kwargs):
        raise NotImplementedError("a reserved KV cache layer is only appended to")

    reorder_cache = crop = batch_repeat_interleave = batch_select_indices = _not_reservable


def reserve_cache(cache, rows: torch.Tensor, room: int) -> None:
    """Expand the prompts' cache to the samples' `rows`, each plain layer into a ReservedLayer
    with room for `room` new positions; other kinds of layer (sliding windows) just expand."""
    cache.reorder_cache(rows)
    if DynamicLayer is not None and hasattr(cache, "layers"):
        cache.layers = [ReservedLayer(layer.keys, layer.values, room)
                        if type(layer) is DynamicLayer and layer.is_initialized else layer
                        for layer in cache.layers]


def cache_kwarg(model) -> str:
    """transformers >= 5.2x calls the KV cache argument `cache`; older releases `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def cache_of(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def row_top_p(run_top_p: float, override: torch.Tensor | None) -> float | torch.Tensor:
    """The run's top-p, or per row where a method truncated the distribution itself."""
    if override is None:
        return run_top_p
    override = override.double()
    return torch.where(torch.isnan(override), torch.full_like(override, run_top_p), override)
