"""Continuation log-likelihoods under a transformers LM (the perplexity oracle's measure).

NLL is summed over the continuation tokens only, conditioned on the prompt: the
model sees tokens(prompt) + tokens(continuation), tokenized separately so the
boundary is exact whatever tokenizer the oracle uses.
"""

from __future__ import annotations

import torch

from ...tokens import left_pad, position_ids
from .models import LoadedLM


@torch.inference_mode()
def continuation_nll(lm: LoadedLM, prompts: list[str], continuations: list[str],
                     batch_size: int = 16) -> list[tuple[float, int]]:
    """(summed NLL, number of continuation tokens) per pair; (0.0, 0) for an empty one."""
    tok = lm.tokenizer
    cache: dict[str, list[int]] = {}
    pairs = []
    for p, c in zip(prompts, continuations):
        if p not in cache:
            cache[p] = tok(p, add_special_tokens=True)["input_ids"]
        pairs.append((cache[p], tok(c, add_special_tokens=False)["input_ids"] if c else []))
    results: list[tuple[float, int]] = [(0.0, 0)] * len(pairs)
    limit = lm.context_length
    order = sorted((i for i, (_, c) in enumerate(pairs) if c),
                   key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        seqs = [(pairs[i][0] + pairs[i][1])[-limit:] for i in idx]
        cont_lens = [min(len(pairs[i][1]), len(s) - 1) for i, s in zip(idx, seqs)]
        for i, value in zip(idx, _batch_nll(lm.model, seqs, cont_lens, pad_id)):
            results[i] = value
    return results


@torch.inference_mode()
def published_nll(lm: LoadedLM, prompts: list[str], continuations: list[str],
                  separate: list[tuple[float, int]], batch_size: int = 16) -> list[tuple[float, int]]:
    """The DExperts code's conditional NLL: NLL(tokens(prompt + continuation)) minus
    NLL(tokens(prompt)), over len(joint) - len(prompt) tokens (its `conditional_perplexity`).

    Where the joint tokenization is the prompt's tokens followed by the continuation's (the
    common case), that is exactly the `separate` value; only the other pairs cost forwards."""
    tok = lm.tokenizer
    out = list(separate)
    redo: list[tuple[int, list[int], list[int]]] = []
    prompt_ids: dict[str, list[int]] = {}  # k samples share each prompt
    for i, (p, c) in enumerate(zip(prompts, continuations)):
        if not c:
            out[i] = (0.0, 0)
            continue
        joint = tok(p + c, add_special_tokens=True)["input_ids"]
        if p not in prompt_ids:
            prompt_ids[p] = tok(p, add_special_tokens=True)["input_ids"]
        prompt = prompt_ids[p]
        if joint != prompt + tok(c, add_special_tokens=False)["input_ids"]:
            redo.append((i, joint, prompt))
    if not redo:
        return out
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    seqs = list({tuple(s): None for _, j, p in redo for s in (j, p) if len(s) > 1})
    total: dict[tuple[int, ...], float] = {}
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start:start + batch_size]
        for s, (value, _) in zip(chunk, _batch_nll(lm.model, [list(x) for x in chunk],
                                                   [len(x) - 1 for x in chunk], pad_id)):
            total[s] = value  # summed over every token but the first
    for i, joint, prompt in redo:
        n = len(joint) - len(prompt)
        out[i] = (total.get(tuple(joint), 0.0) - total.get(tuple(prompt), 0.0), n) if n > 0 else (0.0, 0)
    return out


def _batch_nll(model, seqs: list[list[int]], cont_lens: list[int],
               pad_id: int) -> list[tuple[float, int]]:
    ids, mask = left_pad(seqs, pad_id)  # every continuation ends at the last column
    width = ids.shape[1]
    ids, mask = ids.to(model.device), mask.to(model.device)
    keep = max(cont_lens) + 1  # logits only where they predict continuation tokens
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                   logits_to_keep=keep).logits.float()
    # logits[:, t] predicts the token at column width - keep + t + 1
    targets = ids[:, width - keep + 1:]
    logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
    token_lp = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return [(float(-token_lp[j, token_lp.shape[1] - n:].sum()), n) for j, n in enumerate(cont_lens)]
