"""TRACE (Weng, Wang, Van den Broeck 2025, "TRACE Back from the Future"): reweight the
LM's next-token distribution by the exact expected attribute probability of the whole
continuation, computed under an HMM distilled from the LM.

    p(x_t | x_<t, attr)  ∝  p_LM(x_t | x_<t) * E_HMM[ p(attr | x_1:n) | x_<=t ] ^ strength

The attribute classifier factorises over tokens, p(attr | x_1:n) = exp(b + sum_i w(x_i))
with w <= 0 (each token can only lower the attribute's probability; a noisy-OR over
tokens), so the expectation over all futures up to the generation length n is exact
and cheap: with beta_k(z) = E[prod of exp(w) over the next k tokens | z_t = z]
(precomputed per remaining length k, methods/hmm.py) and the forward filter
p(z_t | x_<t) kept incrementally, for every candidate v

    E(v) = exp(w_prefix + w(v)) * sum_z p(z_t|x_<t) B[z,v] beta_k(z) / sum_z p(z_t|x_<t) B[z,v]

which is one [2B, H] x [H, M] product per step (M = token columns of the HMM).

Attributes are just classifiers (`detoxkit train trace-classifier --attribute NAME`,
seconds; detoxkit/training/trace_classifier.py): `nontoxic` (the corpus's is_offensive
label) and `nonpolitical` (rows that mention no word of a small politics lexicon), with
the same HMM (`detoxkit train hmm`, detoxkit/training/hmm.py).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Callable

import torch

from ..artefacts import artefact_name, existing_path, find_artefact, load_table, tokenizer_fingerprint
from ..corpus import CORPUS_TAG
from ..errors import DetoxkitError
from ..hygiene import recorded_guided_by
from ..tokens import pad_to_width, vocab_width
from .base import ALL_BACKENDS, DetoxMethod, LogitsTransform, _Identity
from .hmm import HMM

# Words marking a political topic; `nonpolitical` rows contain none of them.
POLITICS = re.compile(
    r"\b(politic\w*|government\w*|president\w*|election\w*|elect|elected|vote[sd]?|voting|voters?|"
    r"democra\w*|republican\w*|liberal\w*|conservative\w*|senat\w*|congress\w*|parliament\w*|"
    r"minister\w*|obama|trump|clinton|hillary|bush|romney|campaign\w*|polic(?:y|ies)|legislat\w*|"
    r"governor\w*|mayor\w*|candidate\w*|ballot\w*|socialis\w*|communis\w*|capitalis\w*|"
    r"tax|taxes|immigration|gop|partisan\w*|white house|prime minister)\b", re.IGNORECASE)

# attribute -> (label of a corpus row: 1 when the row HAS the attribute, what guides it)
ATTRIBUTES: dict[str, tuple[Callable[[Any], int], list[str]]] = {
    "nontoxic": (lambda row: int(not row.is_offensive), [CORPUS_TAG]),
    "nonpolitical": (lambda row: int(POLITICS.search(row.text) is None),
                     [f"{CORPUS_TAG} (text only)", "lexicon:detoxkit-politics"]),
}
HMM_TRAIN = "detoxkit train hmm --model MODEL"
CLF_TRAIN = "detoxkit train trace-classifier --model MODEL --attribute {attribute}"


# ---- decoding ----------------------------------------------------------------------------

class TraceTables:
    """Everything a transform needs, built once per (HMM, classifier, width): probability
    tables in float32 for the per-step products, beta per remaining length (cached)."""

    def __init__(self, hmm: HMM, log_q: torch.Tensor, intercept: float = 0.0):
        """log_q: [V] dense per-token log-factor w(v) <= 0 of the classifier (0 = neutral);
        intercept: its b <= 0 (a constant per row: it never changes which token is drawn)."""
        V = hmm.vocab_size
        log_q = pad_to_width(log_q.double(), V)
        self.hmm = hmm
        self.log_q = log_q
        self.intercept = float(intercept)
        self.col = hmm.column_of(V)
        rare = self.col == hmm.ids.numel()
        self.q_rare_mean = float(log_q[rare].exp().mean()) if bool(rare.any()) else 0.0
        self.q_cols = log_q[hmm.ids.long()].exp()
        self.emit = hmm.emission_table().float()  # [M, H] per-token emission (rows = columns)
        self.emit_T = self.emit.T.contiguous()  # [H, M]
        self.A = hmm.log_A.float().exp()
        self.pi = hmm.log_pi.float().exp()
        self._beta: tuple[torch.Tensor, torch.Tensor] | None = None
        self._fitted: dict[tuple, tuple[torch.Tensor, ...]] = {}

    def beta(self, k_max: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(beta [k_max+1, H] float32, scaled to max 1 per row; log of that scale [k_max+1])."""
        if self._beta is None or self._beta[0].shape[0] <= k_max:
            b = self.hmm.backward_expectations(self.q_cols, self.q_rare_mean, k_max)
            scale = b.max(dim=1, keepdim=True).values.clamp(min=1e-300)
            self._beta = ((b / scale).float(), scale.squeeze(1).log())
        return self._beta

    def on(self, device, width: int) -> tuple[torch.Tensor, ...]:
        """(emit_T, emit, A, pi, col [width], log_q [width]) on `device` for logits of `width`."""
        key = (str(device), width)
        if key not in self._fitted:
            # logits wider than the tokenizer: neutral, rare emission
            col = pad_to_width(self.col, width, fill=self.hmm.ids.numel())
            log_q = pad_to_width(self.log_q.float(), width)
            self._fitted[key] = tuple(t.to(device) for t in
                                      (self.emit_T, self.emit, self.A, self.pi, col, log_q))
        return self._fitted[key]


