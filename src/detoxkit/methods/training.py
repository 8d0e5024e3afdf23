"""Training recipes for the methods' artefacts, all from the corpus's training pool
(`detoxkit.corpus.iter_corpus(pool="train")`: never the rows reserved for prompts).

- banlist: the default word list for `wordban`.
- vocab-shift: a per-token non-toxic bias (logistic regression on token presence).
- cfl: per-token average treatment effect on a scorer, by counterfactual substitution.
- experts: DExperts' expert / anti-expert LoRA adapters (LM loss on non-toxic / toxic rows).
- gedi: GeDi's class-conditional LM, one LoRA adapter per control code, hybrid loss.
"""

from __future__ import annotations

import logging
import math
import random
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..paths import cache_dir
from ..artefacts import artefact_name, save_table

log = logging.getLogger("detoxkit")
WORD = re.compile(r"[a-z][a-z']*[a-z]|[a-z]")


def _rows(max_rows: int | None, seed: int, balance: bool = False):
    from ..corpus import iter_corpus

    rows = [r for r in iter_corpus(pool="train") if r.text.strip()]
    rng = random.Random(seed)
    rng.shuffle(rows)
    if balance:
        tox = [r for r in rows if r.is_offensive]
        non = [r for r in rows if not r.is_offensive]
        n = min(len(tox), len(non), (max_rows or len(rows)) // 2)
        rows = tox[:n] + non[:n]
        rng.shuffle(rows)
    elif max_rows:
        rows = rows[:max_rows]
    return rows


def _clean(text: str) -> str:
    text = re.sub(r"(https?://|www\.)\S+", " ", text)
    text = re.sub(r"@\w+", "@user", text)
    text = re.sub(r"&amp;|&lt;|&gt;|&#\d+;", " ", text)
    text = re.sub(r"\bRT\b:?", " ", text)
    return re.sub(r"\s+", " ", text).strip()


# ---- banlist ------------------------------------------------------------------------------

def train_banlist(out: Path | None = None, *, top: int = 300, min_count: int = 25,
                  min_ratio: float = 0.9, max_rows: int | None = None, seed: int = 0,
                  filter_scorer: str | None = "profanity-svm", filter_threshold: float = 0.5) -> Path:
    """Words most specific to toxic rows: document frequency in toxic rows >= min_count,
    class-balanced P(toxic | word in row) >= min_ratio, the `top` highest by smoothed
    log-odds; then, with filter_scorer, only words that scorer rates >= filter_threshold
    on their own. The corpus's tweets make dialect and slang words (not offensive by
    themselves) frequent in toxic rows; the filter removes them."""
    rows = _rows(max_rows, seed)
    tox, non = Counter(), Counter()
    n_tox = n_non = 0
    for r in rows:
        words = set(WORD.findall(_clean(r.text).lower()))
        if r.is_offensive:
            tox.update(words)
            n_tox += 1
        else:
            non.update(words)
            n_non += 1
    scored = []
    for w, t in tox.items():
        if t < min_count or len(w) < 3:
            continue
        n = non.get(w, 0)
        # P(toxic | word), corrected for the class sizes (as if the classes were balanced)
        pt, pn = t / n_tox, n / n_non
        ratio = pt / (pt + pn)
        if ratio < min_ratio:
            continue
        log_odds = math.log((t + 1) / (n_tox - t + 1)) - math.log((n + 1) / (n_non - n + 1))
        scored.append((log_odds, w))
    words = [w for _, w in sorted(scored, reverse=True)[:top]]
    n_candidates = len(words)
    if filter_scorer:
        from ..scorers import load_scorer

        alone = load_scorer(filter_scorer).score(words)["toxicity"]
        words = [w for w, v in zip(words, alone) if v >= filter_threshold]
    out = Path(out) if out else cache_dir("methods") / "banned_words.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    kept = (f"; kept {len(words)} of {n_candidates} that {filter_scorer} scores >= "
            f"{filter_threshold} alone" if filter_scorer else "")
    header = (f"# detoxkit default word list: built by `detoxkit train banlist` from {len(rows)} "
              f"training-pool corpus rows\n# (top {top} by log-odds, toxic rows >= {min_count}, "
              f"balanced P(toxic|word) >= {min_ratio}{kept}). One word per line.\n")
    out.write_text(header + "\n".join(sorted(words)) + "\n", encoding="utf-8")
    log.info("banlist: %d words -> %s", len(words), out)
    return out


