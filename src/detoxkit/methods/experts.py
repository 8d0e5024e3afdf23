"""DExperts and GeDi with LoRA adapters on the generator (see methods/lora.py).

Both default to `mode=paper`: the decoding of their authors' reference code, step for step
(docs/methods.md names the files and functions followed).

DExperts (Liu et al. 2021; alisawuffles/DExperts, generation/dexperts_generation.py,
DExpertsGeneration.generate): the base logits are cut to their top-p nucleus (filter_p 0.9),
then ensemble = base + alpha * (expert - anti-expert), -inf outside the base nucleus; the
ensemble is divided by the temperature (by the sampler) and sampled with p = 1 (this step's
`top_p_override`). `mode=ensemble-then-nucleus` is detoxkit's earlier variant: the ensemble
of the full base logits, sampled with the run's top-p. The expert and anti-expert are the
generator with LoRA adapters trained on the corpus's non-toxic and toxic rows (`detoxkit
train experts`); since only the top k layers carry adapters, expert - anti-expert =
W_head (h_expert - h_anti): one extra LM-head product instead of two.

GeDi (Krause et al. 2021; salesforce/GeDi, modeling_utils.py, _generate_no_beam_search, as
generate_GeDi.py --mode detoxify calls it): a class-conditional LM, here the generator with
one LoRA adapter per control code (non-toxic / toxic; `detoxkit train gedi`). For every
candidate v, log P(non-toxic | x, v) by Bayes' rule over the two codes' class
log-likelihoods of prompt + continuation + v, divided by their length, times the adapters'
learned logit_scale, + class_bias on the desired class; then log_softmax(base) +
weight * that, the filter_p / target_p heuristic, a shift to max rep_penalty_scale, the
repetition penalty, and sampling with p = 1. `mode=continuation` is detoxkit's earlier
variant: the continuation only, no heuristic, no penalty, the run's top-p.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch

from ..artefacts import existing_path, find_artefact
from ..backends.sampling import TOP_P_TOLERANCE
from ..corpus import CORPUS_TAG
from ..errors import DetoxkitError
from ..tokens import fit_width
from .base import DetoxMethod, LogitsTransform, _Identity
from .lora import AdapterRunner, adapter_meta, build_top, head_logits, lm_head_of, softcap_of

DEXPERTS_MODES = ("paper", "ensemble-then-nucleus")
GEDI_MODES = ("paper", "continuation")
REMOVED = 10000.0  # what GeDi's heuristic subtracts from a removed token's logit


def model_key(lm) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(lm.name)).name)[-48:]
    rev = re.sub(r"[^A-Za-z0-9]+", "", str(lm.revision).split(":")[-1])[:12]
    return f"{name}-{rev}"


def find_adapters(kind: str, lm, explicit: str | None, train_cmd: str) -> Path:
    """The adapter directory for `lm`: shipped copies are named `<kind>-<model key>`."""
    key = model_key(lm)
    return find_artefact(key, train_hint=train_cmd, explicit=explicit, folder=f"methods/{kind}",
                         shipped=f"methods/{kind}-{key}", is_valid=has_adapter_metadata)


def has_adapter_metadata(path: Path) -> bool:
    return (path / "detoxkit.json").exists()


BINS = 4096  # ranked_prefix's bins per round
RESOLVE = 256  # ... and the most tokens it sorts


def ranked_prefix(key: torch.Tensor, probs: torch.Tensor, limit: float, inclusive: bool,
                  above: torch.Tensor | None = None, _depth: int = 0) -> torch.Tensor:
    """[B, V] mask: each row's tokens, ranked by `key` (descending; -inf: never in), whose
    probability ranked above them (plus `above` [B], mass ranked above every token) is below
    `limit` (at most `limit` if inclusive). Exact without sorting the vocabulary: tokens are
    binned by key, whole bins are in or out by their mass, and only the one bin where the
    limit falls is looked into (its tokens gathered and binned again, sorted once few)."""
    B, V = key.shape
    base = torch.zeros(B, dtype=torch.float64, device=key.device) if above is None else above.double()

    def ok(mass):
        return mass <= limit if inclusive else mass < limit

    live = key > float("-inf")
    if V <= RESOLVE or _depth >= 3:
        values, index = key.topk(V, dim=-1)
        valid = values > float("-inf")
        p = probs.gather(-1, index).double() * valid
        cum = p.cumsum(dim=-1)
        before = base[:, None] + torch.cat([torch.zeros_like(cum[:, :1]), cum[:, :-1]], dim=-1)
        return torch.zeros_like(live).scatter(-1, index, ok(before) & valid)
    # bin = (key - row min) * BINS / row range, truncated: monotone in key, so bins keep the
    # order; excluded tokens go to an extra bin that counts for nothing
    lo = key.masked_fill(~live, float("inf")).amin(dim=-1, keepdim=True)
    width = key.amax(dim=-1, keepdim=True) - lo
    scale = torch.where(width > 0, BINS / width.clamp(min=1e-30), torch.zeros_like(width))
    bins = (key - lo).mul_(scale).clamp_(0, BINS - 1).long().masked_fill_(~live, BINS)
    mass = torch.zeros(B, BINS + 1, dtype=probs.dtype, device=key.device)
    mass = mass.scatter_add_(1, bins, probs)[:, :BINS].double()
    higher = base[:, None] + mass.flip(-1).cumsum(dim=-1).flip(-1) - mass  # mass of higher bins
    whole = ok(higher + mass)  # every token of the bin is in
    crossing = ~whole & ok(higher)  # the bin where the limit falls (at most one per row)
    code = torch.cat([whole.to(torch.int8) + 2 * crossing.to(torch.int8),
                      torch.zeros_like(whole[:, :1], dtype=torch.int8)], dim=1).gather(1, bins)
    keep = code == 1
    inside = code == 2
    k = int(inside.sum(dim=-1).max())
    if k:
        index = inside.to(torch.float32).topk(k, dim=-1).indices  # the crossing bin's tokens
        sub_key = key.gather(1, index).masked_fill(~inside.gather(1, index), float("-inf"))
        offset = (higher * crossing).sum(dim=-1)
        sub = ranked_prefix(sub_key, probs.gather(1, index), limit, inclusive, offset, _depth + 1)
        keep.scatter_(1, index, sub | keep.gather(1, index))
    return keep


def nucleus_mask(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """[B, V] mask of each row's top-p nucleus: the smallest set of most likely tokens whose
    probability reaches top_p, by the sampler's rule (backends/sampling.py: a mass within
    TOP_P_TOLERANCE of top_p counts as reached)."""
    if top_p >= 1.0:
        return torch.ones_like(logits, dtype=torch.bool)
    logits = logits.float()
    keep = ranked_prefix(logits, torch.softmax(logits, dim=-1), top_p - TOP_P_TOLERANCE,
                         inclusive=False)
    return keep.scatter(-1, logits.argmax(dim=-1, keepdim=True), True)  # never empty


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    value = str(value)
    if value not in choices:
        raise DetoxkitError(f"{name}: mode must be one of {', '.join(choices)}, not '{value}'")
    return value


def _paper_only(method: str, mode: str, given: dict[str, Any]) -> None:
    extra = sorted(k for k, v in given.items() if v is not None)
    if mode != "paper" and extra:
        raise DetoxkitError(f"{method}: {', '.join(extra)} apply to mode=paper only "
                            f"(this is mode={mode})")


class _AdapterMethod(DetoxMethod):
    backends = frozenset({"hf"})
    kind = ""
    adapter_names: tuple[str, str] = ("", "")
    train_cmd = ""

    def __init__(self, path: str | None = None):
        self.path = path
        self._tops: dict[tuple[int, str], Any] = {}
        self._active: AdapterRunner | None = None
        self._meta: dict[str, Any] = {}

    def _runner(self, lm) -> AdapterRunner:
        if getattr(lm, "model", None) is None:
            raise DetoxkitError(f"method '{self.name}' needs the transformers model itself")
        path = find_adapters(self.kind, lm, self.path, self.train_cmd.format(model=lm.name))
        key = (id(lm.model), str(path))
        if key not in self._tops:
            self._tops[key] = build_top(lm.model, path, self.adapter_names)
        self._meta = adapter_meta(path)
        self._meta["path"] = str(path)
        self._record_guided_by(self._meta, [CORPUS_TAG])
        if self._active is not None:
            self._active.close()
        self._active = AdapterRunner(lm, self._tops[key])
        return self._active

    def guided_by(self):  # the shipped adapters: trained on the whole training pool
        return self._artefact_guided_by([CORPUS_TAG], self.path,
                                        lambda p: adapter_meta(existing_path(p, has_adapter_metadata)))

    def describe(self):
        out = super().describe()
        if self._meta:
            out["adapters"] = {k: self._meta.get(k) for k in ("path", "base_model", "base_revision",
                                                              "layers", "rank", "rows", "steps",
                                                              "logit_scale")}
        return out


class _DExpertsTransform(LogitsTransform):
    def __init__(self, runner: AdapterRunner, alpha: float, filter_p: float | None):
        self.runner, self.alpha, self.filter_p = runner, alpha, filter_p
        model = runner.model
        self.head = lm_head_of(model)
        self.linear = softcap_of(model) is None

    def _delta(self, input_ids, logits) -> torch.Tensor:
        out = self.runner.advance(input_ids, self.attention_mask)
        h_exp, h_anti = out[0, :, -1], out[1, :, -1]
        if self.linear:
            delta = self.head(h_exp - h_anti).float()
        else:
            model = self.runner.model
            delta = head_logits(model, h_exp) - head_logits(model, h_anti)
        return delta[:, :logits.shape[-1]].to(logits.device, logits.dtype)

    def __call__(self, input_ids, logits):
        delta = self._delta(input_ids, logits)
        if self.filter_p is None:  # ensemble-then-nucleus: the sampler cuts the ensemble
            return logits + self.alpha * delta
        # paper: the base nucleus first (at temperature 1), the ensemble inside it, p = 1
        base = logits.masked_fill(~nucleus_mask(logits, self.filter_p), float("-inf"))
        self.top_p_override = torch.ones(logits.shape[0], dtype=torch.float64, device=logits.device)
        return base + self.alpha * delta


class DExperts(_AdapterMethod):
    """DExperts, LoRA experts from `detoxkit train experts`. mode=paper (default): the base
    logits cut to their filter_p nucleus, + alpha * (expert - anti-expert), sampled with p = 1;
    mode=ensemble-then-nucleus: logits + alpha * (expert - anti-expert), the run's top-p."""

    name = "dexperts"
    kind = "experts"
    adapter_names = ("expert", "antiexpert")
    train_cmd = "detoxkit train experts --model {model}"

    def __init__(self, alpha: float = 2.0, mode: str = "paper", filter_p: float | None = None,
                 path: str | None = None):
        super().__init__(path)
        self.alpha = float(alpha)
        self.mode = _choice("dexperts", mode, DEXPERTS_MODES)
        _paper_only("dexperts", self.mode, {"filter_p": filter_p})
        self.filter_p = None if self.mode != "paper" else float(0.9 if filter_p is None else filter_p)
        if self.filter_p is not None and not 0 < self.filter_p <= 1:
            raise DetoxkitError(f"dexperts: filter_p must be in (0, 1], not {self.filter_p}")

    def settings(self):
        return {"alpha": self.alpha, "mode": self.mode, "filter_p": self.filter_p, "path": self.path}

    def bind(self, lm):
        if self.alpha == 0:
            return _Identity()
        return _DExpertsTransform(self._runner(lm), self.alpha, self.filter_p)


