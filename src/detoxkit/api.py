"""The Python API for notebooks and scripts (re-exported lazily by `import detoxkit`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class RunResult:
    metrics: dict[str, Any]  # what metrics.json holds
    run_dir: Path  # the run directory (config.yaml, run.json, generations.jsonl, ...)


def evaluate(model: str | None = None, *, methods: str | list[str] | None = None,
             scorers: str | list[str] | None = None, out: str | Path | None = None,
             config: str | Path | None = None, **settings: Any) -> RunResult:
    """The same run as `detoxkit run`: sample, score, measure and write a resumable run directory.

    Settings are RunConfig's fields (prompts, limit, samples, max_new_tokens, top_p, temperature,
    top_k, seed, oracle, on_bad, device, dtype, batch_size); `config` is a YAML file that the
    arguments override, as the CLI's flags do. Calling it again with the same arguments
    resumes the run."""
    from .config import build_config, load_yaml_config
    from .runner import Evaluation

    from_file = load_yaml_config(config) if config else {}
    given = {"model": model, "methods": methods, "scorers": scorers,
             "out": str(out) if out is not None else None, **settings}
    values = {**from_file, **{k: v for k, v in given.items() if v is not None}}
    evaluation = Evaluation(build_config(values, config, from_file))
    metrics = evaluation.run()
    return RunResult(metrics, evaluation.store.path)


def load_method(spec: str | list[str]):
    """A decoding-time method (or a chain) from its spec, e.g. "dexperts:alpha=2.0"."""
    from .methods import build_method

    return build_method(spec)


def load_scorer(spec: str, device: str = "cpu", batch_size: int | None = None):
    """A scorer from its spec; `scorer.score(texts)` -> {attribute: array of scores in [0, 1]}."""
    from .scorers import load_scorer as load

    return load(spec, device=device, batch_size=batch_size)


def as_logits_processor(method, lm):
    """A transformers LogitsProcessor for a method (object or spec) on a loaded model or tokenizer."""
    from .backends.hf.processors import as_logits_processor as wrap

    return wrap(method, lm)


def load_prompts(spec: str = "embedded", *, limit: int | None = None, seed: int = 0,
                 text_field: str | None = None, on_bad: str = "error"):
    """A PromptSet by name or path (`.prompts`, `.source`, `.fingerprint`, `.skipped`)."""
    from .prompts import load_prompts as load

    return load(spec, limit=limit, seed=seed, text_field=text_field, on_bad=on_bad)


def load_run(path: str | Path, label: str | None = None):
    """A finished (or partial) run directory, for its metrics, prompts and generations."""
    from .report import load_run as load

    return load(path, label=label)


def load_model(spec: str, device: str = "cpu", dtype: str = "auto"):
    """A causal LM for the hf backend (embedded name, local directory or hub id): `.model`,
    `.tokenizer`, `.describe()`."""
    from .backends.hf import load_lm

    return load_lm(spec, device=device, dtype=dtype)