# ---- vocabulary shift ---------------------------------------------------------------------

def _token_matrix(tokenizer, texts: list[str], max_tokens: int = 128):
    from scipy.sparse import csr_matrix

    enc = tokenizer([_clean(t) for t in texts], add_special_tokens=False, truncation=True,
                    max_length=max_tokens)["input_ids"]
    indptr, indices = [0], []
    for ids in enc:
        uniq = sorted(set(ids))
        indices.extend(uniq)
        indptr.append(len(indices))
    width = max(tokenizer.get_vocab().values()) + 1
    data = np.ones(len(indices), dtype=np.float32)
    return csr_matrix((data, np.asarray(indices), np.asarray(indptr)), shape=(len(texts), width))


def train_vocab_shift(tokenizer, out: Path | None = None, *, rows: int = 60000, c: float = 0.5,
                      seed: int = 0, model_name: str = "") -> Path:
    """Per-token non-toxic association: logistic regression coefficients (token presence ->
    non-toxic), scaled so the largest magnitude is 1; tokens with |w| < 1e-3 are dropped."""
    from sklearn.linear_model import LogisticRegression

    data = _rows(rows, seed, balance=True)
    x = _token_matrix(tokenizer, [r.text for r in data])
    y = np.array([0 if r.is_offensive else 1 for r in data])
    clf = LogisticRegression(C=c, max_iter=500, solver="liblinear")
    t0 = time.time()
    clf.fit(x, y)
    w = clf.coef_[0]
    w = w / np.abs(w).max()
    keep = np.nonzero(np.abs(w) >= 1e-3)[0]
    out = Path(out) if out else cache_dir("methods") / artefact_name("vocab_shift", tokenizer)
    save_table(out, {"ids": torch.tensor(keep, dtype=torch.int32),
                     "values": torch.tensor(w[keep], dtype=torch.float16)},
               {"rows": str(len(data)), "c": str(c), "model": model_name,
                "created_by": "detoxkit train vocab-shift",
                "train_accuracy": f"{clf.score(x, y):.4f}", "seconds": f"{time.time() - t0:.1f}"})
    log.info("vocab-shift: %d tokens -> %s", len(keep), out)
    return out


# ---- CFL token table ----------------------------------------------------------------------

