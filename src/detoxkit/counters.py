"""Counters (a run's backend and method stats) of several sessions or processes added up."""

from __future__ import annotations


def fold_counts(parts: list[dict]) -> dict:
    """Counters of several processes (sessions, Ray actors) added into one."""
    out: dict = {}
    for part in parts:
        out = add_counts(out, part)
    return out


def add_counts(old: dict, new: dict) -> dict:
    """Counters of two sessions added key by key (nested dicts too)."""
    out = dict(old)
    for k, v in new.items():
        if isinstance(v, dict):
            out[k] = add_counts(out.get(k) or {}, v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = round(out.get(k, 0) + v, 2) if isinstance(v, float) else out.get(k, 0) + v
        else:
            out[k] = v
    return out
