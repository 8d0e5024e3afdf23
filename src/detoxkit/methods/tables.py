"""Token-table methods: vocabulary shifting and CFL.

Vocabulary shift (Gehman et al. 2020, after Ghosh et al. 2017): a learned
non-toxic bias over the vocabulary added to the logits, `logits + strength * w`.
`detoxkit train vocab-shift` learns w as the coefficients of an L2-regularised
logistic regression from token presence to the non-toxic label over the
corpus's training pool (tokenized with the generator's tokenizer), scaled to
unit maximum magnitude; tokens never seen get 0.

CFL (Madhavan et al. 2023): the average treatment effect (ATE) of each word on a scorer's
toxicity, estimated as the authors' reference code does (`detoxkit train cfl`, the `paper`
estimator in training/cfl_paper.py: per word, stopwords skipped, each word masked and filled
with its 5 best fills, each counterfactual's effect clipped at 0, a plain mean) and spread over
the generator's tokens. At decoding time a candidate's logit is lowered by
`strength * max(effect, 0)` (tokens that raise toxicity by more than `min_effect`).
`variant=substitute` reads detoxkit's earlier table instead (per token, one random frequent
non-toxic substitute, signed effects shrunk towards 0; `detoxkit train cfl --estimator
substitute`). The table doubles as a token-attribution source for reports (`token_effects`).
"""

from __future__ import annotations

import json
from typing import Any

import torch

from ..artefacts import artefact_name, dense_from_sparse, existing_path, find_artefact, load_table
from ..corpus import CORPUS_TAG
from ..tokens import fit_width, vocab_width
from .base import ALL_BACKENDS, DetoxMethod, LogitsTransform


class _AddBias(LogitsTransform):
    row_independent = True

    def __init__(self, bias: torch.Tensor):
        self.bias = bias
        self._fitted: dict[tuple, torch.Tensor] = {}

    def __call__(self, input_ids, logits):
        key = (logits.shape[-1], logits.device, logits.dtype)
        if key not in self._fitted:
            self._fitted[key] = fit_width(self.bias, logits)
        return logits + self._fitted[key]


class _TokenTableMethod(DetoxMethod):
    """A method reading a per-token table shipped in data/methods or trained into the cache."""

    backends = ALL_BACKENDS
    kind = ""  # artefact kind
    train_cmd = ""
    value_key = ""  # tensor holding the per-token values
    meta_keys: tuple[str, ...] = ()  # table metadata recorded in describe()
    _meta: dict[str, Any]
    path: str | None

    def table(self, tokenizer) -> torch.Tensor:
        """Dense [V] table for this tokenizer (0 where a token was never observed)."""
        path = find_artefact(artefact_name(self.kind, tokenizer), train_hint=self.train_cmd,
                             explicit=self.path)
        tensors, meta = load_table(path)
        self._meta = {"file": path.name, **{k: meta[k] for k in self.meta_keys if k in meta}}
        self._record_guided_by(meta, self.shipped_guided_by(meta))
        return dense_from_sparse(tensors["ids"], tensors[self.value_key], vocab_width(tokenizer))

    def shipped_guided_by(self, meta: dict) -> list[str]:
        """What a table without a guided_by record (the shipped ones) was built from."""
        raise NotImplementedError

    def guided_by(self):
        def read(path):
            return load_table(existing_path(path))[1]

        fallback = self.shipped_guided_by(read(self.path) if self.path else {})
        return self._artefact_guided_by(fallback, self.path, read)

    def describe(self):
        out = super().describe()
        if self._meta:
            out["table"] = self._meta
        return out


class VocabShift(_TokenTableMethod):
    """logits + strength * (learned non-toxic association of each token)."""

    name = "vocab-shift"
    kind = "vocab_shift"
    value_key = "values"
    meta_keys = ("rows", "created_by")
    train_cmd = "detoxkit train vocab-shift --model MODEL"

    def __init__(self, strength: float = 3.0, path: str | None = None):
        self.strength = float(strength)
        self.path = path
        self._meta: dict[str, Any] = {}

    def settings(self):
        return {"strength": self.strength, "path": self.path}

    def shipped_guided_by(self, meta):
        return [CORPUS_TAG]

    def vector(self, tokenizer) -> torch.Tensor:
        return self.table(tokenizer)

    def bind(self, lm):
        if self.strength == 0:
            from .base import _Identity

            return _Identity()
        return _AddBias(self.strength * self.vector(lm.tokenizer))


CFL_VARIANTS = {"paper": "cfl", "substitute": "cfl-substitute"}  # variant -> table kind


class CFL(_TokenTableMethod):
    """Lower each candidate's logit by strength * its causal effect on toxicity (ATE table)."""

    name = "cfl"
    kind = "cfl"
    value_key = "effects"
    meta_keys = ("scorer", "estimator", "filler", "sentences", "created_by")
    train_cmd = "detoxkit train cfl --model MODEL"

    def __init__(self, strength: float = 20.0, min_effect: float = 0.0, variant: str = "paper",
                 path: str | None = None):
        from ..errors import DetoxkitError

        if variant not in CFL_VARIANTS:
            raise DetoxkitError(f"cfl: variant must be one of {', '.join(CFL_VARIANTS)}, "
                                f"not {variant!r}")
        self.strength = float(strength)
        self.min_effect = float(min_effect)
        self.variant = variant
        self.kind = CFL_VARIANTS[variant]
        if variant == "substitute":
            self.train_cmd = "detoxkit train cfl --estimator substitute --model MODEL"
        self.path = path
        self._meta: dict[str, Any] = {}

    def settings(self):
        return {"strength": self.strength, "min_effect": self.min_effect, "variant": self.variant,
                "path": self.path}

    def shipped_guided_by(self, meta):
        # the scorer whose output the effects were estimated on (the shipped tables: profanity-svm,
        # itself fitted on the corpus) and the whole-pool corpus sentences they were estimated on
        return [meta.get("scorer", "profanity-svm"), CORPUS_TAG]

    def effects(self, tokenizer) -> torch.Tensor:
        """Dense [V] effect per token id: how much the token raises the scorer's toxicity
        (higher = more toxic; 0 where never observed; never negative in the paper table)."""
        return self.table(tokenizer)

    def bind(self, lm):
        if self.strength == 0:
            from .base import _Identity

            return _Identity()
        eff = self.effects(lm.tokenizer)
        penalty = torch.where(eff > self.min_effect, eff, torch.zeros_like(eff)).clamp(min=0)
        return _AddBias(-self.strength * penalty)


def token_effects(tokenizer, path: str | None = None, min_count: int = 1,
                  variant: str = "paper") -> dict[str, float]:
    """The CFL table as {token text: ATE} (for reports and attribution)."""
    cfl = CFL(variant=variant)
    p = find_artefact(artefact_name(cfl.kind, tokenizer), train_hint=cfl.train_cmd, explicit=path)
    tensors, _ = load_table(p)
    ids, eff = tensors["ids"].tolist(), tensors["effects"].tolist()
    counts = tensors["counts"].tolist() if "counts" in tensors else [min_count] * len(ids)
    pieces = tokenizer.batch_decode([[i] for i in ids])
    return {piece: round(e, 5) for piece, e, c in zip(pieces, eff, counts) if c >= min_count}


def export_effects(tokenizer, out_path, path: str | None = None) -> int:
    table = token_effects(tokenizer, path)
    ordered = dict(sorted(table.items(), key=lambda kv: -kv[1]))
    with open(out_path, "w", encoding="utf-8") as fh:
        json.dump(ordered, fh, ensure_ascii=False, indent=0)
    return len(ordered)