def train_cfl(tokenizer, out: Path | None = None, *, scorer: str = "profanity-svm",
              sentences: int = 4000, max_tokens: int = 40, substitutes: int = 30,
              shrink: float = 2.0, seed: int = 0, model_name: str = "") -> Path:
    """ATE of each token on the scorer's toxicity by counterfactual substitution.

    For each corpus sentence (balanced toxic / non-toxic, first `max_tokens` tokens of
    the generator's tokenization) and each position i, the token t_i is replaced by a
    neutral token drawn from the `substitutes` most frequent word tokens of the
    non-toxic rows (with a leading space when t_i has one); the effect of that
    occurrence is score(original) - score(counterfactual). A token's ATE is the mean
    effect over its occurrences, shrunk towards 0 for rare tokens: sum / (n + shrink)."""
    from ..scorers import load_scorer

    judge = load_scorer(scorer)
    rng = random.Random(seed)
    data = _rows(sentences, seed, balance=True)
    enc = tokenizer([_clean(r.text) for r in data], add_special_tokens=False, truncation=True,
                    max_length=max_tokens)["input_ids"]
    # neutral substitutes: frequent alphabetic tokens of non-toxic rows
    freq = Counter(t for ids, r in zip(enc, data) if not r.is_offensive for t in ids)
    pieces = dict(zip(freq, tokenizer.batch_decode([[t] for t in freq])))
    spaced = [t for t, _ in freq.most_common() if re.fullmatch(r" [a-z]{2,}", pieces[t])][:substitutes]
    bare = [t for t, _ in freq.most_common() if re.fullmatch(r"[a-z]{2,}", pieces[t])][:substitutes]
    texts, owners = [], []  # counterfactual texts and (sentence, token id)
    originals = []
    for s, ids in enumerate(enc):
        originals.append(tokenizer.decode(ids))
        for i, tok in enumerate(ids):
            pool = spaced if pieces.get(tok, tokenizer.decode([tok])).startswith(" ") else bare
            sub = rng.choice(pool or spaced)
            if sub == tok:
                continue
            texts.append(tokenizer.decode(ids[:i] + [sub] + ids[i + 1:]))
            owners.append((s, tok))
    t0 = time.time()
    base = judge.score(originals)["toxicity"]
    cf = judge.score(texts)["toxicity"]
    sums: dict[int, float] = {}
    counts: Counter = Counter()
    for (s, tok), v in zip(owners, cf):
        if math.isnan(v) or math.isnan(base[s]):
            continue
        sums[tok] = sums.get(tok, 0.0) + float(base[s] - v)
        counts[tok] += 1
    ids = sorted(sums)
    effects = [sums[t] / (counts[t] + shrink) for t in ids]
    out = Path(out) if out else cache_dir("methods") / artefact_name("cfl", tokenizer)
    save_table(out, {"ids": torch.tensor(ids, dtype=torch.int32),
                     "effects": torch.tensor(effects, dtype=torch.float32),
                     "counts": torch.tensor([counts[t] for t in ids], dtype=torch.int32)},
               {"scorer": scorer, "scorer_version": judge.version, "sentences": str(len(data)),
                "counterfactuals": str(len(texts)), "model": model_name,
                "created_by": "detoxkit train cfl", "seconds": f"{time.time() - t0:.1f}"})
    log.info("cfl: %d tokens from %d counterfactuals -> %s", len(ids), len(texts), out)
    return out


# ---- LoRA adapters: DExperts experts and GeDi --------------------------------------------

def _batches(texts: list[str], labels: list[int], tokenizer, batch: int, max_len: int, seed: int):
    """Balanced batches: batch/2 non-toxic rows, then batch/2 toxic rows."""
    rng = random.Random(seed)
    by_class = [[i for i, y in enumerate(labels) if y == c] for c in (0, 1)]
    half = max(1, batch // 2)
    while True:
        for pool in by_class:
            rng.shuffle(pool)
        for start in range(0, min(map(len, by_class)) - half + 1, half):
            idx = by_class[0][start:start + half] + by_class[1][start:start + half]
            enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True,
                            truncation=True, max_length=max_len, add_special_tokens=False)
            yield enc["input_ids"], enc["attention_mask"], torch.tensor([labels[i] for i in idx])


def _lower_hidden(model, first: int, ids, mask):
    from ..tokens import position_ids

    pos = position_ids(mask)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True,
                    use_cache=False)
        hidden = out.hidden_states[first]
        pe = model.model.rotary_emb(hidden, pos)
    return hidden, pe


def _class_nll(model, top, hidden, pe, ids, mask, groups: int = 2):
    """Per-row mean NLL of ids under each adapter: [2, B] (and token counts [B])."""
    from .lora import causal_mask4d, head_logits

    B, T = ids.shape
    mask4d = causal_mask4d(mask, T, hidden.dtype)
    h = top(torch.cat([hidden] * groups), torch.cat([mask4d] * groups),
            tuple(torch.cat([p.expand(B, *p.shape[1:])] * groups) for p in pe), None)
    logits = head_logits(model, h[:, :-1])  # [2B, T-1, V]
    target = ids[:, 1:].repeat(groups, 1)
    tmask = (mask[:, 1:] * mask[:, :-1]).float().repeat(groups, 1)
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
    summed = (nll * tmask).sum(-1).view(groups, B)
    n = tmask[:B].sum(-1).clamp(min=1)
    return summed / n, n


