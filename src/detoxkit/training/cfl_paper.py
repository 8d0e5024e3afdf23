"""CFL's paper estimator (`detoxkit train cfl --estimator paper`, the default): the CFL
authors' per-word ATE, with the generator filling the masks. See training/token_tables.py
for the recipe's settings and the substitute estimator."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import string
import time
from collections import Counter
from pathlib import Path

from ..artefacts import artefact_name, output_path, save_table
from ..corpus import clean_text, training_rows
from ..progress import Progress
from .base import command_line, corpus_guided_by, load_generator

from .token_tables import CFLConfig, _cfl_kind

log = logging.getLogger(__name__)


# ---- the paper estimator: per-word ATE with masked fills ------------------------------------
#
# Follows the CFL authors' reference code (github causalate-mitigates-bias/
# causal-ate-mitigates-bias): mask_and_replace.py (normalize_sentences_mask_words,
# get_masked_sentences_as_list, get_preds_for_masked_sentences) and compute_ate_scores.py
# (getATEScores). The steps are written here from their description, not copied.

# NLTK's English stopword list (the 179 words of nltk.corpus.stopwords.words("english")), which
# the reference skips together with every punctuation character (string.punctuation).
NLTK_ENGLISH_STOPWORDS = frozenset("""
i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself
yourselves he him his himself she she's her hers herself it it's its itself they them their
theirs themselves what which who whom this that that'll these those am is are was were be been
being have has had having do does did doing a an the and but if or because as until while of at
by for with about against between into through during before after above below to from up down
in out on off over under again further then once here there when where why how all any both
each few more most other some such no nor not only own same so than too very s t can will just
don don't should should've now d ll m o re ve y ain aren aren't couldn couldn't didn didn't
doesn doesn't hadn hadn't hasn hasn't haven haven't isn isn't ma mightn mightn't mustn mustn't
needn needn't shan shan't shouldn shouldn't wasn wasn't weren weren't won won't wouldn wouldn't
""".split())
STOPWORDS = NLTK_ENGLISH_STOPWORDS | frozenset(string.punctuation)


def normalize_text(text: str) -> str:
    """The reference's normalisation: NFD, strip accents, strip, lowercase (the tokenizers
    library's normalizers, as the reference uses them)."""
    from tokenizers.normalizers import NFD, Lowercase, Sequence, Strip, StripAccents

    return Sequence([NFD(), StripAccents(), Strip(), Lowercase()]).normalize_str(text)


# A Penn-Treebank-style word tokenizer, close to NLTK's word_tokenize (which the reference uses
# and which is not installed here): quotes become `` and '', punctuation is split off, clitics
# ('s 're 've 'll 'd 'm n't) become words of their own; a period is split off where it ends a
# word before a space or the end (word_tokenize splits sentences first, so it does so at every
# sentence end).
def _split_groups(match) -> str:
    return " " + " ".join(g for g in match.groups() if g) + " "


