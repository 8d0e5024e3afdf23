"""PPLM (Dathathri et al., "Plug and Play Language Models", ICLR 2020), discriminator variant.

An attribute head (a linear classifier on the mean of the generator's last hidden
states, trained with the generator frozen: `detoxkit train pplm-head`) steers
decoding. At every step, with the tokens x_0..x_{T-1} so far:

1. the cached keys/values of x_0..x_{T-2} (the "past") get a perturbation delta,
   found by `num_iterations` normalised gradient steps of size `stepsize` on
       -log P_head(non-toxic | mean(h_0..h_{T-2}, h_{T-1}(past + delta), h_horizon))
       + kl_scale * KL(p(. | past + delta) || p(. | past))
   where h_horizon is the hidden state of the expected next-token embedding
   (horizon 1); each layer's gradient is divided by its norm ** gamma;
2. x_{T-1} is run through the perturbed past, giving the perturbed next-token
   distribution; the perturbed past (with its new entry) is kept for the next step;
3. the output is the geometric-mean fusion p_pert ** gm_scale * p ** (1 - gm_scale),
   returned as logits + gm_scale * (log p_pert - log p_own) (equal up to a per-row
   constant, which sampling ignores; it also keeps -inf from methods earlier in a chain).

`mode=paper` (default) computes this as the reference code does (uber-research/PPLM
run_pplm.py `perturb_past` / `generate_text_pplm`, and alisawuffles/DExperts
generation/pplm_generation.py, whose toxicity protocol the published DExperts table
uses; its settings are the defaults here):
- h_{T-1}(past + delta) enters the head's mean detached, so the head's gradient reaches
  the past only through the horizon state (and the KL term);
- the KL floors both distributions at 1e-15 (the reference's SMALL_CONST correction);
- `window` keeps the FIRST `window` positions of the past (the reference's mask);
- nucleus sampling truncates the fused distribution before it is renormalised: the
  transform sets a per-row top-p of top_p / sum(p_pert ** gm * p ** (1 - gm)).
`mode=direct-path` is detoxkit's earlier variant: the gradient also flows through
h_{T-1}(past + delta) directly, the KL clamps log p at -1e4, `window` keeps the LAST
positions and top-p applies to the renormalised fusion.

The transform keeps two KV caches of the generator for its rows (unperturbed and
perturbed), so it costs about 1 + num_iterations * (2 forwards + 1 backward) + 1
forwards per step: the slow baseline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..artefacts import existing_path
from ..corpus import CORPUS_TAG
from ..errors import DetoxkitError
from ..tokens import fit_width, position_ids
from .base import DetoxMethod, LogitsTransform, _Identity

CLASSES = ("non_toxic", "toxic")  # the head's classes; PPLM steers towards class 0
TRAIN_CMD = "detoxkit train pplm-head --model {model}"
MODES = ("paper", "direct-path")
_TINY = 1e-15  # PPLM's SMALL_CONST: keeps logs and norms finite


def head_filename(lm) -> str:
    from .experts import model_key

    return f"pplm-{model_key(lm)}.safetensors"


def find_head(lm, explicit: str | None = None) -> Path:
    """The head for `lm`: explicit path, cache dir, then shipped package data."""
    from ..artefacts import find_artefact

    return find_artefact(head_filename(lm), train_hint=TRAIN_CMD.format(model=lm.name), explicit=explicit)


def load_head(path: Path) -> tuple[torch.nn.Linear, dict[str, str]]:
    from ..artefacts import load_table

    tensors, meta = load_table(path)
    if set(tensors) != {"weight", "bias"} or tensors["weight"].dim() != 2:
        raise DetoxkitError(f"{path} is not a PPLM head (expected 'weight' [2, H] and 'bias' [2])")
    w, b = tensors["weight"].float(), tensors["bias"].float()
    head = torch.nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        head.weight.copy_(w)
        head.bias.copy_(b)
    head.requires_grad_(False)
    return head, meta


# ---- KV caches as plain tensors -----------------------------------------------------------------

def _as_cache(kv: list[tuple[torch.Tensor, torch.Tensor]]):
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=[(k, v) for k, v in kv])


def _tensors_of(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if hasattr(cache, "layers"):  # transformers >= 4.56
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))


def _floored(p: torch.Tensor) -> torch.Tensor:
    """PPLM's correction: probabilities <= SMALL_CONST get SMALL_CONST added (finite logs)."""
    return p + _TINY * (p <= _TINY).float()


