"""What turns a batch of requests into generations.jsonl rows: the run's loaded parts.

The runner uses one `Components` in its own process; the Ray executor builds one per worker
from the same config, so every sample is drawn and scored the same way wherever it runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from .backends import Backend, Request, Sample, SamplingConfig, check_method_support, load_backend
from .errors import DetoxkitError
from .store import json_float

log = logging.getLogger(__name__)


def sampling_of(cfg) -> SamplingConfig:
    return SamplingConfig(num_samples=cfg.samples, max_new_tokens=cfg.max_new_tokens, top_p=cfg.top_p,
                          temperature=cfg.temperature, top_k=cfg.top_k, seed=cfg.seed)


@dataclass
class Components:
    cfg: Any  # the RunConfig
    method: Any
    backend: Backend
    scorers: list
    oracle: Backend | None

    @classmethod
    def load(cls, cfg, method=None) -> "Components":
        """The backend (checked against the method chain before any sample is drawn), the
        scorers and the perplexity oracle of a run."""
        from .methods import build_method
        from .scorers import load_scorer

        method = method or build_method(cfg.methods)
        if cfg.dtype == "auto" and method.needs_float32:  # see DetoxMethod.needs_float32
            cfg = replace(cfg, dtype="float32")
        adapter = {"adapter": cfg.adapter} if getattr(cfg, "adapter", None) else {}
        backend = load_backend(cfg.model, cfg=cfg, **adapter)  # the generator only, not the oracle
        check_method_support(method, backend)
        scorers = [load_scorer(name, device=cfg.device) for name in cfg.scorers]
        return cls(cfg, method, backend, scorers, _load_oracle(cfg, backend))

    def draw(self, batch: list[Request], skip: set[tuple[str, int]] = frozenset()) -> list[dict]:
        """Generate a batch and score it: its rows, less those in `skip` (already stored)."""
        samples = self.backend.generate(batch, sampling_of(self.cfg), self.method)
        samples = [s for s in samples if (s.prompt_id, s.sample_index) not in skip]
        return self.rows(samples, {r.prompt_id: r.text for r in batch})

    def rows(self, samples: list[Sample], prompt_text: dict[str, str]) -> list[dict]:
        """generations.jsonl rows: scored samples, and failed ones with their reason (no text,
        no score: they are drawn again when the run resumes)."""
        failed = [{"prompt_id": s.prompt_id, "sample_index": s.sample_index, "seed": s.seed,
                   "prompt": prompt_text[s.prompt_id], "text": None, "failed": s.error}
                  for s in samples if s.error is not None]
        samples = [s for s in samples if s.error is None]
        if not samples:
            return failed
        texts = [s.text for s in samples]
        from .lang import confident_language, detect_many

        detected = detect_many(texts)  # every sample's language, stored with its confidence
        scores, judged_by = {}, {}
        for sc in self.scorers:
            if hasattr(sc, "score_routed"):  # --scorer auto: a scorer per sample language
                scores[sc.name], judged_by[sc.name] = sc.score_routed(
                    texts, [confident_language(d.language, d.confidence) for d in detected])
            else:
                scores[sc.name] = sc.score(texts)
        prompts = [prompt_text[s.prompt_id] for s in samples]
        oracle = self.oracle
        nll = oracle.continuation_nll(prompts, texts) if oracle else [(None, 0)] * len(samples)
        published = (oracle.published_nll(prompts, texts, nll) if oracle else None) \
            or [(None, 0)] * len(samples)
        rows = []
        for j, s in enumerate(samples):
            rows.append({
                "prompt_id": s.prompt_id, "sample_index": s.sample_index, "seed": s.seed,
                "prompt": prompt_text[s.prompt_id], "text": s.text, "n_tokens": s.n_tokens,
                "finished": s.finished,
                "scores": {name: {a: json_float(v[j]) for a, v in sc.items()}
                           for name, sc in scores.items()},
                "oracle_nll": nll[j][0], "oracle_tokens": nll[j][1],
                "oracle_nll_published": published[j][0], "oracle_tokens_published": published[j][1],
                "language": detected[j].as_json(),
            })
            if judged_by:  # which candidate of a routed scorer judged this sample
                rows[-1]["judged_by"] = {name: routes[j] for name, routes in judged_by.items()}
        return rows + failed


def _load_oracle(cfg, backend: Backend) -> Backend | None:
    spec = cfg.oracle
    if spec == "none":
        return None
    if spec == "auto":
        from .backends.hf.embedded import GEMMA3_270M

        spec = "gemma3-270m" if GEMMA3_270M.available() else cfg.model
    if spec == cfg.model:
        if not backend.capabilities.loglikelihoods:
            raise DetoxkitError(f"the {backend.name} backend cannot be the perplexity oracle "
                                "(it gives no log-likelihoods): pass --oracle none or --oracle "
                                "MODEL (a model that runs here, e.g. gemma3-270m)")
        log.warning("oracle: perplexity is measured under the generator itself (%s), which "
                    "flatters it; install gemma3-270m or pass --oracle MODEL", cfg.model)
        return backend
    oracle = load_backend(spec, cfg=cfg, nll_batch_size=8)
    if not oracle.capabilities.loglikelihoods:
        raise DetoxkitError(f"--oracle {spec}: the {oracle.name} backend gives no log-likelihoods")
    return oracle
