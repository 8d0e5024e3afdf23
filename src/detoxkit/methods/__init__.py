"""Decoding-time detoxification methods. See methods/base.py for the interface.

A method spec is `name` or `name:key=value,key=value` (e.g. `dexperts:alpha=2.0`, the grammar
of detoxkit/specs.py); a list of specs is applied in order.
"""

from __future__ import annotations

import torch

from ..errors import DetoxkitError
from ..specs import Spec, construct, format_spec, parse_spec
from .base import DetoxMethod, LogitsTransform


def build_method(specs: "list[str | Spec] | str | Spec | DetoxMethod") -> DetoxMethod:
    """One method, or a chain applied in order, from specs (see detoxkit/specs.py); a method
    object is returned as it is."""
    from ..registry import METHODS

    if isinstance(specs, DetoxMethod):
        return specs
    specs = [specs] if isinstance(specs, (str, Spec)) else list(specs)
    methods = []
    for text in specs:
        spec = text if isinstance(text, Spec) else parse_spec(text)
        if spec.arg is not None:
            raise DetoxkitError(f"method spec '{text}': expected key=value, got '{spec.arg}'")
        methods.append(construct("method", spec.name, METHODS.load(spec.name), spec.settings))
    method = methods[0] if len(methods) == 1 else Chain(methods)
    # the specs that rebuild it, for a runtime that builds its own copy (vLLM's engine process)
    method.specs = tuple(t if isinstance(t, str) else format_spec(t) for t in specs)
    return method


class _ChainTransform(LogitsTransform):
    def __init__(self, transforms):
        self.transforms = transforms
        self.row_independent = all(t.row_independent for t in transforms)

    def __call__(self, input_ids, logits):
        self.top_p_override = None
        for t in self.transforms:
            self.share_context(t)
            logits = t(input_ids, logits)
            self.top_p_override = merge_top_p(self.top_p_override, t.top_p_override)
        return logits

    def skip(self, input_ids, logits):
        for t in self.transforms:
            self.share_context(t)
            t.skip(input_ids, logits)


def merge_top_p(current: "torch.Tensor | None", new: "torch.Tensor | None") -> "torch.Tensor | None":
    """Per-row top-p overrides of a chain: a later method's override wins where it sets one."""
    if new is None:
        return current
    if current is None:
        return new
    return torch.where(torch.isnan(new), current, new)


class Chain(DetoxMethod):
    """Several methods applied in order to the same logits."""

    name = "chain"

    def __init__(self, methods: list[DetoxMethod]):
        self.methods = [m for m in methods if m.name != "none"] or methods[:1]
        self.backends = frozenset.intersection(*(m.backends for m in self.methods))
        self.changes_logits = any(m.changes_logits for m in self.methods)
        self.needs_float32 = any(m.needs_float32 for m in self.methods)

    def settings(self):
        return {"methods": [m.describe() for m in self.methods]}

    def guided_by(self):
        return sorted({g for m in self.methods for g in m.guided_by()})

    def bind(self, lm):
        return _ChainTransform([m.bind(lm) for m in self.methods])

    def run_stats(self):
        stats = {f"{i}:{m.name}": m.run_stats() for i, m in enumerate(self.methods)}
        return {k: v for k, v in stats.items() if v}

    def merge_run_stats(self, parts):
        stats = {f"{i}:{m.name}": m.merge_run_stats([p.get(f"{i}:{m.name}") or {} for p in parts])
                 for i, m in enumerate(self.methods)}
        return {k: v for k, v in stats.items() if v}


__all__ = ["Chain", "DetoxMethod", "LogitsTransform", "build_method"]
