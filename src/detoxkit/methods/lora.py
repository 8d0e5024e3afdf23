"""Two LoRA adapters on the generator's top layers, run as one batched forward.

DExperts' expert / anti-expert and GeDi's two class-conditional LMs are LoRA
adapters (PEFT format) on the top `k` decoder layers of the generator. Below
layer L-k the three models (base, adapter 0, adapter 1) are the same network,
so their hidden states there are identical: detoxkit takes the base model's
hidden state at the input of layer L-k (a forward pre-hook on that layer while
a transform is bound) and runs only the top k layers again, for both adapters
at once: the batch is [adapter 0 rows; adapter 1 rows], every targeted linear
layer computes the shared base weight once for all 2B rows and adds each half's
own low-rank update. The two adapters keep their own KV cache (2B rows, top k
layers only), separate from the base model's.

The adapter layers are shallow copies of the generator's layers that share its
parameter tensors: PEFT never injects into the (shared, cached) base model, so
plain sampling with the same model object is unaffected.

Supported: decoder layers that take (hidden_states, attention_mask,
position_embeddings, cache) the way transformers' Llama family does (Llama,
SmolLM, Mistral, Qwen2); others are a clear error.
"""

from __future__ import annotations

import copy
import json
import weakref
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import DetoxkitError
from ..tokens import position_ids

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PEFT_PREFIX = "base_model.model."


def decoder_layers(model) -> nn.ModuleList:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None or not hasattr(inner, "norm"):
        raise DetoxkitError(f"{type(model).__name__}: LoRA experts support Llama-family decoder "
                            f"layouts (model.model.layers, model.model.norm)")
    return layers


class MixedLoRALinear(nn.Module):
    """base(x) + scaling * B_g A_g x, where rows [g*n:(g+1)*n] of the batch use adapter g."""

    def __init__(self, base: nn.Linear, rank: int, n_adapters: int = 2, scaling: float = 2.0,
                 trainable: bool = False):
        super().__init__()
        self.base = base  # shared with the generator, never changed
        self.rank, self.n_adapters, self.scaling = rank, n_adapters, scaling
        w = base.weight
        a = torch.zeros(n_adapters, rank, base.in_features, dtype=w.dtype, device=w.device)
        b = torch.zeros(n_adapters, base.out_features, rank, dtype=w.dtype, device=w.device)
        if trainable:
            nn.init.normal_(a, std=1.0 / rank)
        self.lora_A = nn.Parameter(a, requires_grad=trainable)
        self.lora_B = nn.Parameter(b, requires_grad=trainable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        g = self.n_adapters
        xs = x.reshape(g, -1, x.shape[-1])  # [g, rows*positions, in]
        low = torch.bmm(xs, self.lora_A.transpose(1, 2))
        delta = torch.bmm(low, self.lora_B.transpose(1, 2)) * self.scaling
        return y + delta.reshape(y.shape)


class _KV:
    """Minimal per-layer KV cache (duck-types Cache.update for the attention modules)."""

    def __init__(self):
        self.kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, key, value, layer_idx, *args, **kwargs):
        if layer_idx in self.kv:
            k0, v0 = self.kv[layer_idx]
            key, value = torch.cat([k0, key], dim=-2), torch.cat([v0, value], dim=-2)
        self.kv[layer_idx] = (key, value)
        return key, value

    def get_seq_length(self, layer_idx: int = 0) -> int:
        first = next(iter(self.kv.values()), None)
        return 0 if first is None else first[0].shape[-2]


