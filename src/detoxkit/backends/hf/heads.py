"""The LM head in float32 on a reduced-precision body.

Logits rounded to bfloat16 move in steps of 0.125 at a magnitude of 16-32, enough to shift the
sampled distribution measurably (a 100 x 25 run drew a toxic fraction 0.022 lower than in
float32, paired interval [-0.039, -0.005]; docs/benchmarks.md). Computing only the head in
float32 keeps the logits as float32 would give them from the same hidden states.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Float32Head(nn.Module):
    """A copy of a linear LM head in float32 that casts its input up."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.weight = nn.Parameter(head.weight.detach().float().clone(), requires_grad=False)
        bias = getattr(head, "bias", None)
        self.bias = None if bias is None else nn.Parameter(bias.detach().float().clone(),
                                                           requires_grad=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden.float(), self.weight, self.bias)


def keep_head_in_float32(model) -> bool:
    """Swap a reduced-precision model's linear LM head for a float32 copy (untied from the input
    embeddings, which stay as they are). Returns whether it did."""
    head = model.get_output_embeddings()
    if not isinstance(head, nn.Linear) or head.weight.dtype == torch.float32:
        return False
    model.set_output_embeddings(Float32Head(head).to(head.weight.device))
    model.config.tie_word_embeddings = False  # a later tie_weights() must not undo the copy
    return True
