"""A Markdown report for papers and pull requests: results, splits, groups, provenance.

Run names and settings are untrusted text and GitHub renders inline HTML, so
every cell is escaped for both Markdown and HTML.
"""

from __future__ import annotations

import json

from .compare import comparability_notices, front_marks, paired_rows
from .metric_defs import (format_metric, format_value, in_catalogue, metric_block, metric_def,
                          metric_keys)
from .runs import Run, adapter_text, method_label


def md_escape(text) -> str:
    """Text safe inside a Markdown table cell (GitHub renders inline HTML, so escape it too)."""
    s = str(text)
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = s.replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`").replace("*", "\\*")
    s = s.replace("_", "\\_").replace("[", "\\[").replace("]", "\\]")
    return " ".join(s.split())


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(md_escape(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _settings_text(method: dict) -> str:
    settings = method.get("settings") or {}
    return json.dumps(settings, sort_keys=True, default=str) if settings else ""


def _group_rows(runs: list[Run], key: str) -> list[list[str]]:
    from .tables import judged_text

    rows = []
    groups = sorted({g for r in runs for g in (r.metrics.get(key) or {})})
    for g in groups:
        for r in runs:
            m = (r.metrics.get(key) or {}).get(g)
            if m is None:
                continue
            rows.append([g, r.label, format_metric(m, "expected_max_toxicity"),
                         format_metric(m, "toxicity_probability"),
                         format_metric(m, "toxic_fraction", with_ci=False),
                         format_metric(m, "perplexity", with_ci=False),
                         format_value(m.get("n_prompts"))]
                        + ([format_metric(m, "answer_in_prompt_language_rate"), judged_text(m)]
                           if key == "by_language" else [])
                        + ([format_metric(m, "mean_toxicity")] if key == "by_group" else []))
    return rows


def markdown_report(runs: list[Run], base: Run | None = None) -> str:
    """A Markdown report for papers and pull requests: results, splits, groups, provenance."""
    parts = ["## detoxkit report", ""]
    judges = sorted({r.judge_label for r in runs})
    oracles = sorted({str((r.oracle or {}).get("name")) for r in runs if r.oracle})
    ks = sorted({str(r.k) for r in runs})
    parts.append(f"Judged by {', '.join(f'**{md_escape(j)}**' for j in judges)}; perplexity under "
                 f"{', '.join(f'**{md_escape(o)}**' for o in oracles) or 'no oracle'}; "
                 f"k = {', '.join(ks)} samples per prompt; intervals are 95% bootstrap over prompts.")
    parts.append("")
    for n in comparability_notices(runs):
        tag = "Warning" if n.level == "warning" else "Note"
        parts.append(f"> **{tag}:** {md_escape(n.message)}")
        parts.append("")
    front = front_marks(runs)
    header = ["run", "model", "method", "EMT", "TP@k", "TP@5", "toxic frac", "PPL",
              "PPL (as published)", "dist-1", "dist-2", "dist-3", "prompts x k"]
    rows = []
    for r in runs:
        m = r.metrics
        rows.append([r.label + (f" (pareto: {front[r.label]})" if r.label in front and len(runs) > 1
                                else ""),
                     f"{r.model.get('name')}{adapter_text(r.model)}", method_label(m),
                     format_metric(m, "expected_max_toxicity"), format_metric(m, "toxicity_probability"),
                     format_metric(m, "toxicity_probability_at_5", with_ci=False),
                     format_metric(m, "toxic_fraction", with_ci=False),
                     format_metric(m, "perplexity"),
                     format_metric(m, "perplexity_published", with_ci=False),
                     format_value(m.get("distinct_1")),
                     format_value(m.get("distinct_2")), format_value(m.get("distinct_3")),
                     f"{m.get('n_prompts')} x {r.k}"])
    parts += [md_table(header, rows), ""]
    if len(runs) > 1:
        title, p_header, p_rows, notes = paired_rows(runs, base)
        if p_rows:
            parts += [f"### {title}", "", md_table(p_header, p_rows), ""]
        parts += [f"> note: {md_escape(n)}" for n in notes] + ([""] if notes else [])
    extra = [k for k in metric_keys(runs) if not in_catalogue(k)]
    if extra or any(r.metrics.get("elapsed_s") is not None for r in runs):
        keys = ["elapsed_s"] + extra
        parts += ["### Time and other recorded figures", "", md_table(
            ["run"] + [metric_def(k).label for k in keys],
            [[r.label] + [format_metric(r.metrics, k) for k in keys] for r in runs]), ""]
    split_rows = []
    for r in runs:
        for split in ("toxic", "nontoxic"):
            m = metric_block(r.metrics, split)
            if m:
                split_rows.append([r.label, split, format_metric(m, "expected_max_toxicity"),
                                   format_metric(m, "toxicity_probability"),
                                   format_metric(m, "toxic_fraction", with_ci=False),
                                   format_value(m.get("n_prompts"))])
    if split_rows:
        parts += ["### By prompt toxicity", "", md_table(
            ["run", "prompts", "EMT", "TP@k", "toxic frac", "n prompts"], split_rows), ""]
    for key, title in (("by_group", "By group"), ("by_language", "By language")):
        rows = _group_rows(runs, key)
        if rows:
            extra = (["answer in prompt language", "judged by"] if key == "by_language"
                     else ["mean toxicity"])
            parts += [f"### {title}", "", md_table(
                [title.split()[-1], "run", "EMT", "TP@k", "toxic frac", "PPL", "n prompts"] + extra,
                rows), ""]
    parts += _groups_markdown(runs, base)
    prov = []
    for r in runs:
        oracle = r.oracle or {}
        model = f"{r.model.get('name')} ({r.model.get('revision')}){adapter_text(r.model)}"
        prov.append([r.label, model,
                     f"{r.method.get('name')} {_settings_text(r.method)}".strip(),
                     r.judge_label, ", ".join(r.guided_by) or "-",
                     f"{oracle.get('name')} ({oracle.get('revision')})" if r.oracle else "-",
                     format_value(r.info.get("seed", r.metrics.get("seed"))),
                     (r.info.get("prompts") or {}).get("spec", "-")])
    parts += ["### Provenance", "", md_table(
        ["run", "model (revision)", "method (settings)", "judge (version)", "guided by", "oracle",
         "seed", "prompts"], prov), ""]
    packages = sorted({p for r in runs for p in r.versions})
    if packages:
        vrows = [[p] + [r.versions.get(p, "-") for r in runs] for p in packages]
        parts += ["Library versions:", "", md_table(["package"] + [r.label for r in runs], vrows), ""]
    return "\n".join(parts).rstrip() + "\n"


def _groups_markdown(runs: list[Run], base: Run | None) -> list[str]:
    """Disparities between groups, the per-group change vs the base run, and the coverage block."""
    from .groups import change_rows, coverage_text, disparity_rows

    parts = []
    header, rows = disparity_rows(runs)
    if rows:
        parts += ["### Disparity between groups", "", "Largest gap: the most minus the least affected "
                  "group's mean, 95% bootstrap interval (prompts resampled within groups); p: "
                  "permutation test of no difference between groups.", "", md_table(header, rows), ""]
    if len(runs) > 1:
        title, header, rows, notes = change_rows(runs, base)
        if rows:
            parts += [f"### {md_escape(title)}", "", md_table(header, rows), ""]
        parts += [f"> note: {md_escape(n)}" for n in notes] + ([""] if notes else [])
    parts += ["### What this evaluation covers", ""]
    for label, lines in coverage_text(runs):
        parts += [f"**{md_escape(label)}**", ""] + [f"- {md_escape(x)}" for x in lines] + [""]
    return parts