_TB_RULES = [
    (re.compile(r'^"'), "``"),
    (re.compile(r"(``)"), r" \1 "),
    (re.compile(r'([ (\[{<])("|\'{2})'), r"\1 `` "),
    (re.compile(r"([:,])([^\d])|([:,])$"), lambda m: f" {m[1]} {m[2]}" if m[1] else f" {m[3]} "),
    (re.compile(r"\.\.\.+|[;@#$%&]"), lambda m: " ... " if m[0][0] == "." else f" {m[0]} "),
    (re.compile(r"([^.])(\.)([\]\)}>\"']*)(\s|$)"), r"\1 \2 \3\4"),
    (re.compile(r"[?!]|([^'])' "), lambda m: f"{m[1]} ' " if m[1] else f" {m[0]} "),
    (re.compile(r"[\]\[\(\)\{\}<>]|--"), r" \g<0> "),
    (re.compile(r'"'), " '' "),
    (re.compile(r"(\S)('')"), r"\1 \2 "),
    (re.compile(r"([^' ])('[sSmMdD]|'|'ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), r"\1 \2 "),
    (re.compile(r"(?i)\b(?:(can)(not)|(gon|wan)(na)|(got)(ta))\b"), _split_groups),
]


def word_tokenize(text: str) -> list[str]:
    """Words and punctuation of a text, Treebank style (see _TB_RULES)."""
    text = " " + text + " "
    for pattern, repl in _TB_RULES:
        text = pattern.sub(repl, text)
    return text.split()


def masked_positions(words: list[str]) -> list[int]:
    """The positions the reference masks: every word that is not a stopword or punctuation."""
    return [i for i, w in enumerate(words) if w not in STOPWORDS]


def paper_counterfactuals(records: list[dict]):
    """From per-sentence records {"text": normalised sentence, "words": its words, "fills":
    [[position, [fill, ...]], ...]}: (originals, counterfactual texts, (sentence, word) owners).
    A counterfactual is the words joined by spaces with the masked word replaced by one fill,
    as the reference decodes its filled sentence; the original is the normalised sentence."""
    originals, texts, owners = [], [], []
    for s, rec in enumerate(records):
        words = rec["words"]
        originals.append(rec["text"])
        for i, fills in rec["fills"]:
            for fill in fills:
                texts.append(" ".join(words[:i] + [fill] + words[i + 1:]))
                owners.append((s, words[i]))
    return originals, texts, owners


def paper_word_effects(base, counterfactual, owners) -> dict[str, tuple[float, int]]:
    """{word: (ATE, counterfactuals)}: each counterfactual's effect is
    max(0, score(original) - score(counterfactual)); a word's ATE is the plain mean of its
    counterfactuals' effects, over every occurrence (the reference's getATEScores). NaN scores
    are left out."""
    sums: dict[str, float] = {}
    counts: Counter = Counter()
    for (s, word), v in zip(owners, counterfactual):
        b = base[s]
        if math.isnan(v) or math.isnan(b):
            continue
        sums[word] = sums.get(word, 0.0) + max(0.0, float(b) - float(v))
        counts[word] += 1
    return {w: (sums[w] / counts[w], counts[w]) for w in sums}


def _normalized_with_map(text: str) -> tuple[str, list[int]] | None:
    """normalize_text(text) built character by character, with the index in `text` of each
    character it holds; None where that does not give normalize_text's result."""
    import unicodedata

    chars, where = [], []
    for j, ch in enumerate(text):
        for c in unicodedata.normalize("NFD", ch):
            if unicodedata.category(c) == "Mn":
                continue
            for low in c.lower():
                chars.append(low)
                where.append(j)
    norm = "".join(chars)
    stripped = norm.strip()
    lead = len(norm) - len(norm.lstrip())
    where = where[lead:lead + len(stripped)]
    return (stripped, where) if stripped == normalize_text(text) else None


def word_spans(text: str, words: list[str]) -> list[tuple[int, int] | None]:
    """Each word's (start, end) in `text`, found left to right; None for a word not found as
    written (the tokenizer's `` and '' for quotes)."""
    spans, at = [], 0
    for w in words:
        k = text.find(w, at)
        if k < 0:
            spans.append(None)
            continue
        spans.append((k, k + len(w)))
        at = k + len(w)
    return spans


def word_effects_to_tokens(tokenizer, sentences: list[tuple[str, list[str]]],
                           word_effects: dict[str, tuple[float, int]]):
    """(token ids, effects, occurrences): each word's ATE given to the generator tokens that
    spell it where it occurs, in the sentences as written (text, its normalised words); a
    stopword or punctuation occurrence counts as effect 0 (the reference gives it none). A
    token's effect is the mean over its occurrences inside words: a piece that also spells
    harmless words gets little of a toxic word's effect. Tokens never seen are absent (0)."""
    sums: dict[int, float] = {}
    counts: Counter = Counter()
    texts = [t for t, _ in sentences]
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True) if texts else None
    for n, (text, words) in enumerate(sentences):
        mapped = _normalized_with_map(text)
        if mapped is None:
            continue
        norm, where = mapped
        spans = []
        for w, span in zip(words, word_spans(norm, words)):
            if span is None or (w not in word_effects and w not in STOPWORDS):
                continue
            value = word_effects[w][0] if w in word_effects else 0.0
            spans.append((where[span[0]], where[span[1] - 1] + 1, value))
        for tok, (a, b) in zip(enc["input_ids"][n], enc["offset_mapping"][n]):
            values = [v for s, e, v in spans if s < b and a < e]
            if values:
                sums[tok] = sums.get(tok, 0.0) + sum(values) / len(values)
                counts[tok] += 1
    ids = sorted(sums)
    return ids, [sums[t] / counts[t] for t in ids], [counts[t] for t in ids]


class LMFiller:
    """Fills a masked word with a causal LM, as closely to a masked LM's top-k fills as a
    left-to-right model allows: the `pool` word tokens (a space then non-space characters) most
    likely after the left context are reranked by the likelihood of the sentence with the
    candidate in place, log p(candidate | left) + log p(following tokens | left, candidate),
    over the `window` following words (0: the whole rest of the sentence; the part before the
    word is the same for every candidate), and the best `fills` kept. The sentence is the words
    joined by spaces, each word tokenized with its leading space, after a start-of-text token."""

    def __init__(self, lm, fills: int = 5, pool: int = 8, window: int = 1):
        import torch

        self.lm, self.fills, self.pool, self.window = lm, int(fills), int(pool), int(window)
        tok = lm.tokenizer
        width = lm.model.get_output_embeddings().weight.shape[0]
        special = set(getattr(tok, "all_special_ids", []) or [])
        pieces = tok.batch_decode([[i] for i in range(min(width, len(tok)))])
        ok = [i not in special and re.fullmatch(r" \S+", p) is not None for i, p in enumerate(pieces)]
        self.candidates = torch.zeros(width, dtype=torch.bool)
        self.candidates[: len(ok)] = torch.tensor(ok)
        if int(self.candidates.sum()) < self.pool:
            raise ValueError(f"the filler's vocabulary has fewer than {self.pool} word tokens")
        vocab = tok.get_vocab()
        start = vocab.get("<|endoftext|>")
        for alt in (tok.bos_token_id, tok.eos_token_id):
            if start is None:
                start = alt
        self.start = [start] if start is not None else []

    def encode(self, words: list[str]) -> tuple[list[int], list[int]]:
        """(token ids, start index of each word): the start token, then each word with a space."""
        pieces = self.lm.tokenizer([" " + w for w in words], add_special_tokens=False)["input_ids"]
        ids, starts = list(self.start), []
        for p in pieces:
            starts.append(len(ids))
            ids.extend(p)
        return ids, starts

    def __call__(self, words: list[str], positions: list[int]) -> list[list[str]]:
        """The fills of each position, best first."""
        import torch

        from ..backends.hf.sampler import cache_of

        if not positions:
            return []
        model, tok = self.lm.model, self.lm.tokenizer
        device = model.device
        ids, starts = self.encode(words)
        if not self.start:  # no start token: the first word has no left context to fill from
            raise ValueError("the filler's tokenizer has no start-of-text token")
        bounds = starts + [len(ids)]
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([ids], device=device), use_cache=True)
            logp = torch.log_softmax(out.logits[0].float(), dim=-1).cpu()
            pools, rows = [], []  # per position: (candidate ids, their log p after the left context)
            for i in positions:
                lp = logp[starts[i] - 1].masked_fill(~self.candidates[: logp.shape[-1]], float("-inf"))
                top = torch.topk(lp, self.pool)
                pools.append((top.indices.tolist(), top.values.double()))
                stop = len(ids) if self.window == 0 else bounds[min(i + 1 + self.window, len(words))]
                rows.append((starts[i], ids[bounds[i + 1]:stop]))
            gains = self._following(cache_of(out), pools, rows)
        result = []
        for (cands, base), gain in zip(pools, gains):
            score = base + gain
            order = sorted(range(self.pool), key=lambda k: (-float(score[k]), k))[: self.fills]
            result.append([p.strip() for p in tok.batch_decode([[cands[k]] for k in order])])
        return result

    def _following(self, cache, pools, rows):
        """Per position, [pool] log p(following tokens | left context, candidate), in one batched
        forward: each candidate row continues its own prefix of the sentence's cache (left
        padded to the longest prefix) with the candidate, then the following tokens (right
        padded)."""
        import torch
        from transformers import DynamicCache

        from ..backends.hf.sampler import cache_kwarg

        model, device = self.lm.model, self.lm.model.device
        zero = [torch.zeros(self.pool, dtype=torch.float64) for _ in rows]
        live = [j for j, (_, follow) in enumerate(rows) if follow]
        if not live:
            return zero
        P = self.pool
        S = max(rows[j][0] for j in live)
        F = max(len(rows[j][1]) for j in live)
        x, mask, pos, target = [], [], [], []
        for j in live:
            s, follow = rows[j]
            pad = F - len(follow)
            for c in pools[j][0]:
                x.append([c] + follow + [follow[-1]] * pad)
                mask.append([0] * (S - s) + [1] * (s + 1 + len(follow)) + [0] * pad)
                pos.append(list(range(s, s + 1 + F)))
                target.append(follow + [follow[-1]] * pad)
        data = []
        for layer in cache.layers:
            k, v = [], []
            for j in live:
                s = rows[j][0]
                for t, out in ((layer.keys, k), (layer.values, v)):
                    part = t[:, :, :s]
                    if s < S:
                        part = torch.cat([part.new_zeros(*part.shape[:2], S - s, part.shape[-1]), part], 2)
                    out.append(part.expand(P, -1, -1, -1))
            data.append((torch.cat(k), torch.cat(v)))
        o = model(input_ids=torch.tensor(x, device=device),
                  attention_mask=torch.tensor(mask, device=device),
                  position_ids=torch.tensor(pos, device=device), use_cache=True,
                  **{cache_kwarg(model): DynamicCache(ddp_cache_data=data)})
        lp = torch.log_softmax(o.logits[:, :-1].float(), dim=-1).cpu()
        got = lp.gather(-1, torch.tensor(target)[:, :, None]).squeeze(-1).double()
        keep = torch.tensor([[1.0] * len(rows[j][1]) + [0.0] * (F - len(rows[j][1]))
                             for j in live for _ in range(P)], dtype=torch.float64)
        sums = (got * keep).sum(-1).reshape(len(live), P)
        for n, j in enumerate(live):
            zero[j] = sums[n]
        return zero