class TopLayers(nn.Module):
    """The generator's top k layers (+ final norm), shared weights, with 2 LoRA adapters."""

    def __init__(self, model, k: int, rank: int, scaling: float, trainable: bool = False):
        super().__init__()
        layers = decoder_layers(model)
        n = len(layers)
        if not 1 <= k <= n:
            raise DetoxkitError(f"adapter layers k={k} must be in 1..{n}")
        self.first = n - k
        self.layer_ids = list(range(self.first, n))
        self.copies = nn.ModuleList()
        for i in self.layer_ids:
            layer = layers[i]
            memo = {id(t): t for t in list(layer.parameters()) + list(layer.buffers())}
            clone = copy.deepcopy(layer, memo)
            for name, mod in list(clone.named_modules()):
                if name.split(".")[-1] in TARGETS and isinstance(mod, nn.Linear):
                    parent = clone.get_submodule(name.rsplit(".", 1)[0]) if "." in name else clone
                    setattr(parent, name.split(".")[-1],
                            MixedLoRALinear(mod, rank, 2, scaling, trainable))
            self.copies.append(clone)
        self.norm = model.model.norm
        self.rank, self.scaling = rank, scaling
        import inspect

        params = inspect.signature(self.copies[0].forward).parameters
        if "position_embeddings" not in params:
            raise DetoxkitError(f"{type(layers[0]).__name__} does not take position_embeddings: "
                                f"LoRA experts support Llama-family decoder layers")
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    def forward(self, hidden: torch.Tensor, mask4d: torch.Tensor, cos_sin, cache: _KV | None):
        """hidden [2B, t, H] -> normed top-layer output [2B, t, H]."""
        for layer in self.copies:
            out = layer(hidden, attention_mask=mask4d, position_embeddings=cos_sin,
                        use_cache=cache is not None, **{self._cache_arg: cache})
            hidden = out[0] if isinstance(out, tuple) else out
        return self.norm(hidden)

    def lora_modules(self):
        for j, layer in enumerate(self.copies):
            for name, mod in layer.named_modules():
                if isinstance(mod, MixedLoRALinear):
                    yield self.layer_ids[j], name, mod

    # ---- PEFT-format adapters ----------------------------------------------------------
    def save_adapters(self, out_dir: Path, names: tuple[str, str], base_name: str,
                      extra: dict[str, Any]) -> None:
        from safetensors.torch import save_file

        out_dir.mkdir(parents=True, exist_ok=True)
        for g, adapter in enumerate(names):
            d = out_dir / adapter
            d.mkdir(exist_ok=True)
            tensors = {}
            for idx, name, mod in self.lora_modules():
                key = f"{PEFT_PREFIX}model.layers.{idx}.{name}"
                tensors[f"{key}.lora_A.weight"] = mod.lora_A[g].detach().float().contiguous()
                tensors[f"{key}.lora_B.weight"] = mod.lora_B[g].detach().float().contiguous()
            save_file(tensors, str(d / "adapter_model.safetensors"))
            config = {
                "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": self.rank,
                "lora_alpha": self.scaling * self.rank, "lora_dropout": 0.0, "bias": "none",
                "target_modules": list(TARGETS), "layers_to_transform": self.layer_ids,
                "layers_pattern": "layers", "base_model_name_or_path": base_name,
                "fan_in_fan_out": False, "inference_mode": True, "use_rslora": False,
            }
            (d / "adapter_config.json").write_text(json.dumps(config, indent=1))
        (out_dir / "detoxkit.json").write_text(json.dumps({"adapters": list(names), **extra},
                                                          indent=1))

    def load_adapters(self, out_dir: Path, names: tuple[str, str]) -> None:
        from safetensors.torch import load_file

        for g, adapter in enumerate(names):
            tensors = load_file(str(out_dir / adapter / "adapter_model.safetensors"))
            for idx, name, mod in self.lora_modules():
                key = f"{PEFT_PREFIX}model.layers.{idx}.{name}"
                try:
                    a, b = tensors[f"{key}.lora_A.weight"], tensors[f"{key}.lora_B.weight"]
                except KeyError:
                    raise DetoxkitError(f"{out_dir / adapter}: no LoRA weights for layer {idx} "
                                        f"{name}; were the adapters trained for this model?") from None
                with torch.no_grad():
                    mod.lora_A[g].copy_(a.to(mod.lora_A.dtype))
                    mod.lora_B[g].copy_(b.to(mod.lora_B.dtype))


def adapter_meta(path: Path) -> dict[str, Any]:
    meta_file = path / "detoxkit.json"
    if not meta_file.exists():
        raise DetoxkitError(f"{path} holds no detoxkit adapters (detoxkit.json missing)")
    meta = json.loads(meta_file.read_text())
    cfg = json.loads((path / meta["adapters"][0] / "adapter_config.json").read_text())
    meta.update(rank=cfg["r"], scaling=cfg["lora_alpha"] / cfg["r"], layers=cfg["layers_to_transform"])
    return meta


