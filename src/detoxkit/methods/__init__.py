"""Decoding-time detoxification methods. See methods/base.py for the interface.

A method spec is `name` or `name:key=value,key=value` (e.g. `dexperts:alpha=2.0`);
a list of specs is applied in order.
"""

from __future__ import annotations

from typing import Any

from ..errors import DetoxkitError
from .base import DetoxMethod, LogitsTransform


def parse_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    name, _, rest = spec.partition(":")
    settings: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise DetoxkitError(f"method spec '{spec}': expected key=value, got '{item}'")
        settings[key.strip()] = parse_value(value.strip())
    return name.strip(), settings


def build_method(specs: list[str] | str) -> DetoxMethod:
    """One method, or a chain applied in order, from specs."""
    from ..registry import METHODS

    specs = [specs] if isinstance(specs, str) else list(specs)
    methods = []
    for spec in specs:
        name, settings = parse_spec(spec)
        cls = METHODS.load(name)
        try:
            methods.append(cls(**settings))
        except TypeError as exc:
            raise DetoxkitError(f"method '{name}': bad settings {settings}: {exc}") from None
    if len(methods) == 1:
        return methods[0]
    return Chain(methods)


class _ChainTransform(LogitsTransform):
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, input_ids, logits):
        for t in self.transforms:
            self.share_context(t)
            logits = t(input_ids, logits)
        return logits

    def skip(self, input_ids, logits):
        for t in self.transforms:
            self.share_context(t)
            t.skip(input_ids, logits)


class Chain(DetoxMethod):
    """Several methods applied in order to the same logits."""

    name = "chain"

    def __init__(self, methods: list[DetoxMethod]):
        self.methods = [m for m in methods if m.name != "none"] or methods[:1]
        self.backends = frozenset.intersection(*(m.backends for m in self.methods))

    def settings(self):
        return {"methods": [m.describe() for m in self.methods]}

    def guided_by(self):
        return sorted({g for m in self.methods for g in m.guided_by()})

    def bind(self, lm):
        return _ChainTransform([m.bind(lm) for m in self.methods])

    def run_stats(self):
        stats = {f"{i}:{m.name}": m.run_stats() for i, m in enumerate(self.methods)}
        return {k: v for k, v in stats.items() if v}


__all__ = ["Chain", "DetoxMethod", "LogitsTransform", "build_method", "parse_spec"]
