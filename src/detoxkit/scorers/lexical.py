"""alt-profanity-check: TF-IDF + linear SVM, lexical, English."""

from __future__ import annotations

from importlib.metadata import version

from ..errors import DetoxkitError
from .base import Scorer


class ProfanitySVMScorer(Scorer):
    name = "profanity-svm"
    attributes = ("toxicity",)
    languages = ("en",)

    def __init__(self, device: str = "cpu", batch_size: int = 4096):
        super().__init__(device, batch_size)
        try:
            from profanity_check import predict_prob
        except ImportError as exc:
            raise DetoxkitError(
                "scorer 'profanity-svm' needs alt-profanity-check (pip install alt-profanity-check); "
                f"import failed: {exc}") from None
        self._predict_prob = predict_prob
        self.version = f"alt-profanity-check=={version('alt-profanity-check')}"

    def _score_batch(self, texts):
        return {"toxicity": self._predict_prob(texts)}
