"""A hidden Markov model distilled from a generator, for TRACE (see methods/trace.py).

Parameters: initial distribution pi [H], transitions A [H, H] (row z -> next state),
emissions B [H, M] over M = len(ids) + 1 columns: one per kept token id (tokens the
generator emitted at least `min_count` times in the distillation samples) and a last
"rare" column shared by every other token of the vocabulary, spread uniformly over
them (so each rare token has emission B[z, rare] / n_rare). This keeps the artefact a
few MB while the model stays a proper distribution over the whole vocabulary.

Training (sampling from the generator, then EM) is `detoxkit train hmm`
(detoxkit/training/hmm.py).

Quantities TRACE needs at decoding time: `backward_expectations` (per remaining length,
precomputed once per classifier) and the forward filter (`prior` updates, one [B, H]
step per token).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..artefacts import load_table, save_table
from ..errors import DetoxkitError


@dataclass
class HMM:
    log_pi: torch.Tensor  # [H]
    log_A: torch.Tensor  # [H, H]
    log_B: torch.Tensor  # [H, M]; column M-1 is the rare bucket (its total mass)
    ids: torch.Tensor  # [M-1] token ids owning columns 0..M-2
    vocab_size: int  # tokenizer width V (ids < V)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def hidden(self) -> int:
        return self.log_A.shape[0]

    @property
    def n_rare(self) -> int:
        return max(self.vocab_size - self.ids.numel(), 1)

    def column_of(self, width: int) -> torch.Tensor:
        """[width] column index per token id (the rare column for tokens not kept)."""
        col = torch.full((width,), self.ids.numel(), dtype=torch.long)
        keep = self.ids < width
        col[self.ids[keep].long()] = torch.arange(self.ids.numel())[keep]
        return col

    def emission_table(self) -> torch.Tensor:
        """[M, H] float64 per-token emission probabilities (rare column: per rare token)."""
        logb = self.log_B.double().clone()
        logb[:, -1] -= math.log(self.n_rare)
        return logb.exp().T.contiguous()

    def dense_emissions(self) -> torch.Tensor:
        """[H, V] float64 emission matrix over the whole vocabulary (tests, small V only)."""
        table = self.emission_table()
        return table[self.column_of(self.vocab_size)].T

    # ---- the TRACE quantities ----------------------------------------------------------

    def backward_expectations(self, q_cols: torch.Tensor, q_rare_mean: float, k_max: int) -> torch.Tensor:
        """[k_max + 1, H] float64: row k is E[prod_{s=1..k} q(x_{t+s}) | z_t = z], the expected
        product of per-token factors q over the next k tokens given the current hidden state.

        q_cols [M-1] holds q for the kept tokens; q_rare_mean is the mean of q over the rare
        tokens (each rare token has the same emission, so only their mean matters).
        Recursion: beta_0 = 1, beta_k = A (Bq * beta_{k-1}) with Bq[z] = sum_v B[z, v] q(v)."""
        A = self.log_A.double().exp()
        B = self.log_B.double().exp()
        bq = B[:, :-1] @ q_cols.double() + B[:, -1] * float(q_rare_mean)
        out = torch.ones(k_max + 1, self.hidden, dtype=torch.float64)
        for k in range(1, k_max + 1):
            out[k] = A @ (bq * out[k - 1])
        return out

    # ---- artefact --------------------------------------------------------------------

    def save(self, path: Path, metadata: dict[str, Any]) -> Path:
        return save_table(Path(path), {
            "log_pi": self.log_pi.float(), "log_A": self.log_A.float(),
            "log_B": self.log_B.to(torch.float16), "ids": self.ids.to(torch.int32),
            "vocab_size": torch.tensor([self.vocab_size], dtype=torch.int64)}, metadata)

    @classmethod
    def load(cls, path: Path) -> "HMM":
        try:
            tensors, meta = load_table(Path(path))
            return cls(tensors["log_pi"].float(), tensors["log_A"].float(), tensors["log_B"].float(),
                       tensors["ids"].long(), int(tensors["vocab_size"][0]), dict(meta))
        except (KeyError, OSError, RuntimeError, ValueError) as exc:
            raise DetoxkitError(f"{path} is not a detoxkit TRACE HMM: {exc}") from None

