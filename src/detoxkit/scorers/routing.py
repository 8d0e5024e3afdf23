"""`--scorer auto`: each text judged by the best available scorer for its language.

Per text, its language is detected (detoxkit.lang) unless the caller passes it, and the text
goes to the first candidate validated for that language; failing that, to the first that
covers it zero-shot; failing that (or for an undetermined language), to the first candidate.
The run records which candidate judged each sample (generations.jsonl `judged_by`), and
metrics.json warns, per language, about samples judged outside a scorer's validated languages.
"""

from __future__ import annotations

import numpy as np

from .base import Scorer, language_coverage, load_scorer

DEFAULT_CANDIDATES = "detoxkit-minilm,detoxkit-e5"  # English: the validated default; else e5
_RANK = {"validated": 0, "zero-shot": 1, "none": 2}


class LanguageRoutedScorer(Scorer):
    """Routes each text to a candidate scorer by its detected language."""

    name = "auto"

    def __init__(self, device: str = "cpu", batch_size: int = 64,
                 candidates: str = DEFAULT_CANDIDATES):
        super().__init__(device, batch_size)
        names = [c.strip() for c in str(candidates).split(",") if c.strip()]
        if not names or "auto" in names:
            from ..errors import DetoxkitError

            raise DetoxkitError(f"auto: candidates must name one or more other scorers, got {candidates!r}")
        self.candidates = [load_scorer(n, device=device) for n in names]
        self.attributes = ("toxicity",)  # the one attribute every candidate has
        self.languages = tuple(sorted({lg for s in self.candidates for lg in s.languages}))
        self.validated_languages = tuple(sorted({lg for s in self.candidates
                                                 for lg in s.info()["validated_languages"]}))
        self.version = "routed(" + ";".join(f"{s.name}={s.version}" for s in self.candidates) + ")"

    def route(self, language: str) -> Scorer:
        """The candidate that judges texts in `language`."""
        infos = [s.info() for s in self.candidates]
        ranks = [_RANK[language_coverage(i, language)] for i in infos]
        return self.candidates[ranks.index(min(ranks))]

    def score_routed(self, texts, languages=None) -> tuple[dict[str, np.ndarray], list[str]]:
        """(scores, the name of the candidate that judged each text)."""
        from ..lang import confident_language, detect_many

        texts = list(texts)
        if languages is None:  # an unsure detection routes like an undetermined one
            languages = [confident_language(d.language, d.confidence) for d in detect_many(texts)]
        routes = [self.route(lg) for lg in languages]
        out = np.full(len(texts), np.nan, dtype=np.float64)
        for scorer in self.candidates:
            idx = [i for i, r in enumerate(routes) if r is scorer]
            if idx:
                out[idx] = scorer.score([texts[i] for i in idx])["toxicity"]
        return {"toxicity": out}, [r.name for r in routes]

    def score(self, texts, progress=None):
        scores, _ = self.score_routed(texts)
        if progress is not None:
            progress(len(scores["toxicity"]))
        return scores

    def _score_batch(self, texts):  # pragma: no cover - score() is overridden
        return self.score(texts)

    def info(self) -> dict:
        return {**super().info(), "candidates": [s.info() for s in self.candidates],
                "guided_by": sorted({g for s in self.candidates for g in s.info()["guided_by"]})}