class _GeDiTransform(LogitsTransform):
    """log P(non-toxic | x, v) = -softplus(scale * (s_toxic(v) - s_nontoxic(v)) - class_bias) with
    s_c(v) = (cum_c + log P_c(v | x)) / n: cum_c the class log-likelihood of the tokens scored
    so far (paper: the prompt's after its first, and the continuation; continuation: the
    continuation only), n their number + 1. One [2, B, V] head product per step."""

    def __init__(self, runner: AdapterRunner, method: "GeDi", logit_scale: float):
        self.runner, self.m, self.logit_scale = runner, method, logit_scale
        self.paper = method.mode == "paper"
        self.start: int | None = None  # the prompt's width (the first step's input length)
        self.cum: torch.Tensor | None = None  # [2, B] class log-likelihood of the scored tokens
        self.count: torch.Tensor | None = None  # [B] scored tokens
        self.prev: tuple[torch.Tensor, torch.Tensor] | None = None  # last step's (logits, lse)

    @staticmethod
    def _logprob_of(z: torch.Tensor, lse: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        B = tokens.shape[0]
        return z.gather(-1, tokens.view(1, B, 1).expand(2, B, 1)).squeeze(-1) - lse

    def _mask(self, input_ids) -> torch.Tensor:
        if self.attention_mask is None:
            return torch.ones_like(input_ids, dtype=torch.bool)
        return self.attention_mask.to(input_ids.device).bool()

    def _score_known(self, out, input_ids, mask, lo: int) -> None:
        """Add the class log-likelihoods of the tokens at lo+1 .. T-1, predicted by positions of
        this chunk, once per distinct row (a prompt's samples share them)."""
        B, T = input_ids.shape
        t = out.shape[2]
        lo = max(lo, T - t)
        if lo >= T - 1:
            return
        rows, inverse = torch.unique(torch.cat([input_ids, mask.long()], dim=1), dim=0,
                                     return_inverse=True)
        rep = torch.zeros(len(rows), dtype=torch.long, device=input_ids.device)
        rep.scatter_(0, inverse, torch.arange(B, device=input_ids.device))
        ids_u, mask_u = input_ids[rep], mask[rep]
        acc = torch.zeros(2, len(rep), dtype=torch.float32, device=input_ids.device)
        n = torch.zeros(len(rep), dtype=torch.float32, device=input_ids.device)
        model = self.runner.model
        for pos in range(lo, T - 1):
            z = head_logits(model, out[:, rep, pos - (T - t)])
            valid = (mask_u[:, pos] & mask_u[:, pos + 1]).float()
            acc += valid * self._logprob_of(z, torch.logsumexp(z, dim=-1), ids_u[:, pos + 1])
            n += valid
        self.cum += acc[:, inverse]
        self.count += n[inverse]

    def _advance(self, input_ids) -> torch.Tensor:
        """Class log-likelihoods up to the last token; returns n [B] (scored tokens + the
        candidate)."""
        B, T = input_ids.shape
        if self.start is None:
            self.start = T
        if self.cum is None:
            self.cum = torch.zeros(2, B, dtype=torch.float32, device=input_ids.device)
            self.count = torch.zeros(B, dtype=torch.float32, device=input_ids.device)
        mask = self._mask(input_ids)
        out = self.runner.advance(input_ids, self.attention_mask)  # [2, B, t, H]
        t = out.shape[2]
        if self.prev is not None:  # the token sampled after the previous call
            q = T - t
            valid = (mask[:, q - 1] & mask[:, q]).float()
            self.cum += valid * self._logprob_of(*self.prev, input_ids[:, q])
            self.count += valid
        self._score_known(out, input_ids, mask, 0 if self.paper else self.start - 1)
        z = head_logits(self.runner.model, out[:, :, -1])  # [2, B, V]
        self.prev = (z, torch.logsumexp(z, dim=-1))
        return self.count + 1

    def __call__(self, input_ids, logits):
        m = self.m
        n = self._advance(input_ids)
        z, lse = self.prev
        V = logits.shape[-1]
        shift = (self.cum[1] - lse[1]) - (self.cum[0] - lse[0])  # [B]
        x = z[1, :, :V] - z[0, :, :V]
        x.add_(shift[:, None]).mul_(self.logit_scale / n[:, None]).sub_(m.class_bias)
        log_post = fit_width(torch.nn.functional.softplus(x).neg_(), logits)  # log P(non-toxic | x, v)
        if not self.paper:
            return logits + m.weight * log_post
        log_post = log_post.float()
        out = torch.log_softmax(logits.float(), dim=-1).add_(log_post, alpha=m.weight)
        out = self._heuristic(out, log_post)
        out.sub_(out.max(dim=-1, keepdim=True).values).add_(m.rep_penalty_scale)  # max: exactly the scale
        out = self._repetition_penalty(out, input_ids)
        self.top_p_override = torch.ones(logits.shape[0], dtype=torch.float64, device=logits.device)
        return out.to(logits.dtype)

    def _heuristic(self, out, log_post):
        """GeDi's filter: ranked from the least desired, a token whose cumulative probability
        (of `out`) is below filter_p and whose P(desired) is below target_p loses 10,000. So
        a token stays if the tokens more desired than it hold at most 1 - filter_p, or if its
        P(desired) is at least target_p."""
        m = self.m
        if m.filter_p <= 0 or m.target_p_biased <= 0:
            return out
        probs = torch.softmax(out, dim=-1)
        desired = log_post >= math.log(m.target_p_biased)  # kept whatever their rank
        kept = desired | ranked_prefix(log_post.masked_fill(desired, float("-inf")), probs,
                                       1.0 - m.filter_p, True,
                                       (probs.double() * desired).sum(dim=-1))
        return out.sub_(REMOVED * (~kept).to(out.dtype))

    def _repetition_penalty(self, out, input_ids):
        """GeDi's penalty (CTRL's, on logits shifted to max rep_penalty_scale): every earlier
        token, once per occurrence and in order, is divided by repetition_penalty (a negative
        one is multiplied instead when rep_penalty_scale is 0); a penalised maximum shifts the
        row back to max rep_penalty_scale. Prompt tokens only with penalize_prompt."""
        m = self.m
        if m.repetition_penalty == 1.0:
            return out
        B, T = input_ids.shape
        mask = self._mask(input_ids)
        rows = torch.arange(B, device=out.device)
        scale, rp = m.rep_penalty_scale, m.repetition_penalty
        for j in range(0 if m.penalize_prompt else self.start, T):
            tok = input_ids[:, j].clamp(max=out.shape[-1] - 1)
            valid = mask[:, j]
            val = out[rows, tok]
            if scale > 0:
                rescale = valid & (val == scale)
                out[rows, tok] = torch.where(valid, val / rp, val)
                if rescale.any():
                    r = rescale.nonzero().squeeze(-1)
                    out[r] = out[r] - out[r].max(dim=-1, keepdim=True).values + scale
            else:
                out[rows, tok] = torch.where(valid, torch.where(val < 0, val * rp, val / rp), val)
        return out

    def skip(self, input_ids, logits):
        if self.start is None:  # a gate closed from the first step: the prompt ends here
            self.start = input_ids.shape[1]
        return None  # the runner keeps the captured states; __call__ catches up


# GeDi's detoxification defaults (salesforce/GeDi generate_GeDi.py, --mode detoxify)
GEDI_PAPER = {"class_bias": 2.0, "filter_p": 0.8, "target_p": 0.8, "repetition_penalty": 1.2,
              "rep_penalty_scale": 10.0, "penalize_prompt": False}
GEDI_CONTINUATION = {"class_bias": 0.0, "filter_p": 0.0, "target_p": 0.0, "repetition_penalty": 1.0,
                     "rep_penalty_scale": 0.0, "penalize_prompt": False}


class GeDi(_AdapterMethod):
    """GeDi: Bayes-rule reweighting by a class-conditional LM (LoRA per control code).
    mode=paper (default): GeDi's reference decoding (prompt + continuation likelihoods, class
    bias, filter_p / target_p heuristic, repetition penalty, p = 1); mode=continuation:
    continuation likelihoods only, the run's top-p."""

    name = "gedi"
    kind = "gedi"
    adapter_names = ("nontoxic", "toxic")
    train_cmd = "detoxkit train gedi --model {model}"

    def __init__(self, weight: float = 30.0, mode: str = "paper", class_bias: float | None = None,
                 filter_p: float | None = None, target_p: float | None = None,
                 repetition_penalty: float | None = None, rep_penalty_scale: float | None = None,
                 penalize_prompt: bool | None = None, path: str | None = None):
        super().__init__(path)
        self.weight = float(weight)
        self.mode = _choice("gedi", mode, GEDI_MODES)
        given = {"filter_p": filter_p, "target_p": target_p, "repetition_penalty": repetition_penalty,
                 "rep_penalty_scale": rep_penalty_scale, "penalize_prompt": penalize_prompt}
        _paper_only("gedi", self.mode, given)
        defaults = GEDI_PAPER if self.mode == "paper" else GEDI_CONTINUATION
        given["class_bias"] = class_bias
        v = {k: defaults[k] if given[k] is None else given[k] for k in defaults}
        self.class_bias, self.filter_p = float(v["class_bias"]), float(v["filter_p"])
        self.target_p, self.repetition_penalty = float(v["target_p"]), float(v["repetition_penalty"])
        self.rep_penalty_scale, self.penalize_prompt = float(v["rep_penalty_scale"]), bool(v["penalize_prompt"])
        if not (0 <= self.filter_p <= 1 and 0 <= self.target_p <= 1):
            raise DetoxkitError("gedi: filter_p and target_p must be in [0, 1]")
        if self.repetition_penalty < 1:
            raise DetoxkitError("gedi: repetition_penalty must be >= 1")
        # generate_GeDi.py moves target_p by the class bias, so that it stays a threshold on
        # the unbiased P(desired)
        self.target_p_biased = self.target_p
        if 0 < self.target_p < 1:
            inv = math.log(self.target_p / (1 - self.target_p)) + self.class_bias
            self.target_p_biased = 1 / (1 + math.exp(-inv))

    def settings(self):
        out = {"weight": self.weight, "mode": self.mode, "class_bias": self.class_bias}
        if self.mode == "paper":
            out.update(filter_p=self.filter_p, target_p=self.target_p,
                       repetition_penalty=self.repetition_penalty,
                       rep_penalty_scale=self.rep_penalty_scale, penalize_prompt=self.penalize_prompt)
        out["path"] = self.path
        return out

    def bind(self, lm):
        if self.weight == 0:
            return _Identity()
        runner = self._runner(lm)
        return _GeDiTransform(runner, self, float(self._meta.get("logit_scale") or 1.0))
