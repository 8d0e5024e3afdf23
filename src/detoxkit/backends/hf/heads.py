"""The LM head in float32 on a reduced-precision body.

Logits rounded to bfloat16 move in steps of 0.125 at a magnitude of 16-32, enough to shift the
sampled distribution measurably (a 100 x 25 run drew a toxic fraction 0.022 lower than in
float32, paired interval [-0.039, -0.005]; docs/benchmarks.md). Computing only the head in
float32 keeps the logits as float32 would give them from the same hidden states.

Both factors of a bf16 body's head are bf16 values (its hidden states, and the weights copied
from its bf16 head), so their products are exact in float32. On CPUs that multiply bf16 in
hardware the head therefore lets oneDNN take its float32 product in bf16 with float32
accumulation and output ("fpmath" bf16): no input loses a bit, the output is never rounded to
bf16, and the sums differ from the plain float32 kernel's only in their order (about 1e-6), at
2-3x its speed on AMX (docs/benchmarks.md).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn


class Float32Head(nn.Module):
    """A copy of a linear LM head in float32 that casts its input up."""

    def __init__(self, head: nn.Module):
        super().__init__()
        from .models import cpu_has_native_bf16

        # bf16 weights (not float16 ones: those have more mantissa bits) and a CPU doing bf16
        self.exact_in_bf16 = (head.weight.dtype == torch.bfloat16 and head.weight.device.type == "cpu"
                              and cpu_has_native_bf16() and _fpmath() is not None)
        self.weight = nn.Parameter(head.weight.detach().float().clone(), requires_grad=False)
        bias = getattr(head, "bias", None)
        self.bias = None if bias is None else nn.Parameter(bias.detach().float().clone(),
                                                           requires_grad=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        exact = self.exact_in_bf16 and hidden.dtype == torch.bfloat16
        with bf16_products() if exact else nullcontext():
            return F.linear(hidden.float(), self.weight, self.bias)


def _fpmath():
    """torch's oneDNN matmul precision setting (torch >= 2.7), or None."""
    matmul = getattr(torch.backends.mkldnn, "matmul", None)
    return matmul if hasattr(matmul, "fp32_precision") else None


@contextmanager
def bf16_products():
    """Let oneDNN compute float32 matrix products with bf16 inputs (float32 accumulation and
    output), here only: elsewhere a float32 product must keep its float32 inputs."""
    matmul = _fpmath()
    before = matmul.fp32_precision
    matmul.fp32_precision = "bf16"
    try:
        yield
    finally:
        matmul.fp32_precision = before


def keep_head_in_float32(model) -> bool:
    """Swap a reduced-precision model's linear LM head for a float32 copy (untied from the input
    embeddings, which stay as they are). Returns whether it did."""
    head = model.get_output_embeddings()
    if not isinstance(head, nn.Linear) or head.weight.dtype == torch.float32:
        return False
    model.set_output_embeddings(Float32Head(head).to(head.weight.device))
    model.config.tie_word_embeddings = False  # a later tie_weights() must not undo the copy
    return True
