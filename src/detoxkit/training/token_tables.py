"""`detoxkit train vocab-shift` and `detoxkit train cfl`: per-token tables for the generator's
tokenizer, from the corpus's training pool.

- vocab-shift: a per-token non-toxic bias (logistic regression on token presence).
- cfl: per-word average treatment effect on a scorer, estimated the way the CFL authors'
  reference code does (`--estimator paper`, the default: each non-stopword masked and filled
  with the 5 best fills, each counterfactual's effect clipped at 0, a plain mean), then spread
  over the generator's tokens; or detoxkit's earlier per-token estimate (`--estimator
  substitute`: one random frequent non-toxic token, signed effects, shrunk towards 0).
"""

from __future__ import annotations

import logging
import math
import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..artefacts import artefact_name, output_path, save_table
from ..corpus import clean_text, training_rows
from ..progress import Progress
from .base import (GeneratorConfig, Trainer, command_line, corpus_guided_by, corpus_half_setting,
                   load_generator, setting)

log = logging.getLogger(__name__)


@dataclass
class VocabShiftConfig(GeneratorConfig):
    rows: int = setting(60000, "balanced corpus rows")
    c: float = setting(0.5, "inverse L2 strength of the regression")
    seed: int = setting(0, "seed of the row sample")
    corpus_half: str | None = corpus_half_setting()
    out: str | None = setting(None, "output file (default: the cache, "
                                    "$DETOXKIT_HOME/methods/vocab_shift-<tokenizer>.safetensors)")


CFL_ESTIMATORS = ("paper", "substitute")
CFL_SENTENCES = {"paper": 300, "substitute": 4000}  # default corpus sentences per estimator


@dataclass
class CFLConfig(GeneratorConfig):
    estimator: str = setting("paper", "how effects are estimated: 'paper' (the CFL reference code: "
                                      "per word, masked-LM fills, clipped, plain mean) or "
                                      "'substitute' (detoxkit's earlier table: per token, one random "
                                      "frequent non-toxic substitute, signed, shrunk)",
                             choices=CFL_ESTIMATORS)
    scorer: str = setting("profanity-svm", "scorer whose output is explained")
    sentences: int | None = setting(None, "balanced corpus sentences (default: "
                                          f"{CFL_SENTENCES['paper']} for paper, "
                                          f"{CFL_SENTENCES['substitute']} for substitute)")
    max_tokens: int = setting(40, "tokens per sentence (the generator's tokenization)")
    fills: int = setting(5, "paper: fills per masked word (the reference's top 5)")
    pool: int = setting(8, "paper: candidate fills per word, the filler's most likely word tokens "
                            "after the left context, reranked by the sentence's likelihood")
    window: int = setting(1, "paper: words after the masked word that the reranking likelihood "
                             "includes (0: the whole rest of the sentence)")
    filler: str = setting("generator", "paper: the causal LM that fills masked words: 'generator' "
                                       "or a model name, directory or hub id")
    threads: int = setting(1, "paper: torch CPU threads of the filler")
    checkpoint: str | None = setting(None, "paper: the fills file the recipe appends to and resumes "
                                           "from (default: in the cache, named by the fill settings)")
    substitutes: int = setting(30, "substitute: neutral substitute tokens (the most frequent "
                                   "non-toxic words)")
    shrink: float = setting(2.0, "substitute: shrinkage of rare tokens' effects: "
                                 "sum / (count + shrink)")
    seed: int = setting(0, "seed of the row sample (and of substitute's substitutes)")
    corpus_half: str | None = corpus_half_setting()
    out: str | None = setting(None, "output file (default: the cache, $DETOXKIT_HOME/methods/"
                                    "cfl-<tokenizer>.safetensors; cfl-substitute-... for substitute)")
    export_json: str | None = setting(None, "also write the table as {token: effect} JSON "
                                            "(for reports)")
    export_words: str | None = setting(None, "paper: also write the word effects as "
                                             "{word: [effect, counterfactuals]} JSON")

    def __post_init__(self) -> None:
        super().__post_init__()
        from ..errors import DetoxkitError

        if self.fills < 1 or self.pool < self.fills or self.window < 0 or self.max_tokens < 1:
            raise DetoxkitError("cfl: need fills >= 1, pool >= fills, window >= 0, max_tokens >= 1")

    @property
    def n_sentences(self) -> int:
        return self.sentences if self.sentences is not None else CFL_SENTENCES[self.estimator]


