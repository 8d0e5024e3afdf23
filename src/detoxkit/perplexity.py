"""Fluency: perplexity of continuations under an oracle LM.

NLL is summed over the continuation tokens only, conditioned on the prompt:
the oracle sees tokens(prompt) + tokens(continuation), tokenized separately so
the boundary is exact whatever tokenizer the oracle uses.
"""

from __future__ import annotations

import torch

from .models import LoadedLM


class Oracle:
    def __init__(self, lm: LoadedLM, batch_size: int = 16):
        self.lm = lm
        self.batch_size = batch_size
        tok = lm.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def describe(self) -> dict:
        return self.lm.describe()

    @torch.inference_mode()
    def nll(self, prompts: list[str], continuations: list[str]) -> list[tuple[float, int]]:
        """(summed NLL, number of continuation tokens) per pair; (0.0, 0) for an empty one."""
        tok = self.lm.tokenizer
        cache: dict[str, list[int]] = {}
        pairs = []
        for p, c in zip(prompts, continuations):
            if p not in cache:
                cache[p] = tok(p, add_special_tokens=True)["input_ids"]
            pairs.append((cache[p], tok(c, add_special_tokens=False)["input_ids"] if c else []))
        results: list[tuple[float, int]] = [(0.0, 0)] * len(pairs)
        limit = self.lm.context_length
        order = sorted((i for i, (_, c) in enumerate(pairs) if c),
                       key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            seqs = [(pairs[i][0] + pairs[i][1])[-limit:] for i in idx]
            cont_lens = [min(len(pairs[i][1]), len(s) - 1) for i, s in zip(idx, seqs)]
            for i, value in zip(idx, self._batch_nll(seqs, cont_lens)):
                results[i] = value
        return results

    def _batch_nll(self, seqs: list[list[int]], cont_lens: list[int]) -> list[tuple[float, int]]:
        model = self.lm.model
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, s in enumerate(seqs):  # left padding: every continuation ends at the last column
            ids[j, width - len(s):] = torch.tensor(s)
            mask[j, width - len(s):] = 1
        ids, mask = ids.to(model.device), mask.to(model.device)
        positions = (mask.cumsum(-1) - 1).clamp_(min=0)
        keep = max(cont_lens) + 1  # logits only where they predict continuation tokens
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                       logits_to_keep=keep).logits.float()
        # logits[:, t] predicts the token at column width - keep + t + 1
        targets = ids[:, width - keep + 1:]
        logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
        token_lp = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        out = []
        for j, n in enumerate(cont_lens):
            out.append((float(-token_lp[j, token_lp.shape[1] - n:].sum()), n))
        return out