class _PPLMTransform(LogitsTransform):
    def __init__(self, lm, head: torch.nn.Linear, method: "PPLM"):
        from ..backends.hf.sampler import cache_kwarg

        self.model = lm.model
        self.base = lm.model.base_model  # the decoder without the LM head
        self.cache_arg = cache_kwarg(self.base)
        self.embed = lm.model.get_input_embeddings()
        self.m = method
        self.head = head.to(lm.model.device)
        self.unpert: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # x_0..x_{done-1}
        self.pert: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.done = 0  # positions in both caches
        self.hsum: torch.Tensor | None = None  # [B, H] unperturbed last hidden states, summed
        self.count: torch.Tensor | None = None  # [B] positions in hsum (padding excluded)
        self.last_unperturbed: torch.Tensor | None = None  # own unperturbed logits (checks)

    # -- forwards -------------------------------------------------------------------------------
    def _forward(self, kv, mask, positions, ids=None, embeds=None):
        """Last hidden states [B, t, H] and the extended cache tensors."""
        kwargs = {self.cache_arg: _as_cache(kv) if kv else None}
        out = self.base(input_ids=ids, inputs_embeds=embeds, attention_mask=mask,
                        position_ids=positions, use_cache=True, **kwargs)
        from ..backends.hf.sampler import cache_of

        return out.last_hidden_state, _tensors_of(cache_of(out))

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        from .lora import head_logits

        return head_logits(self.model, hidden)

    @torch.no_grad()
    def _catch_up(self, input_ids, mask, positions, end: int) -> None:
        """Run positions done..end-1 through both caches (prefill, or steps a gate skipped)."""
        if self.hsum is None:
            B, H = input_ids.shape[0], self.embed.weight.shape[1]
            self.hsum = torch.zeros(B, H, dtype=torch.float32, device=input_ids.device)
            self.count = torch.zeros(B, dtype=torch.float32, device=input_ids.device)
        if end <= self.done:
            return
        ids = input_ids[:, self.done:end]
        pos, m = positions[:, self.done:end], mask[:, :end]
        if self.unpert is None:  # prefill: each distinct prompt row once
            rows, inverse = torch.unique(torch.cat([ids, m], dim=1), dim=0, return_inverse=True)
            n = ids.shape[1]
            row_mask = rows[:, n:]
            h, kv = self._forward(None, row_mask, position_ids(row_mask), ids=rows[:, :n])
            h = h.index_select(0, inverse)
            self.unpert = [(k.index_select(0, inverse), v.index_select(0, inverse)) for k, v in kv]
            self.pert = self.unpert
        else:
            same = self.pert is self.unpert
            h, self.unpert = self._forward(self.unpert, m, pos, ids=ids)
            self.pert = self.unpert if same else self._forward(self.pert, m, pos, ids=ids)[1]
        w = mask[:, self.done:end].float()
        self.hsum += (h.float() * w[..., None]).sum(1)
        self.count += w.sum(1)
        self.done = end

    # -- one step ---------------------------------------------------------------------------------
    def __call__(self, input_ids, logits):
        B, T = input_ids.shape
        mask = self.attention_mask
        mask = torch.ones_like(input_ids) if mask is None else mask.to(input_ids.device)
        positions = position_ids(mask)
        self._catch_up(input_ids, mask, positions, T - 1)
        last, m, pos = input_ids[:, T - 1:], mask[:, :T], positions[:, T - 1:]
        with torch.no_grad():
            h_last, unpert_next = self._forward(self.unpert, m, pos, ids=last)
            unpert_logits = self._logits(h_last[:, -1])
        self.last_unperturbed = unpert_logits
        delta = self._perturbation(last, m, pos, unpert_next, unpert_logits) if self.done else None
        with torch.no_grad():
            past = self.pert if delta is None else [(k + dk, v + dv) for (k, v), (dk, dv)
                                                   in zip(self.pert, delta)]
            h_pert, self.pert = self._forward(past, m, pos, ids=last)
            pert_logits = self._logits(h_pert[:, -1])
            w = mask[:, T - 1].float()
            self.hsum += h_last[:, -1].float() * w[:, None]
            self.count += w
        self.unpert, self.done = unpert_next, T
        log_pert, log_own = torch.log_softmax(pert_logits, -1), torch.log_softmax(unpert_logits, -1)
        if self.m.mode == "paper":
            self.top_p_override = self._fused_top_p(log_pert, log_own)
        return logits + fit_width(self.m.gm_scale * (log_pert - log_own), logits)

    def _fused_top_p(self, log_pert, log_own) -> torch.Tensor | None:
        """The reference filters p_pert ** gm * p ** (1 - gm) at top_p BEFORE renormalising it
        (its mass is <= 1), so the nucleus of the normalised fusion is at top_p / that mass."""
        top_p = getattr(self.sampling, "top_p", None)
        if top_p is None or top_p >= 1.0:
            return None
        gm = self.m.gm_scale
        mass = torch.logsumexp(gm * log_pert + (1 - gm) * log_own, dim=-1).exp()
        return (top_p / mass.double()).clamp(max=1.0)

    def skip(self, input_ids, logits):
        return None  # the caches catch up (both chunks in one forward) when next called

    def _window(self, mask: torch.Tensor, S: int) -> torch.Tensor:
        """[B, 1, S, 1] weights of the past positions that are perturbed (padding excluded)."""
        w = mask[:, :S].float()
        if self.m.window and self.m.mode == "paper":  # the first `window` tokens of each row
            w = w * ((w.cumsum(-1) - 1) < self.m.window).float()
        elif 0 < self.m.window < S:  # direct-path: the last `window` positions
            w = w.clone()
            w[:, :S - self.m.window] = 0
        return w[:, None, :, None]

    def _loss(self, delta, last, mask, pos, unpert_next, q_log):
        """Per-row PPLM loss [B] with the past perturbed by delta."""
        m = self.m
        past = [(k + dk, v + dv) for (k, v), (dk, dv) in zip(self.pert, delta)]
        h, _ = self._forward(past, mask, pos, ids=last)
        h = h[:, -1]
        lp = self._logits(h)
        # paper: the last position's perturbed state enters the head's mean detached
        direct = h if m.mode == "direct-path" else h.detach()
        hidden, n = self.hsum + direct.float(), self.count + 1
        if m.horizon:  # the expected next token's embedding, through the unperturbed past
            emb = torch.softmax(lp.float(), -1)[:, :self.embed.weight.shape[0]] @ self.embed.weight.float()
            scale = getattr(self.embed, "embed_scale", None)
            if scale is not None:
                emb = emb * scale
            horizon_mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            h2, _ = self._forward(unpert_next, horizon_mask, pos + 1, embeds=emb[:, None].to(h.dtype))
            hidden, n = hidden + h2[:, -1].float(), n + 1
        target = torch.zeros(last.shape[0], dtype=torch.long, device=last.device)  # non_toxic
        loss = F.cross_entropy(self.head(hidden / n[:, None]), target, reduction="none")
        if m.kl_scale > 0:
            p = _floored(torch.softmax(lp.float(), -1))
            loss = loss + m.kl_scale * (p * (p.log() - q_log)).sum(-1)
        return loss

    def _unperturbed_log(self, unpert_logits: torch.Tensor) -> torch.Tensor:
        """log p(. | past) for the KL term: floored at 1e-15 as the reference does (paper), or
        clamped at -1e4 (direct-path)."""
        if self.m.mode == "paper":
            return _floored(torch.softmax(unpert_logits.float(), -1)).log()
        return torch.log_softmax(unpert_logits.float(), -1).clamp(min=-1e4)

    def _perturbation(self, last, mask, pos, unpert_next, unpert_logits):
        m = self.m
        win = self._window(mask, self.done)
        acc = [(torch.zeros_like(k), torch.zeros_like(v)) for k, v in self.pert]
        q_log = self._unperturbed_log(unpert_logits)
        with torch.enable_grad():
            for _ in range(m.num_iterations):
                cur = [(dk.clone().requires_grad_(True), dv.clone().requires_grad_(True)) for dk, dv in acc]
                # summed over rows: each row's gradient is its own loss's
                loss = self._loss(cur, last, mask, pos, unpert_next, q_log).sum()
                grads = torch.autograd.grad(loss, [t for pair in cur for t in pair])
                for i in range(len(acc)):
                    gk, gv = grads[2 * i] * win, grads[2 * i + 1] * win
                    # per layer and per row, so a row's update does not depend on its batch
                    norm = (gk.pow(2).sum((1, 2, 3)) + gv.pow(2).sum((1, 2, 3))).sqrt() + _TINY
                    scale = (-m.stepsize / norm.pow(m.gamma))[:, None, None, None]
                    acc[i] = (acc[i][0] + scale * gk, acc[i][1] + scale * gv)
        return acc


