"""`detoxkit train trace-classifier`: TRACE's token-factorised attribute classifier.

p(attr | x) = exp(b + sum_i w(x_i)) with w, b <= 0, so that TRACE's expectation over the
continuations stays exact (see methods/trace.py). One classifier per attribute, trained
in seconds from the corpus's training pool; the HMM is shared.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

from ..artefacts import artefact_name, output_path, save_table, tokenizer_fingerprint
from ..corpus import CORPUS_TAG, clean_text, corpus_tag, training_rows
from ..errors import DetoxkitError
from ..methods.trace import ATTRIBUTES
from ..progress import Progress
from .base import GeneratorConfig, Trainer, corpus_half_setting, load_generator, setting

log = logging.getLogger(__name__)


@dataclass
class TraceClassifierConfig(GeneratorConfig):
    attribute: str = setting("nontoxic", "attribute whose probability TRACE raises",
                             choices=tuple(sorted(ATTRIBUTES)))
    rows: int = setting(60000, "class-balanced corpus rows")
    steps: int = setting(300, "full-batch optimiser steps")
    l1: float = setting(1e-4, "L1 strength on the token weights")
    lr: float = setting(0.05, "Adam learning rate")
    max_tokens: int = setting(64, "tokens per row")
    seed: int = setting(0, "seed of the row order")
    corpus_half: str | None = corpus_half_setting()
    out: str | None = setting(None, "output file (default: the cache, "
                                    "$DETOXKIT_HOME/methods/trace-<attribute>-<tokenizer>.safetensors)")


def _balanced(attribute: str, rows: int, seed: int, half: str | None = None):
    label, _ = ATTRIBUTES[attribute]
    data = training_rows(None, seed, half=half)
    pos = [r for r in data if label(r)]
    neg = [r for r in data if not label(r)]
    n = min(len(pos), len(neg), rows // 2)
    if n == 0:
        raise DetoxkitError(f"trace-classifier: the corpus has no rows on one side of '{attribute}'")
    return pos[:n] + neg[:n], n


def guided_by(attribute: str, half: str | None) -> list[str]:
    """The attribute's tags, its corpus tag naming the half the rows came from."""
    return [t.replace(CORPUS_TAG, corpus_tag(half), 1) if t.startswith(CORPUS_TAG) else t
            for t in ATTRIBUTES[attribute][1]]


def train(config: TraceClassifierConfig) -> Path:
    """p(attr | x) = exp(b + sum_i w(x_i)), w, b <= 0, by maximum likelihood on class-balanced
    corpus training-pool rows (tokenized with a leading space, as continuations are), plus
    an L1 penalty on w (most tokens keep w = 0). Full-batch Adam over the token
    occurrences: seconds. Saves the tokens with w != 0."""
    import torch
    from torch.nn.functional import softplus

    attribute = config.attribute
    lm = load_generator(config)
    tokenizer = lm.tokenizer
    t0 = time.time()
    data, n = _balanced(attribute, config.rows, config.seed, config.corpus_half)
    y = torch.tensor([1.0] * n + [0.0] * n, dtype=torch.float64)
    enc = tokenizer([" " + clean_text(r.text) for r in data], add_special_tokens=False, truncation=True,
                    max_length=config.max_tokens)["input_ids"]
    used = sorted({t for ids in enc for t in ids})
    index = {t: i for i, t in enumerate(used)}
    rows_of = torch.tensor([i for i, ids in enumerate(enc) for _ in ids])  # one entry per token
    cols_of = torch.tensor([index[t] for ids in enc for t in ids])
    theta = torch.full((len(used),), -6.0, dtype=torch.float64, requires_grad=True)
    theta_b = torch.tensor([-3.0], dtype=torch.float64, requires_grad=True)

    def log_p(w, b):  # log p(attr | row) = b + sum of w over the row's tokens
        return torch.zeros(len(enc), dtype=torch.float64).index_add(0, rows_of, w[cols_of]) + b

    opt = torch.optim.Adam([theta, theta_b], lr=config.lr)
    t_fit = time.time()
    bar = Progress(config.steps, f"trace-classifier {attribute}", unit="steps")
    for step in range(config.steps):
        w, b = -softplus(theta), -softplus(theta_b)
        s = log_p(w, b).clamp(max=-1e-6)
        nll = -(y * s + (1 - y) * torch.log(-torch.expm1(s))).mean()
        loss = nll + config.l1 * (-w).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        bar.update(1)
        if (step + 1) % 100 == 0 or step == 0:
            bar.note(f"step {step + 1}/{config.steps}: nll {float(nll.detach()):.4f}")
    bar.close()
    with torch.no_grad():
        w, b = -softplus(theta), -softplus(theta_b)
        acc = float(((log_p(w, b) > math.log(0.5)).double() == y).double().mean())
    keep = (w < -1e-4).nonzero().squeeze(1)
    ids = torch.tensor(used, dtype=torch.int32)[keep]
    out = output_path(artefact_name(f"trace-{attribute}", tokenizer), config.out)
    save_table(out, {"ids": ids, "weights": w[keep].float(), "intercept": b.float()},
               {"created_by": f"detoxkit train trace-classifier --attribute {attribute}",
                "attribute": attribute, "guided_by": guided_by(attribute, config.corpus_half),
                "model": lm.name,
                "tokenizer": tokenizer_fingerprint(tokenizer), "rows": str(2 * n),
                "steps": str(config.steps), "l1": str(config.l1), "max_tokens": str(config.max_tokens),
                "train_accuracy": f"{acc:.4f}", "seconds": f"{time.time() - t0:.1f}",
                "fit_seconds": f"{time.time() - t_fit:.1f}"})
    log.info("trace-classifier %s: %d tokens with w < 0, train accuracy %.3f, %.1f s in all, "
             "%.1f s fitting -> %s", attribute, len(ids), acc, time.time() - t0,
             time.time() - t_fit, out)
    return out


TRAINER = Trainer("trace-classifier", TraceClassifierConfig, train)
