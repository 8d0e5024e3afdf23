"""Scorers: texts -> per-attribute scores in [0, 1]. See scorers/base.py."""

from .base import Scorer, load_scorer

__all__ = ["Scorer", "load_scorer"]
