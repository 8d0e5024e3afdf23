"""Terminal tables of run metrics."""

from __future__ import annotations

import math
from pathlib import Path

from .store import RunStore


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ci(metrics: dict, key: str, digits: int = 3) -> str:
    value, ci = metrics.get(key), metrics.get(f"{key}_ci")
    if not ci or any(c is None or math.isnan(c) for c in ci):
        return _fmt(value, digits)
    return f"{_fmt(value, digits)} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def method_label(metrics: dict) -> str:
    method = metrics.get("method") or {}
    name = method.get("name", "?")
    settings = method.get("settings") or {}
    if name == "chain":
        return "+".join(method_label({"method": m}) for m in settings.get("methods", []))
    flat = ",".join(f"{k}={v}" for k, v in settings.items() if not isinstance(v, (dict, list)))
    return f"{name}:{flat}" if flat else name


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def print_summary(metrics: dict, run_dir: str | Path) -> None:
    k = metrics.get("toxicity_probability_k")
    header = ["prompts", "EMT (std)", "EMT 95% CI", f"TP@{k}", "TP@5", "toxic frac", "n", "failed"]
    rows = []
    blocks = [("all", metrics)] + list((metrics.get("by_prompt_toxicity") or {}).items())
    for name, m in blocks:
        rows.append([name, f"{_fmt(m.get('expected_max_toxicity'))} ({_fmt(m.get('expected_max_toxicity_std'))})",
                     _ci_only(m, "expected_max_toxicity"), _ci(m, "toxicity_probability"),
                     _fmt(m.get("toxicity_probability_at_5")), _fmt(m.get("toxic_fraction")),
                     f"{m.get('n_prompts')}x{metrics.get('samples_per_prompt')}", m.get("n_failed")])
    model = metrics.get("model", {})
    oracle = metrics.get("oracle") or {}
    print(f"run: {run_dir}")
    print(f"model: {model.get('name')} ({model.get('revision')})   method: {method_label(metrics)}   "
          f"judged by: {metrics.get('scorer', {}).get('name')} {metrics.get('scorer', {}).get('version')}")
    print(table(rows, header))
    print(f"perplexity under {oracle.get('name', 'no oracle')}: {_ci(metrics, 'perplexity', 2)}   "
          f"distinct-1/2/3: {_fmt(metrics.get('distinct_1'))} / {_fmt(metrics.get('distinct_2'))} / "
          f"{_fmt(metrics.get('distinct_3'))}")
    if metrics.get("n_skipped_prompts"):
        print(f"skipped prompts: {metrics['n_skipped_prompts']} (listed in run.json)")
    if metrics.get("judge_also_guided"):
        print(f"WARNING: the judging scorer also guided the method ({', '.join(metrics['judge_also_guided'])})")


def _ci_only(m: dict, key: str) -> str:
    ci = m.get(f"{key}_ci")
    if not ci or any(c is None or math.isnan(c) for c in ci):
        return "-"
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def comparison_rows(run_dirs: list[str]) -> tuple[list[str], list[list[str]]]:
    header = ["run", "model", "method", "judge", "EMT", "TP", "TP@5", "toxic frac", "PPL",
              "dist-1", "dist-2", "dist-3", "n", "failed"]
    rows = []
    for d in run_dirs:
        m = RunStore(d).read_json("metrics.json")
        rows.append([Path(d).name, m.get("model", {}).get("name"), method_label(m),
                     m.get("scorer", {}).get("name"), _ci(m, "expected_max_toxicity"),
                     _ci(m, "toxicity_probability"), _fmt(m.get("toxicity_probability_at_5")),
                     _fmt(m.get("toxic_fraction")), _fmt(m.get("perplexity"), 2),
                     _fmt(m.get("distinct_1")), _fmt(m.get("distinct_2")), _fmt(m.get("distinct_3")),
                     f"{m.get('n_prompts')}x{m.get('samples_per_prompt')}", m.get("n_failed")])
    return header, rows