def _paper_sentences(tokenizer, data, max_tokens: int) -> list[dict]:
    """Each corpus row, cleaned, cut to its first `max_tokens` generator tokens, normalised and
    split into words."""
    enc = tokenizer([clean_text(r.text) for r in data], add_special_tokens=False, truncation=True,
                    max_length=max_tokens)["input_ids"]
    out = []
    for ids in enc:
        original = tokenizer.decode(ids, skip_special_tokens=True)
        text = normalize_text(original)
        out.append({"text": text, "words": word_tokenize(text), "original": original})
    return out


def _fill_key(config: CFLConfig, generator: str) -> dict:
    """The settings the fills depend on (not the scorer: one fills file serves every scorer)."""
    return {"model": generator, "filler": config.filler, "fills": config.fills,
            "pool": config.pool, "window": config.window, "max_tokens": config.max_tokens,
            "sentences": config.n_sentences, "seed": config.seed, "format": 1,
            # only when set: fills files made before the halves existed still resume
            **({"corpus_half": config.corpus_half} if config.corpus_half else {})}


def _read_checkpoint(path: Path, key: dict) -> dict[int, dict]:
    """The sentences already filled, {index: record}; a file made with other settings is an
    error. A torn last line (an interrupted write) is ignored."""
    from ..errors import DetoxkitError

    done: dict[int, dict] = {}
    if not path.exists():
        return done
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    for n, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except ValueError:
            if n == len(lines) - 1:
                break
            raise DetoxkitError(f"{path}, line {n + 1}: not JSON") from None
        if n == 0:
            if rec.get("key") != key:
                raise DetoxkitError(f"{path} was filled with other settings ({rec.get('key')}); "
                                    f"remove it or pass another --checkpoint")
            continue
        done[int(rec["i"])] = rec
    return done


