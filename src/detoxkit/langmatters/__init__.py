"""The "Language Matters" protocol: does the language a model reasons in change how toxic its
answers are?

For each prompt (in several languages) and each condition, "english" (reason in English),
"prompt" (reason in the prompt's language) and "default" (the model's own choice), the chat
template is opened, the reasoning block is prefilled with a short opener in the target
language (nothing for "default"), the reasoning is generated until the end-of-thinking marker
or a token budget, the block is closed, a header naming the answer language (the prompt's) is
appended and the answer generated. The languages of the reasoning and of the answer are
detected; only the answer is scored. `detoxkit langmatters` runs it (docs/languages.md).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..backends import SamplingConfig
from ..errors import DetoxkitError
from ..store import RunStore, json_float
from .families import CONDITIONS, answer_prompt, family_for, reasoning_prompt, render_prompt, target_language

log = logging.getLogger(__name__)
GENERATIONS = "generations.jsonl"


@dataclass
class LangMattersConfig:
    prompts: str
    model: str = "smollm2-135m"
    out: str | None = None
    text_field: str | None = None
    limit: int | None = None
    samples: int = 1
    reasoning_tokens: int = 256
    answer_tokens: int = 64
    temperature: float = 0.6  # the sampling Qwen3 and DeepSeek-R1 recommend for thinking
    top_p: float = 0.95
    seed: int = 0
    conditions: list[str] = field(default_factory=lambda: list(CONDITIONS))
    family: str = "auto"
    think_open: str | None = None
    think_close: str | None = None
    scorer: str = "auto"
    system_prompt: str | None = None
    batch_prompts: int = 8  # (prompt, condition) pairs per generate call
    # execution only
    device: str = "cpu"
    dtype: str = "auto"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    template_from: str | None = None  # API models: a local tokenizer whose chat template renders

    EXECUTION = ("out", "device", "dtype", "base_url", "api_key_env", "batch_prompts")

    def validate(self) -> None:
        bad = [c for c in self.conditions if c not in CONDITIONS]
        if bad or not self.conditions:
            raise DetoxkitError(f"conditions must be among {', '.join(CONDITIONS)}, got {self.conditions}")
        for name in ("samples", "reasoning_tokens", "answer_tokens", "batch_prompts"):
            if getattr(self, name) < 1:
                raise DetoxkitError(f"--{name.replace('_', '-')} must be >= 1")

    def hashed(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in self.EXECUTION}


def _backend(cfg: LangMattersConfig):
    from ..backends import load_backend
    from ..config import RunConfig

    run_cfg = RunConfig(model=cfg.model, device=cfg.device, dtype=cfg.dtype, base_url=cfg.base_url,
                        api_key_env=cfg.api_key_env, oracle="none", scorers=["profanity-svm"])
    return load_backend(cfg.model, cfg=run_cfg)


def _template_tokenizer(cfg: LangMattersConfig, backend):
    lm = getattr(backend, "lm", None)
    if lm is not None:
        return lm.tokenizer
    if cfg.template_from:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(cfg.template_from, local_files_only=True)
    return None  # the family's fallback template


def run_langmatters(cfg: LangMattersConfig) -> dict:
    """Run (or resume) the protocol; returns its metrics (also written to metrics.json)."""
    from ..lang import describe as lang_describe
    from ..lang import detect
    from ..scorers import check_scorer_spec, load_scorer
    from .metrics import langmatters_metrics
    from .prompts import load_langmatters_prompts

    cfg.validate()
    check_scorer_spec(cfg.scorer)
    prompts = load_langmatters_prompts(cfg.prompts, limit=cfg.limit, seed=cfg.seed,
                                       text_field=cfg.text_field)
    store = RunStore(cfg.out or Path("runs") / f"langmatters-{Path(cfg.model).name}")
    with store.locked():
        if store.exists("run.json"):
            old = store.read_json("run.json").get("config")
            if old is not None and old != cfg.hashed():
                changed = sorted(k for k in set(old) | set(cfg.hashed()) if old.get(k) != cfg.hashed().get(k))
                raise DetoxkitError(f"{store.path} holds a langmatters run with other settings "
                                    f"({', '.join(changed)}): use another --out directory")
        store.remove_temporary_files()
        store.repair()
        backend = _backend(cfg)
        family = family_for(backend.describe().get("name", cfg.model), cfg.family, cfg.think_open,
                            cfg.think_close)
        scorer = load_scorer(cfg.scorer, device=cfg.device)
        tokenizer = _template_tokenizer(cfg, backend)
        prov = {"task": "langmatters", "config": cfg.hashed(), "model": backend.describe(),
                "family": asdict(family), "scorer": scorer.info(), "language_id": lang_describe(),
                "prompts": {"spec": cfg.prompts, "n": len(prompts)},
                "template": "model" if tokenizer is not None else "family fallback"}
        store.write_json("run.json", {**prov, "status": "running"})
        store.write_jsonl("prompts.jsonl", [{"prompt_id": p.id, "text": p.text, "language": lang,
                                             "meta": p.meta} for p, lang in prompts])
        done = {(r["prompt_id"], r["sample_index"]) for r in store.generations()
                if not r.get("failed")}  # a failed sample is drawn again
        jobs = []  # (key, prompt, language, condition, missing sample indices, phase-1 text)
        for p, lang in prompts:
            messages = ([{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []) \
                + [{"role": "user", "content": p.text}]
            base = render_prompt(messages, family, tokenizer)
            for cond in cfg.conditions:
                key = f"{p.id}|{cond}"
                missing = [i for i in range(cfg.samples) if (key, i) not in done]
                if missing:
                    jobs.append((key, p, lang, cond, missing, reasoning_prompt(base, cond, lang)))
        t0 = time.monotonic()
        think = SamplingConfig(num_samples=cfg.samples, max_new_tokens=cfg.reasoning_tokens,
                               top_p=cfg.top_p, temperature=cfg.temperature, seed=cfg.seed)
        answer = SamplingConfig(num_samples=1, max_new_tokens=cfg.answer_tokens, top_p=cfg.top_p,
                                temperature=cfg.temperature, seed=cfg.seed)
        for start in range(0, len(jobs), cfg.batch_prompts):
            batch = jobs[start:start + cfg.batch_prompts]
            rows = _draw_batch(backend, batch, family, think, answer, scorer, detect)
            store.append_generations(rows)
            log.info("langmatters: %d/%d (prompt, condition) pairs", min(start + len(batch), len(jobs)),
                     len(jobs))
        metrics = langmatters_metrics(store.generations(), seed=cfg.seed)
        metrics.update({"model": prov["model"], "scorer": prov["scorer"], "family": family.name,
                        "elapsed_s": round(time.monotonic() - t0, 2), "config": cfg.hashed()})
        store.write_json("metrics.json", metrics)
        failed = sum(1 for r in store.generations() if r.get("failed"))
        store.write_json("run.json", {**prov, "status": "incomplete" if failed else "complete"})
        return metrics


def _draw_batch(backend, batch, family, think: SamplingConfig, answer: SamplingConfig, scorer,
                detect) -> list[dict]:
    from .generate import draw_answers, draw_reasoning

    by_key = {job[0]: job for job in batch}
    reasoning = draw_reasoning(backend, [(k, miss, text) for k, _, _, _, miss, text in batch],
                               think, family.marker)
    ok = [d for d in reasoning if d.error is None]
    answers = draw_answers(backend, [(f"{d.key}|answer", [d.sample_index],
                                      answer_prompt(by_key[d.key][5], d.text, family, by_key[d.key][2]))
                                     for d in ok], answer)
    answer_of = {(a.key.rsplit("|", 1)[0], a.sample_index): a for a in answers}
    texts = [answer_of[(d.key, d.sample_index)].text for d in ok]
    if hasattr(scorer, "score_routed"):
        from ..lang import confident_language

        langs = [confident_language(d.language, d.confidence) for d in map(detect, texts)]
        scores, routes = scorer.score_routed(texts, langs)
    else:
        scores, routes = scorer.score(texts), [scorer.name] * len(texts)
    rows = []
    for j, d in enumerate(ok):
        _, p, lang, cond, _, _ = by_key[d.key]
        a = answer_of[(d.key, d.sample_index)]
        if a.error is not None:
            rows.append({"prompt_id": d.key, "sample_index": d.sample_index, "failed": a.error})
            continue
        rows.append({
            "prompt_id": d.key, "source_prompt_id": p.id, "condition": cond, "prompt_language": lang,
            "target_reasoning_language": target_language(cond, lang), "sample_index": d.sample_index,
            "seed": d.seed, "reasoning": d.text, "reasoning_tokens": d.n_tokens,
            "reasoning_marker_reached": d.marker_reached, "reasoning_language": detect(d.text).as_json(),
            "text": a.text, "answer_tokens": a.n_tokens, "answer_finished": a.finished,
            "language": detect(a.text).as_json(),
            "scores": {scorer.name: {k: json_float(v[j]) for k, v in scores.items()}},
            "judged_by": {scorer.name: routes[j]},
        })
    rows += [{"prompt_id": d.key, "sample_index": d.sample_index, "failed": d.error}
             for d in reasoning if d.error is not None]
    return rows
