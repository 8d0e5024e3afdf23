"""Scorers: texts -> per-attribute scores in [0, 1]. See scorers/base.py."""

from .base import Scorer, load_scorer

# The scorer `detoxkit run` judges with unless told otherwise.
DEFAULT_SCORER = "profanity-svm"

__all__ = ["DEFAULT_SCORER", "Scorer", "load_scorer"]
