"""Model backends: where samples and log-likelihoods come from (interface in base.py).

`--model` names a model for the hf backend (an embedded name, a local directory or a
hub id), or `BACKEND:MODEL` for another registered backend (`detoxkit ls backends`).
"""

from __future__ import annotations

from .base import (Backend, Capabilities, Request, Sample, SamplingConfig, check_method_support,
                   check_requirements)

DEFAULT_BACKEND = "hf"


def split_model_spec(spec: str) -> tuple[str, str]:
    """(backend name, model) of a --model value: `BACKEND:MODEL` where BACKEND is registered,
    else the hf backend."""
    from ..registry import BACKENDS

    prefix, sep, rest = str(spec).partition(":")
    if sep and prefix in BACKENDS and rest:
        return prefix, rest
    return DEFAULT_BACKEND, str(spec)


def load_backend(spec: str, cfg=None, **settings) -> Backend:
    """The backend for a --model value, with its model loaded: built from a run's config
    (`cfg`, a RunConfig) or from explicit settings (device, dtype, ...)."""
    from ..registry import BACKENDS

    name, model = split_model_spec(spec)
    cls = BACKENDS.load(name)
    check_requirements(name, cls.requires)
    return cls.from_config(model, cfg, **settings) if cfg is not None else cls(model, **settings)


__all__ = ["Backend", "Capabilities", "Request", "Sample", "SamplingConfig", "check_method_support",
           "check_requirements", "load_backend", "split_model_spec"]