def causal_mask4d(mask2d: torch.Tensor, q_len: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask [B, 1, q_len, K] for the last q_len positions of a [B, K] padding mask."""
    k_len = mask2d.shape[1]
    q_pos = torch.arange(k_len - q_len, k_len, device=mask2d.device)[:, None]
    k_pos = torch.arange(k_len, device=mask2d.device)[None, :]
    allowed = (k_pos <= q_pos)[None] & mask2d[:, None, :].bool()
    zero = torch.zeros((), dtype=dtype, device=mask2d.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)[:, None]


class AdapterRunner:
    """Per-generate-call state: captures the base model's hidden states at the input of
    the first adapter layer and advances both adapters' KV cache to match `input_ids`."""

    def __init__(self, lm, top: TopLayers):
        self.lm, self.top = lm, top
        self.model = lm.model
        self.cache = _KV()
        self.processed = 0
        self.pending: list[tuple[Any, torch.Tensor, Any]] = []
        self._last_ids = None
        me = weakref.ref(self)

        def top_hook(module, args, kwargs):
            obj = me()
            if obj is not None:
                obj._last_ids = kwargs.get("input_ids", args[0] if args else None)

        def layer_hook(module, args, kwargs):
            obj = me()
            if obj is not None:
                hidden = args[0] if args else kwargs["hidden_states"]
                obj.pending.append((obj._last_ids, hidden.detach(), kwargs.get("position_embeddings")))

        layers = decoder_layers(self.model)
        self._handles = [self.model.register_forward_pre_hook(top_hook, with_kwargs=True),
                         layers[top.first].register_forward_pre_hook(layer_hook, with_kwargs=True)]
        weakref.finalize(self, AdapterRunner._remove, list(self._handles))

    @staticmethod
    def _remove(handles):
        for h in handles:
            h.remove()

    def close(self) -> None:
        self._remove(self._handles)
        self.pending.clear()

    def _fallback_hidden(self, input_ids, mask2d):
        """Hidden states at the adapter input for all of input_ids, by one extra base forward
        (only when the base prefill ran before this transform was bound)."""
        pos = position_ids(mask2d)
        self.pending.clear()
        with torch.no_grad():
            out = self.model(input_ids=input_ids, attention_mask=mask2d, position_ids=pos,
                             output_hidden_states=True, use_cache=False)
        self.pending.clear()  # the hook captured this forward too
        return out.hidden_states[self.top.first]

    @torch.no_grad()
    def advance(self, input_ids: torch.Tensor, mask2d: torch.Tensor | None) -> torch.Tensor:
        """Run both adapters over the positions not yet processed; return the normed top
        hidden states of those positions, [2, B, t, H] (t >= 1)."""
        B, T = input_ids.shape
        if mask2d is None:
            mask2d = torch.ones_like(input_ids)
        mask2d = mask2d.to(input_ids.device)
        chunks, t_total = [], 0
        for ids_c, hidden, pe in self.pending:
            t = hidden.shape[1]
            if hidden.shape[0] != B:  # prefill of distinct prompts, expanded to rows later
                if ids_c is None or ids_c.shape[0] != hidden.shape[0]:
                    raise DetoxkitError("adapter state lost track of the base model's batch")
                lookup = {tuple(r): j for j, r in enumerate(ids_c.tolist())}
                seg = input_ids[:, self.processed + t_total:self.processed + t_total + t].tolist()
                try:
                    row_of = torch.tensor([lookup[tuple(r)] for r in seg], device=hidden.device)
                except KeyError:
                    raise DetoxkitError("cannot match rows to the base model's prefill") from None
                hidden = hidden.index_select(0, row_of)
                if pe is not None:
                    pe = tuple(x.index_select(0, row_of) if x.shape[0] > 1 else x for x in pe)
            chunks.append((hidden, pe))
            t_total += t
        self.pending.clear()
        if self.processed + t_total != T:
            if t_total == 0 and self.processed < T:
                hidden = self._fallback_hidden(input_ids, mask2d)[:, self.processed:]
                chunks, t_total = [(hidden, None)], hidden.shape[1]
            else:
                raise DetoxkitError(
                    f"adapter state out of step with the base model ({self.processed}+{t_total} "
                    f"positions for {T} tokens): bind the method just before generation and use "
                    f"one transform per generate call")
        hidden = torch.cat([h for h, _ in chunks], dim=1)
        if any(pe is None for _, pe in chunks):
            pos = position_ids(mask2d)[:, T - t_total:]
            pe = self.model.model.rotary_emb(hidden, pos)
        else:
            pe = tuple(torch.cat([p[i].expand(B, *p[i].shape[1:]) for _, p in chunks], dim=1)
                       for i in range(2))
        dtype = hidden.dtype
        mask4d = causal_mask4d(mask2d[:, :T], t_total, dtype)
        h2 = torch.cat([hidden, hidden], dim=0)
        pe2 = tuple(torch.cat([p, p], dim=0) for p in pe)
        out = self.top(h2, torch.cat([mask4d, mask4d], dim=0), pe2, self.cache)
        self.processed = T
        return out.reshape(2, B, t_total, -1)


def lm_head_of(model) -> nn.Module:
    head = model.get_output_embeddings()
    if head is None:
        raise DetoxkitError(f"{type(model).__name__} has no output embedding (LM head)")
    return head


def softcap_of(model) -> float | None:
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    cap = getattr(cfg, "final_logit_softcapping", None)
    return float(cap) if cap else None


def head_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    logits = lm_head_of(model)(hidden).float()
    cap = softcap_of(model)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def build_top(model, path: Path, names: tuple[str, str]) -> TopLayers:
    meta = adapter_meta(path)
    layers = meta["layers"]
    n = len(decoder_layers(model))
    if layers != list(range(n - len(layers), n)):
        raise DetoxkitError(f"{path}: adapters were trained on layers {layers}, not the top layers "
                            f"of this {n}-layer model: retrain for this model")
    top = TopLayers(model, len(layers), meta["rank"], meta["scaling"])
    top.load_adapters(path, names)
    top.eval()
    return top