def train_adapters(lm, kind: str, out: Path | None = None, *, rows: int = 4000, steps: int = 150,
                   layers: int = 4, rank: int = 8, lr: float = 1e-3, batch: int = 16,
                   max_len: int = 48, gen_weight: float = 0.6, seed: int = 0,
                   progress: Callable[[int, float], None] | None = None) -> Path:
    """Train two LoRA adapters on the top `layers` layers of lm.model.

    kind="experts": adapter "expert" on non-toxic rows, "antiexpert" on toxic rows, each
    with the plain LM loss (DExperts). kind="gedi": adapters "nontoxic" / "toxic" as one
    class-conditional LM trained on every row with GeDi's hybrid loss
    gen_weight * NLL(x | true class) + (1 - gen_weight) * -log P(true class | x), where
    P(class | x) is Bayes' rule over the two classes' length-normalised likelihoods.

    The lower layers run once per batch without gradients (shared by both adapters).
    Adapters are saved in PEFT's format (adapter_config.json + adapter_model.safetensors)."""
    from .experts import model_key
    from .lora import TopLayers

    if kind not in ("experts", "gedi"):
        raise ValueError(kind)
    torch.manual_seed(seed)
    model, tok = lm.model, lm.tokenizer
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    top = TopLayers(model, layers, rank, scaling=2.0, trainable=True)
    top.train()
    params = [t for _, _, m in top.lora_modules() for t in (m.lora_A, m.lora_B)]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 10) * max(0.1, 1 - s / max(steps, 1)))
    data = _rows(rows, seed, balance=True)
    eos = tok.eos_token or ""
    texts = [_clean(r.text) + eos for r in data]
    labels = [int(r.is_offensive) for r in data]  # 1 = toxic
    names = ("expert", "antiexpert") if kind == "experts" else ("nontoxic", "toxic")
    was_training = model.training
    model.eval()
    t0 = time.time()
    history = []
    it = _batches(texts, labels, tok, batch, max_len, seed)
    for step in range(steps):
        ids, mask, y = next(it)
        ids, mask, y = ids.to(model.device), mask.to(model.device), y.to(model.device)
        hidden, pe = _lower_hidden(model, top.first, ids, mask)
        if kind == "experts":  # first half (non-toxic rows) through adapter 0, second through 1
            nll, _ = _class_nll(model, top, hidden, pe, ids, mask, groups=1)
            loss = nll[0].mean()
        else:  # every row under both codes: [2, B], row 0 = non-toxic adapter
            nll, _ = _class_nll(model, top, hidden, pe, ids, mask, groups=2)
            own = torch.where(y.bool(), nll[1], nll[0])
            logpost = -nll - torch.logsumexp(-nll, dim=0, keepdim=True)  # log P(class | x)
            disc = -torch.where(y.bool(), logpost[1], logpost[0])
            loss = gen_weight * own.mean() + (1 - gen_weight) * disc.mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        history.append(float(loss.detach()))
        if progress:
            progress(step + 1, history[-1])
        elif (step + 1) % 10 == 0:
            log.info("%s step %d/%d loss %.4f (%.1f s)", kind, step + 1, steps,
                     sum(history[-10:]) / len(history[-10:]), time.time() - t0)
    model.train(was_training)
    for p, flag in frozen:
        p.requires_grad_(flag)
    out = Path(out) if out else cache_dir("methods", kind) / model_key(lm)
    extra: dict[str, Any] = {"base_model": lm.name, "base_revision": lm.revision, "kind": kind,
                             "rows": len(data), "steps": steps, "batch": batch, "max_len": max_len,
                             "lr": lr, "seed": seed, "seconds": round(time.time() - t0, 1),
                             "loss_first10": round(sum(history[:10]) / max(1, len(history[:10])), 4),
                             "loss_last10": round(sum(history[-10:]) / max(1, len(history[-10:])), 4),
                             "created_by": f"detoxkit train {kind}"}
    if kind == "gedi":
        extra["gen_weight"] = gen_weight
    top.save_adapters(out, names, lm.name, extra)
    log.info("%s adapters -> %s", kind, out)
    return out