class _TraceTransform(LogitsTransform):
    def __init__(self, tables: TraceTables, strength: float, horizon: int):
        self.tables, self.strength, self.horizon = tables, strength, horizon
        self.start: int | None = None  # prompt width (first call's T)
        self.seen = 0  # columns of input_ids absorbed into the state
        self.prior: torch.Tensor | None = None  # [B, H] p(z_t | x_<t)
        self.log_prefix: torch.Tensor | None = None  # [B] sum of w over generated tokens

    def _absorb(self, input_ids: torch.Tensor, width: int) -> None:
        """Advance the forward filter over the columns not seen yet (prompt at the first call)."""
        B, T = input_ids.shape
        emit_T, emit, A, pi, col, log_q = self.tables.on(input_ids.device, width)
        if self.start is None:
            self.start = T
            self.prior = pi.expand(B, -1).clone()
            self.log_prefix = torch.full((B,), self.tables.intercept, dtype=torch.float64,
                                         device=input_ids.device)
        mask = self.attention_mask
        for j in range(self.seen, T):
            x = input_ids[:, j].clamp(0, col.shape[0] - 1)
            post = self.prior * emit[col[x]]
            post = post / post.sum(-1, keepdim=True).clamp(min=1e-30)
            new = post @ A
            real = (mask[:, j].to(new.device).bool() if mask is not None and mask.shape[1] == T
                    else torch.ones(B, dtype=torch.bool, device=new.device))
            self.prior = torch.where(real[:, None], new, self.prior)
            if j >= self.start:
                self.log_prefix += torch.where(real, log_q[x].double(), 0.0)
        self.seen = T

    def expected_log(self, input_ids: torch.Tensor, width: int) -> torch.Tensor:
        """[B, width] log E[p(attr | x_1:n) | x_<t, x_t = v] for every candidate v, the
        continuation ending `horizon` tokens after the prompt (max_new_tokens when the
        sampler sets it)."""
        self._absorb(input_ids, width)
        emit_T, _, _, _, col, log_q = self.tables.on(input_ids.device, width)
        n = self.max_new_tokens or self.horizon
        k = max(n - (input_ids.shape[1] - self.start) - 1, 0)  # tokens still to come after v
        beta, log_scale = self.tables.beta(k)
        b = beta[k].to(self.prior.device)
        both = torch.cat([self.prior * b, self.prior]) @ emit_T  # [2B, M]
        B = self.prior.shape[0]
        ratio = both[:B].clamp(min=1e-30).log() - both[B:].clamp(min=1e-30).log()  # [B, M]
        per_row = (self.log_prefix + float(log_scale[k])).float()
        return ratio.index_select(1, col) + log_q[None] + per_row[:, None]

    def __call__(self, input_ids, logits):
        log_e = self.expected_log(input_ids, logits.shape[-1])
        return logits + self.strength * log_e.to(logits.device, logits.dtype)

    def skip(self, input_ids, logits):
        self._absorb(input_ids, logits.shape[-1])


