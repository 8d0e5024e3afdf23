"""`detoxkit train semantic-control`: the generator-token table of semantic-control.

semantic-control maps each candidate generator token into the verifier's (detoxkit-minilm)
sentence-embedding space. The table holds, per token of the generator's tokenizer, the sum
of the verifier's output vectors of the token's WordPiece pieces (the token encoded alone)
and their count. Encoded alone, a token's effect on the verifier is underestimated (the
contextual encoder spreads an offensive word into every output vector), so the recipe also
fits the `gain` that scales the table's linear effects: on `--fit-contexts` non-toxic
training-pool sentence starts x `--fit-tokens` generator tokens (the first token of words
from toxic and non-toxic rows, half each), the least-squares slope (through 0) of the exact
change of the verifier logit when the token is appended on the linear estimate.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import DetoxkitError
from ..artefacts import artefact_name, output_path, save_table, tokenizer_fingerprint
from ..progress import Progress
from ..scorers.base import length_sorted_batches
from .base import (GeneratorConfig, Trainer, corpus_guided_by, corpus_half_setting, load_generator,
                   set_threads, setting)

log = logging.getLogger(__name__)


@dataclass
class SemanticTableConfig(GeneratorConfig):
    batch: int = setting(256, "token texts per verifier batch")
    threads: int | None = setting(None, "torch threads (default: torch's choice)")
    fit_contexts: int = setting(60, "sentence starts the gain is fitted on (0: no fit, gain 1)")
    fit_tokens: int = setting(40, "generator tokens appended to each sentence start for the fit")
    seed: int = setting(0, "seed of the rows the fit reads")
    corpus_half: str | None = corpus_half_setting()
    out: str | None = setting(None, "output file (default: the cache, "
                                    "$DETOXKIT_HOME/methods/semantic-table-<tokenizer>.safetensors)")


def token_texts(tokenizer) -> list[str]:
    """The text of every generator token id on its own (special tokens -> "")."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    return ["" if i in special else tokenizer.decode([i], skip_special_tokens=True)
            for i in range(len(tokenizer))]


def train(config: SemanticTableConfig) -> Path:
    """Map every generator token into the verifier's space: U[u] (sum of the verifier's output
    vectors of u's WordPiece tokens, u encoded alone, float16) and w[u] (their count)."""
    import torch

    from ..methods.semantic import FORMAT, KIND, VERIFIER, get_verifier

    set_threads(config.threads)
    lm = load_generator(config)
    tokenizer, model_name = lm.tokenizer, str(lm.name)
    verifier = get_verifier(config.device)
    texts = token_texts(tokenizer)
    U = torch.zeros(len(texts), 384, dtype=torch.float32)
    w = torch.zeros(len(texts), dtype=torch.float32)
    t0 = time.time()
    bar = Progress(len(texts), "semantic-control table", unit="tokens")
    for idx in length_sorted_batches(texts, config.batch):
        s, n = verifier.piece_sums([texts[i] for i in idx])
        U[idx], w[idx] = s.cpu(), n.cpu()
        bar.update(len(idx))
    bar.close()
    gain_fit = fit_gain(verifier, tokenizer, U, w, config) if config.fit_contexts else None
    path = output_path(artefact_name(KIND, tokenizer), config.out)
    meta = {"format": FORMAT, "verifier": VERIFIER, "verifier_version": verifier.version,
            "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer), "vocab": len(texts),
            "model": model_name, "command": f"detoxkit train semantic-control --model {model_name}",
            "seconds": round(time.time() - t0, 1),
            "corpus_rows": gain_fit["rows"] if gain_fit else 0,
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if gain_fit:
        meta["gain_fit"] = gain_fit
        meta["guided_by"] = corpus_guided_by(config.corpus_half)
    save_table(path, {"U": U.half(), "w": w.to(torch.int16)}, meta)
    log.info("semantic-control table: %d tokens -> %s", len(texts), path)
    return path


def fit_sentences(config: SemanticTableConfig) -> tuple[list[str], list[str], int]:
    """(sentence starts, words, rows read): starts from non-toxic training-pool rows (their
    first 4-12 words), words half from toxic and half from non-toxic rows."""
    import random

    from ..corpus import clean_text, training_rows

    rows = training_rows(4 * (config.fit_contexts + config.fit_tokens), config.seed, balance=True,
                         half=config.corpus_half)
    rng = random.Random(config.seed)
    starts, words = [], {0: [], 1: []}
    for row in rows:
        tokens = [t for t in clean_text(row.text).split() if t.isalpha()]
        if not row.is_offensive and len(tokens) >= 6 and len(starts) < config.fit_contexts:
            starts.append(" ".join(tokens[:rng.randint(4, min(12, len(tokens) - 1))]))
        if tokens and len(words[row.is_offensive]) < config.fit_tokens // 2:
            word = rng.choice(tokens).lower()
            if word not in words[row.is_offensive]:
                words[row.is_offensive].append(word)
    return starts, words[0] + words[1], len(rows)


def fit_gain(verifier, tokenizer, U, w, config: SemanticTableConfig) -> dict:
    """The least-squares gain of exact on linear logit changes (see the module docstring), with
    how well the linear estimate tracks the exact one (Spearman, R² after the gain)."""
    import torch

    from ..methods.semantic import token_effects

    starts, words, n_rows = fit_sentences(config)
    if not starts or not words:
        raise DetoxkitError("semantic-control: the corpus gave no sentence starts or words to fit "
                            "the gain on (use --fit-contexts 0 to build the table without it)")
    ids = sorted({tokenizer(" " + word, add_special_tokens=False)["input_ids"][0] for word in words})
    texts = [tokenizer.decode([i], skip_special_tokens=True) for i in ids]
    emb, n = verifier.embed(starts)
    z, g = verifier.logit_and_grad(emb)
    linear = token_effects(g, emb, n, U[ids], w[ids])  # [contexts, tokens]
    exact = torch.stack([verifier.logit(verifier.embed([start + t for t in texts])[0]) - z[c]
                         for c, start in enumerate(starts)])
    x, y = linear.flatten().double(), exact.flatten().double()
    gain = float((x * y).sum() / (x * x).sum().clamp(min=1e-12))
    rank = lambda t: t.argsort().argsort().double()  # noqa: E731
    spearman = float(torch.corrcoef(torch.stack([rank(x), rank(y)]))[0, 1])
    r2 = float(1 - ((y - gain * x) ** 2).sum() / ((y - y.mean()) ** 2).sum().clamp(min=1e-12))
    log.info("semantic-control gain fit: %.3f on %d pairs (Spearman %.3f, R² %.3f)",
             gain, x.numel(), spearman, r2)
    return {"gain": round(gain, 4), "pairs": int(x.numel()), "contexts": len(starts),
            "tokens": len(ids), "spearman": round(spearman, 4), "r2": round(r2, 4),
            "rows": n_rows, "corpus_half": config.corpus_half, "seed": config.seed}


TRAINER = Trainer("semantic-control", SemanticTableConfig, train)
