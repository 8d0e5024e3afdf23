"""Moderation reports (terminal, Markdown, HTML) from OUT/moderation.json: the scorers side by
side at their own threshold and at the best-F1 threshold (tuned on these very labels, so an
upper bound), per language and per category, with the risk-coverage block."""

from __future__ import annotations

import json
from pathlib import Path

from ..report.metric_defs import format_value
from ..risks import coverage_lines

TUNED_NOTE = ("best-F1 threshold: tuned on these same labels, so its figures are an optimistic "
              "upper bound, not what the scorer would reach at a threshold fixed beforehand")


def load_summary(path: str | Path) -> dict:
    return json.loads((Path(path) / "moderation.json").read_text(encoding="utf-8"))


def _op(block: dict, point: str, key: str) -> str:
    return format_value(((block or {}).get(point) or {}).get(key))


def scorer_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    header = ["scorer", "messages", "positives", "AUPRC", "threshold", "precision", "recall", "F1",
              "best-F1 threshold", "precision", "recall", "F1"]
    rows = []
    for name, m in (summary.get("metrics") or {}).items():
        b = m["all"]
        rows.append([name, b.get("n"), b.get("positives"), format_value(b.get("auprc")),
                     _op(b, "at_threshold", "threshold"), _op(b, "at_threshold", "precision"),
                     _op(b, "at_threshold", "recall"), _op(b, "at_threshold", "f1"),
                     _op(b, "at_best_f1", "threshold"), _op(b, "at_best_f1", "precision"),
                     _op(b, "at_best_f1", "recall"), _op(b, "at_best_f1", "f1")])
    return header, rows


def subset_rows(summary: dict, key: str) -> tuple[list[str], list[list[str]]]:
    """One row per language (or category) and scorer: counts, AUPRC, F1 and recall at both
    operating points (recall alone where a subset holds only flagged messages)."""
    header = [key.removeprefix("by_"), "scorer", "messages", "positives", "AUPRC", "F1", "recall",
              "F1 (best-F1 thr.)", "recall (best-F1 thr.)", "false positive rate"]
    rows = []
    metrics = summary.get("metrics") or {}
    values = sorted({v for m in metrics.values() for v in m.get(key) or {}})
    for v in values:
        for name, m in metrics.items():
            b = (m.get(key) or {}).get(v)
            if b:
                rows.append([v, name, b.get("n"), b.get("positives"), format_value(b.get("auprc")),
                             _op(b, "at_threshold", "f1"), _op(b, "at_threshold", "recall"),
                             _op(b, "at_best_f1", "f1"), _op(b, "at_best_f1", "recall"),
                             _op(b, "at_threshold", "false_positive_rate")])
    return header, rows


def _intro(summary: dict) -> str:
    inp = summary.get("input") or {}
    return (f"{summary.get('n_messages')} messages from {inp.get('input')} ({inp.get('format')} format"
            f"{', limit ' + str(inp['limit']) if inp.get('limit') else ''}), "
            f"{summary.get('n_labelled')} with a reference label; skipped rows: "
            f"{summary.get('n_skipped_rows', 0)}")


def terminal_report(summary: dict) -> str:
    from ..report.terminal import table

    parts = [_intro(summary)]
    if summary.get("metrics"):
        parts += ["", table(*reversed(scorer_rows(summary))), f"({TUNED_NOTE})"]
        for key in ("by_language", "by_category"):
            header, rows = subset_rows(summary, key)
            if rows and len({r[0] for r in rows}) > 1:
                parts += ["", table(rows, header)]
    else:
        parts.append("no reference labels: flagged messages per scorer: "
                     + ", ".join(f"{k} {v}" for k, v in (summary.get("n_flagged") or {}).items()))
    parts += ["", "What this evaluation covers:"] + [f"  {x}" for x in coverage_lines(summary["coverage"])]
    return "\n".join(parts) + "\n"


def markdown_report(summary: dict) -> str:
    from ..report.markdown import md_escape, md_table

    parts = ["## detoxkit moderation report", "", md_escape(_intro(summary)) + ".", ""]
    if summary.get("metrics"):
        header, rows = scorer_rows(summary)
        parts += [md_table(header, rows), "", f"> {md_escape(TUNED_NOTE)}.", ""]
        for key, title in (("by_language", "By language"), ("by_category", "By category")):
            h, r = subset_rows(summary, key)
            if r:
                parts += [f"### {title}", "", md_table(h, r), ""]
    parts += ["### What this evaluation covers", ""] + [f"- {md_escape(x)}" for x in
                                                        coverage_lines(summary["coverage"])]
    return "\n".join(parts).rstrip() + "\n"


def html_report(summary: dict, title: str = "detoxkit moderation report") -> str:
    from ..report.escaping import esc
    from ..report.html import CSP, static_text

    def table(header, rows) -> str:
        head = "".join(f"<th>{esc(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f'<td class="num">{esc(c)}</td>' for c in r) + "</tr>" for r in rows)
        return f'<table class="metrics"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

    sections = [f"<p>{esc(_intro(summary))}.</p>"]
    if summary.get("metrics"):
        sections += ['<section id="scorers"><h2>Scorers side by side</h2>', table(*scorer_rows(summary)),
                     f'<p class="caption">{esc(TUNED_NOTE)}.</p></section>']
        for key, heading in (("by_language", "By language"), ("by_category", "By category")):
            h, r = subset_rows(summary, key)
            if r:
                sections += [f'<section id="{key}"><h2>{heading}</h2>', table(h, r), "</section>"]
    sections.append(coverage_html(summary["coverage"]))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f"<title>{esc(title)}</title><style>{static_text('report.css')}</style></head><body>"
            f"<header><h1>{esc(title)}</h1></header><main>{''.join(sections)}</main></body></html>\n")


def coverage_html(block: dict) -> str:
    from ..report.escaping import esc

    items = "".join(f"<li>{esc(x)}</li>" for x in coverage_lines(block))
    return f'<section id="coverage"><h2>What this evaluation covers</h2><ul>{items}</ul></section>'