def _fill_sentences(config: CFLConfig, lm, sentences: list[dict]) -> tuple[list[dict], float]:
    """Every sentence's fills, resumed from and appended to the checkpoint file; (records,
    seconds spent filling over all runs)."""
    import os

    from ..artefacts import tokenizer_fingerprint
    from ..backends.hf import load_lm
    from .base import set_threads

    key = _fill_key(config, lm.name)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    path = (Path(config.checkpoint) if config.checkpoint else
            output_path(f"cfl-fills-{tokenizer_fingerprint(lm.tokenizer)}-{digest}.jsonl"))
    done = _read_checkpoint(path, key)
    todo = [i for i in range(len(sentences)) if i not in done]
    log.info("cfl: fills file %s (%d of %d sentences done)", path, len(done), len(sentences))
    if todo:
        set_threads(config.threads)
        filler_lm = lm if config.filler == "generator" else load_lm(config.filler, device=config.device,
                                                                   dtype="float32")
        filler = LMFiller(filler_lm, config.fills, config.pool, config.window)
        path.parent.mkdir(parents=True, exist_ok=True)
        _drop_torn_line(path)
        fresh = not path.exists() or path.stat().st_size == 0
        with open(path, "a", encoding="utf-8") as fh, \
                Progress(len(sentences), "cfl: filling masked words", unit="sentences",
                         initial=len(done)) as bar:
            if fresh:
                fh.write(json.dumps({"key": key}) + "\n")
            for i in todo:
                t0 = time.monotonic()
                rec = sentences[i]
                pos = masked_positions(rec["words"])
                fills = filler(rec["words"], pos)
                out = {"i": i, "text": rec["text"], "words": rec["words"],
                       "fills": [[p, f] for p, f in zip(pos, fills)],
                       "s": round(time.monotonic() - t0, 3)}
                fh.write(json.dumps(out, ensure_ascii=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
                done[i] = out
                bar.update(1)
    records = [done[i] for i in range(len(sentences))]
    return records, sum(r.get("s", 0.0) for r in records)


def _drop_torn_line(path: Path) -> None:
    """Cut an interrupted write (a last line without its newline) off the fills file."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        with open(path, "r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


def train_cfl_paper(config: CFLConfig) -> Path:
    """Per-word ATE the way the CFL reference code computes it, spread over the generator's
    tokens. For each corpus sentence (balanced toxic / non-toxic, its first `max_tokens`
    generator tokens), normalised (NFD, accents stripped, lower case) and split into words,
    every word that is not a stopword or punctuation is masked and filled with `fills` fills
    (LMFiller: the generator in place of the reference's RoBERTa); each filled sentence's effect
    is max(0, score(sentence) - score(filled sentence)); a word's ATE is the plain mean of its
    effects over all its occurrences and fills. Token effects: word_effects_to_tokens, over the
    same sentences. Resumable: the fills are appended to a checkpoint file as they are made."""
    import torch

    from ..scorers import load_scorer

    t_start = time.time()
    lm = load_generator(config)
    tokenizer = lm.tokenizer
    data = training_rows(config.n_sentences, config.seed, balance=True, half=config.corpus_half)
    sentences = _paper_sentences(tokenizer, data, config.max_tokens)
    records, fill_seconds = _fill_sentences(config, lm, sentences)
    originals, texts, owners = paper_counterfactuals(records)
    judge = load_scorer(config.scorer)
    t0 = time.time()
    base = judge.score(originals)["toxicity"]
    with Progress(len(texts), f"cfl: scoring with {config.scorer}", unit="texts") as bar:
        cf = judge.score(texts, progress=bar.update)["toxicity"]
    words = paper_word_effects(base, cf, owners)
    ids, effects, weights = word_effects_to_tokens(
        tokenizer, [(s["original"], r["words"]) for s, r in zip(sentences, records)], words)
    out = output_path(artefact_name(_cfl_kind("paper"), tokenizer), config.out)
    word_table = {w: [round(e, 6), n] for w, (e, n) in sorted(words.items(), key=lambda kv: -kv[1][0])}
    save_table(out, {"ids": torch.tensor(ids, dtype=torch.int32),
                     "effects": torch.tensor(effects, dtype=torch.float32),
                     "counts": torch.tensor(weights, dtype=torch.int32)},
               {"scorer": config.scorer, "scorer_version": judge.version, "estimator": "paper",
                "guided_by": corpus_guided_by(config.corpus_half, (config.scorer, judge)),
                "filler": lm.name if config.filler == "generator" else config.filler,
                "fills": str(config.fills), "pool": str(config.pool), "window": str(config.window),
                "sentences": str(len(data)), "masked_words": str(sum(len(r["fills"]) for r in records)),
                "counterfactuals": str(len(texts)), "words": str(len(words)), "model": lm.name,
                "stopwords": "nltk english (179) + string.punctuation",
                "created_by": command_line("cfl", config),
                "fill_seconds": f"{fill_seconds:.1f}", "score_seconds": f"{time.time() - t0:.1f}",
                "seconds": f"{time.time() - t_start:.1f}", "word_effects": word_table})
    log.info("cfl: %d words, %d tokens from %d counterfactuals -> %s", len(words), len(ids),
             len(texts), out)
    if config.export_words:
        Path(config.export_words).write_text(json.dumps(word_table, ensure_ascii=False, indent=0),
                                             encoding="utf-8")
    return out