class Trace(DetoxMethod):
    """logits + strength * log E_HMM[p(attr | continuation) | prefix, candidate]."""

    name = "trace"
    backends = ALL_BACKENDS

    def __init__(self, strength: float = 3.0, attribute: str = "nontoxic", horizon: int = 20,
                 hmm: str | None = None, classifier: str | None = None):
        try:
            self.strength = float(strength)
            self.horizon = int(horizon)
        except (TypeError, ValueError):
            raise DetoxkitError(f"trace: strength must be a number and horizon an integer, "
                                f"got strength={strength!r}, horizon={horizon!r}") from None
        if self.strength < 0 or not math.isfinite(self.strength):
            raise DetoxkitError(f"trace: strength must be >= 0, got {strength}")
        if self.horizon < 1:
            raise DetoxkitError(f"trace: horizon must be >= 1, got {horizon}")
        if classifier is None and attribute not in ATTRIBUTES:
            raise DetoxkitError(f"trace: unknown attribute '{attribute}' (known: "
                                f"{', '.join(sorted(ATTRIBUTES))}; or give classifier=PATH)")
        self.attribute = str(attribute)
        self.hmm_path, self.classifier_path = hmm, classifier
        self._tables: dict[tuple, TraceTables] = {}
        self._meta: dict[str, Any] = {}

    def settings(self):
        return {"strength": self.strength, "attribute": self.attribute, "horizon": self.horizon,
                "hmm": self.hmm_path, "classifier": self.classifier_path}

    def guided_by(self):
        if "guided_by" in self._meta:
            return list(self._meta["guided_by"])
        if self.classifier_path:
            meta = load_table(existing_path(self.classifier_path))[1]
            return recorded_guided_by(meta, [f"trace-classifier:{Path(self.classifier_path).name}"])
        return list(ATTRIBUTES[self.attribute][1])

    def _files(self, tokenizer) -> tuple[Path, Path]:
        hmm = find_artefact(artefact_name("trace-hmm", tokenizer), train_hint=HMM_TRAIN,
                            explicit=self.hmm_path)
        clf = find_artefact(artefact_name(f"trace-{self.attribute}", tokenizer),
                            train_hint=CLF_TRAIN.format(attribute=self.attribute),
                            explicit=self.classifier_path)
        return hmm, clf

    def tables(self, tokenizer) -> TraceTables:
        hmm_path, clf_path = self._files(tokenizer)
        key = (str(hmm_path), hmm_path.stat().st_mtime, str(clf_path), clf_path.stat().st_mtime)
        if key not in self._tables:
            fp = tokenizer_fingerprint(tokenizer)
            hmm = HMM.load(hmm_path)
            tensors, meta = load_table(clf_path)
            for path, m in ((hmm_path, hmm.meta), (clf_path, meta)):
                if m.get("tokenizer") and m["tokenizer"] != fp:
                    raise DetoxkitError(f"trace: {path} was built for another tokenizer "
                                        f"({m['tokenizer']}, this model's is {fp})")
            if "weights" not in tensors or "ids" not in tensors:
                raise DetoxkitError(f"trace: {clf_path} is not a TRACE classifier (ids, weights)")
            V = vocab_width(tokenizer)
            if hmm.vocab_size < V:
                raise DetoxkitError(f"trace: {hmm_path} covers {hmm.vocab_size} token ids, "
                                    f"the tokenizer has {V}")
            log_q = torch.zeros(hmm.vocab_size, dtype=torch.float64)
            ids = tensors["ids"].long()
            keep = ids < hmm.vocab_size
            log_q[ids[keep]] = tensors["weights"].double()[keep].clamp(max=0.0)
            intercept = float(tensors["intercept"].reshape(-1)[0]) if "intercept" in tensors else 0.0
            self._tables = {key: TraceTables(hmm, log_q, min(intercept, 0.0))}
            self._meta = {"hmm": {"file": hmm_path.name, **{k: hmm.meta.get(k) for k in
                                  ("model", "hidden", "sequences", "epochs", "token_columns")}},
                          "classifier": {"file": clf_path.name, "attribute": meta.get("attribute"),
                                         "rows": meta.get("rows")},
                          "guided_by": recorded_guided_by(meta, self.guided_by())}
        return self._tables[key]

    def describe(self):
        out = super().describe()
        out.update({k: v for k, v in self._meta.items() if k != "guided_by"})
        return out

    def bind(self, lm):
        if self.strength == 0:
            return _Identity()
        return _TraceTransform(self.tables(lm.tokenizer), self.strength, self.horizon)