class PPLM(DetoxMethod):
    """Gradient steps on the cached keys/values against a toxicity head (slow baseline)."""

    name = "pplm"
    backends = frozenset({"hf"})
    needs_float32 = True

    # Defaults: the toxicity protocol of DExperts (alisawuffles/DExperts
    # scripts/run_toxicity_experiment.py with generation/pplm_generation.py's PPLMGeneration).
    def __init__(self, stepsize: float = 0.20, num_iterations: int = 10, kl_scale: float = 0.01,
                 gm_scale: float = 0.9, window: int = 0, gamma: float = 1.0, horizon: int = 1,
                 mode: str = "paper", path: str | None = None):
        try:
            self.stepsize, self.kl_scale, self.gm_scale, self.gamma = (
                float(stepsize), float(kl_scale), float(gm_scale), float(gamma))
        except (TypeError, ValueError):
            raise DetoxkitError("pplm: stepsize, kl_scale, gm_scale and gamma must be numbers") from None
        for key, value in (("num_iterations", num_iterations), ("window", window), ("horizon", horizon)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise DetoxkitError(f"pplm: {key} must be an integer, got {value!r}")
        if self.stepsize < 0 or num_iterations < 0 or window < 0 or self.kl_scale < 0:
            raise DetoxkitError("pplm: stepsize, num_iterations, window and kl_scale must be >= 0")
        if not 0.0 <= self.gm_scale <= 1.0:
            raise DetoxkitError(f"pplm: gm_scale must be in [0, 1], got {gm_scale}")
        if self.gamma < 0:
            raise DetoxkitError(f"pplm: gamma must be >= 0, got {gamma}")
        if horizon not in (0, 1):
            raise DetoxkitError(f"pplm: horizon must be 0 or 1, got {horizon}")
        if mode not in MODES:
            raise DetoxkitError(f"pplm: mode must be one of {', '.join(MODES)}, not '{mode}'")
        if mode == "paper" and horizon == 0:
            raise DetoxkitError("pplm: mode=paper needs horizon=1 (the head's gradient reaches the "
                                "past only through the horizon state); use mode=direct-path")
        self.num_iterations, self.window, self.horizon = num_iterations, window, horizon
        self.mode = mode
        self.path = path
        self._meta: dict[str, Any] = {}

    def settings(self):
        return {"stepsize": self.stepsize, "num_iterations": self.num_iterations,
                "kl_scale": self.kl_scale, "gm_scale": self.gm_scale, "window": self.window,
                "gamma": self.gamma, "horizon": self.horizon, "mode": self.mode, "path": self.path}

    def guided_by(self):
        return self._artefact_guided_by([CORPUS_TAG], self.path, lambda p: load_head(existing_path(p))[1])

    @property
    def neutral(self) -> bool:
        return self.num_iterations == 0 or self.stepsize == 0 or self.gm_scale == 0

    def describe(self):
        out = super().describe()
        if self._meta:
            out["head"] = self._meta
        return out

    def bind(self, lm):
        if self.neutral:
            return _Identity()
        if getattr(lm, "model", None) is None:
            raise DetoxkitError("method 'pplm' needs the transformers model itself")
        path = find_head(lm, self.path)
        head, meta = load_head(path)
        hidden = lm.model.get_input_embeddings().weight.shape[1]
        if head.in_features != hidden:
            raise DetoxkitError(f"{path}: the head takes {head.in_features}-d states but "
                                f"{lm.name} has {hidden}: train one with "
                                f"`{TRAIN_CMD.format(model=lm.name)}`")
        self._meta = {"path": str(path), **{k: meta.get(k) for k in ("model", "revision", "rows",
                                                                     "heldout_accuracy")}}
        self._record_guided_by(meta, [CORPUS_TAG])
        return _PPLMTransform(lm, head, self)
