"""Plain-text tables for the terminal: a run's summary after `detoxkit run` or `score`."""

from __future__ import annotations

from pathlib import Path

from .metric_defs import format_interval, format_value, format_with_interval
from .runs import adapter_text, method_label


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def usage_line(stats: dict | None) -> str | None:
    """API usage of a run (requests, retries, tokens, time), where its backend counted any."""
    if not stats:
        return None
    return (f"API usage: {stats.get('requests', 0)} requests ({stats.get('retries', 0)} retries, "
            f"{stats.get('failed_requests', 0)} failed), {stats.get('prompt_tokens', 0)} prompt + "
            f"{stats.get('completion_tokens', 0)} completion tokens, "
            f"{stats.get('seconds_in_requests', 0)} s in requests")


def print_summary(metrics: dict, run_dir: str | Path) -> None:
    k = metrics.get("toxicity_probability_k")
    header = ["prompts", "EMT (std)", "EMT 95% CI", f"TP@{k}", "TP@5", "toxic frac", "n", "failed"]
    rows = []
    blocks = [("all", metrics)] + list((metrics.get("by_prompt_toxicity") or {}).items())
    for name, m in blocks:
        emt = (f"{format_value(m.get('expected_max_toxicity'))} "
               f"({format_value(m.get('expected_max_toxicity_std'))})")
        rows.append([name, emt,
                     format_interval(m, "expected_max_toxicity"),
                     format_with_interval(m, "toxicity_probability"),
                     format_value(m.get("toxicity_probability_at_5")),
                     format_value(m.get("toxic_fraction")),
                     f"{m.get('n_prompts')}x{metrics.get('samples_per_prompt')}", m.get("n_failed")])
    model = metrics.get("model", {})
    oracle = metrics.get("oracle") or {}
    print(f"run: {run_dir}")
    print(f"model: {model.get('name')} ({model.get('revision')}){adapter_text(model)}   method: {method_label(metrics)}   "
          f"judged by: {metrics.get('scorer', {}).get('name')} {metrics.get('scorer', {}).get('version')}")
    print(table(rows, header))
    print(f"perplexity under {oracle.get('name', 'no oracle')}: "
          f"{format_with_interval(metrics, 'perplexity', 2)} "
          f"(as published: {format_value(metrics.get('perplexity_published'), 2)})   "
          f"distinct-1/2/3: {format_value(metrics.get('distinct_1'))} / "
          f"{format_value(metrics.get('distinct_2'))} / {format_value(metrics.get('distinct_3'))}")
    if metrics.get("n_generation_failed"):
        reasons = ", ".join(f"{k} ({v})" for k, v in (metrics.get("generation_failures") or {}).items())
        print(f"failed samples: {metrics['n_generation_failed']}, not scored, drawn again when the "
              f"same command runs again: {reasons}")
    usage = usage_line(metrics.get("backend_stats"))
    if usage:
        print(usage)
    if metrics.get("n_skipped_prompts"):
        print(f"skipped prompts: {metrics['n_skipped_prompts']} (listed in run.json)")
    print_languages(metrics)
    print_disparities(metrics)
    if metrics.get("judge_also_guided"):
        print(f"WARNING: the judging scorer also guided the method or the trained model ({', '.join(metrics['judge_also_guided'])})")


def print_languages(metrics: dict) -> None:
    """The per-language table (prompt language), and a warning per language judged outside a
    scorer's validated languages."""
    from .tables import judged_text

    by_language = metrics.get("by_language") or {}
    if len(by_language) > 1 or metrics.get("language_warnings"):
        rows = [[lang, format_with_interval(m, "expected_max_toxicity"),
                 format_value(m.get("toxicity_probability")),
                 format_with_interval(m, "answer_in_prompt_language_rate"),
                 m.get("n_prompts"), judged_text(m)] for lang, m in by_language.items()]
        print(table(rows, ["language", "EMT [95% CI]", "TP", "answer in prompt language [95% CI]",
                           "prompts", "judged by"]))
    for w in metrics.get("language_warnings") or []:
        print(f"WARNING: {w['language']} prompts: {w['message']}")


def print_disparities(metrics: dict) -> None:
    """Per-domain EMT gaps between groups, and the risk-coverage block."""
    from ..risks import coverage_lines

    for domain, block in (metrics.get("group_disparity") or {}).items():
        d = block.get("expected_max_toxicity")
        if d and d["most_affected"] is not None:
            lo, hi = d["largest_gap_ci"]
            print(f"{domain}: EMT gap {d['largest_gap']:.3f} [{lo:.3f}, {hi:.3f}] between "
                  f"{d['most_affected']} and {d['least_affected']}, permutation p = {d['p_value']:.4f}"
                  f"{' (SIGNIFICANT)' if d['significant'] else ''}")
    if metrics.get("coverage"):
        print("What this evaluation covers:")
        for line in coverage_lines(metrics["coverage"]):
            print(f"  {line}")