def _token_matrix(tokenizer, texts: list[str], max_tokens: int = 128):
    """Sparse [rows, vocab width] token presence."""
    import numpy as np
    from scipy.sparse import csr_matrix

    from ..tokens import vocab_width

    enc = tokenizer([clean_text(t) for t in texts], add_special_tokens=False, truncation=True,
                    max_length=max_tokens)["input_ids"]
    indptr, indices = [0], []
    for ids in enc:
        uniq = sorted(set(ids))
        indices.extend(uniq)
        indptr.append(len(indices))
    data = np.ones(len(indices), dtype=np.float32)
    return csr_matrix((data, np.asarray(indices), np.asarray(indptr)),
                      shape=(len(texts), vocab_width(tokenizer)))


def train_vocab_shift(config: VocabShiftConfig) -> Path:
    """Per-token non-toxic association: logistic regression coefficients (token presence ->
    non-toxic), scaled so the largest magnitude is 1; tokens with |w| < 1e-3 are dropped."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    lm = load_generator(config)
    tokenizer = lm.tokenizer
    data = training_rows(config.rows, config.seed, balance=True, half=config.corpus_half)
    x = _token_matrix(tokenizer, [r.text for r in data])
    y = np.array([0 if r.is_offensive else 1 for r in data])
    clf = LogisticRegression(C=config.c, max_iter=500, solver="liblinear")
    t0 = time.time()
    clf.fit(x, y)
    w = clf.coef_[0]
    w = w / np.abs(w).max()
    keep = np.nonzero(np.abs(w) >= 1e-3)[0]
    out = output_path(artefact_name("vocab_shift", tokenizer), config.out)
    save_table(out, {"ids": torch.tensor(keep, dtype=torch.int32),
                     "values": torch.tensor(w[keep], dtype=torch.float16)},
               {"rows": str(len(data)), "c": str(config.c), "model": lm.name,
                "created_by": "detoxkit train vocab-shift",
                "guided_by": corpus_guided_by(config.corpus_half),
                "train_accuracy": f"{clf.score(x, y):.4f}", "seconds": f"{time.time() - t0:.1f}"})
    log.info("vocab-shift: %d tokens -> %s", len(keep), out)
    return out


def _counterfactuals(tokenizer, data, config: CFLConfig):
    """(original texts, counterfactual texts, (sentence, token id) per counterfactual)."""
    rng = random.Random(config.seed)
    enc = tokenizer([clean_text(r.text) for r in data], add_special_tokens=False, truncation=True,
                    max_length=config.max_tokens)["input_ids"]
    # neutral substitutes: frequent alphabetic tokens of non-toxic rows
    freq = Counter(t for ids, r in zip(enc, data) if not r.is_offensive for t in ids)
    pieces = dict(zip(freq, tokenizer.batch_decode([[t] for t in freq])))
    common = [t for t, _ in freq.most_common()]
    spaced = [t for t in common if re.fullmatch(r" [a-z]{2,}", pieces[t])][:config.substitutes]
    bare = [t for t in common if re.fullmatch(r"[a-z]{2,}", pieces[t])][:config.substitutes]
    originals, texts, owners = [], [], []
    for s, ids in enumerate(enc):
        originals.append(tokenizer.decode(ids))
        for i, tok in enumerate(ids):
            pool = spaced if pieces.get(tok, tokenizer.decode([tok])).startswith(" ") else bare
            sub = rng.choice(pool or spaced)
            if sub == tok:
                continue
            texts.append(tokenizer.decode(ids[:i] + [sub] + ids[i + 1:]))
            owners.append((s, tok))
    return originals, texts, owners


def substitute_token_effects(base, counterfactual, owners, shrink: float):
    """(token ids, effects, counts) of the substitute estimator: a token's effect is the sum of
    its occurrences' signed effects score(original) - score(counterfactual), divided by
    (occurrences + shrink). NaN scores are left out."""
    sums: dict[int, float] = {}
    counts: Counter = Counter()
    for (s, tok), v in zip(owners, counterfactual):
        if math.isnan(v) or math.isnan(base[s]):
            continue
        sums[tok] = sums.get(tok, 0.0) + float(base[s] - v)
        counts[tok] += 1
    ids = sorted(sums)
    return ids, [sums[t] / (counts[t] + shrink) for t in ids], [counts[t] for t in ids]


def _train_cfl_substitute(config: CFLConfig) -> Path:
    """ATE of each token on the scorer's toxicity by counterfactual substitution (detoxkit's
    earlier table, `--estimator substitute`).

    For each corpus sentence (balanced toxic / non-toxic, first `max_tokens` tokens of the
    generator's tokenization) and each position i, the token t_i is replaced by a neutral
    token drawn from the `substitutes` most frequent word tokens of the non-toxic rows
    (with a leading space when t_i has one); the effect of that occurrence is
    score(original) - score(counterfactual). A token's ATE is the mean effect over its
    occurrences, shrunk towards 0 for rare tokens: sum / (n + shrink)."""
    import torch

    from ..scorers import load_scorer

    lm = load_generator(config)
    tokenizer = lm.tokenizer
    judge = load_scorer(config.scorer)
    data = training_rows(config.n_sentences, config.seed, balance=True, half=config.corpus_half)
    originals, texts, owners = _counterfactuals(tokenizer, data, config)
    t0 = time.time()
    base = judge.score(originals)["toxicity"]
    bar = Progress(len(texts), f"cfl: scoring with {config.scorer}", unit="texts")
    cf = judge.score(texts, progress=bar.update)["toxicity"]
    bar.close()
    ids, effects, counts = substitute_token_effects(base, cf, owners, config.shrink)
    out = output_path(artefact_name(_cfl_kind("substitute"), tokenizer), config.out)
    save_table(out, {"ids": torch.tensor(ids, dtype=torch.int32),
                     "effects": torch.tensor(effects, dtype=torch.float32),
                     "counts": torch.tensor(counts, dtype=torch.int32)},
               {"scorer": config.scorer, "scorer_version": judge.version, "estimator": "substitute",
                "sentences": str(len(data)), "counterfactuals": str(len(texts)), "model": lm.name,
                "guided_by": corpus_guided_by(config.corpus_half, (config.scorer, judge)),
                "created_by": command_line("cfl", config), "seconds": f"{time.time() - t0:.1f}"})
    log.info("cfl: %d tokens from %d counterfactuals -> %s", len(ids), len(texts), out)
    return out


def _cfl_kind(estimator: str) -> str:
    """The artefact kind an estimator writes: the one the CFL method's variant of that name reads."""
    from ..methods.tables import CFL_VARIANTS

    return CFL_VARIANTS[estimator]


def train_cfl(config: CFLConfig) -> Path:
    """CFL token table: the ATE of each word (paper, default) or token (substitute) on a
    scorer's toxicity, as the per-token effects the CFL method subtracts from the logits."""
    if config.estimator == "paper":
        from .cfl_paper import train_cfl_paper

        out = train_cfl_paper(config)
    else:
        out = _train_cfl_substitute(config)
    if config.export_json:
        from ..methods.tables import export_effects

        n = export_effects(lm_tokenizer(config), config.export_json, str(out))
        log.info("cfl: %d token effects -> %s", n, config.export_json)
    return out


def lm_tokenizer(config: GeneratorConfig):
    """The generator's tokenizer (loaded once per process with the model)."""
    return load_generator(config).tokenizer


VOCAB_SHIFT = Trainer("vocab-shift", VocabShiftConfig, train_vocab_shift)
CFL = Trainer("cfl", CFLConfig, train_cfl)
