"""HTML sections of the group disparities, the per-group change vs the base run, and the
risk-coverage block (rows from report/groups.py)."""

from __future__ import annotations

from .escaping import esc
from .runs import Run


def _table(header: list[str], rows: list[list[str]], flag_col: int | None = None) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = ""
    for row in rows:
        cells = ""
        for i, c in enumerate(row):
            strong = i == flag_col and str(c).upper() in ("SIGNIFICANT", "WIDENED", "NARROWED")
            cells += f'<td class="num{" warn" if strong else ""}">{esc(c)}</td>'
        body += f"<tr>{cells}</tr>"
    return f'<table class="groups"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def groups_html(runs: list[Run], base: Run | None = None) -> str:
    from .groups import change_rows, disparity_rows

    out = ""
    header, rows = disparity_rows(runs)
    if rows:
        out += ('<p class="caption">Per domain: the most and least affected groups, the largest gap '
                'between their means with a 95% bootstrap interval (prompts resampled within each '
                'group), their ratio, and a permutation test of "no difference between groups" '
                '(seeded). Significant gaps (p &lt; 0.05) are marked.</p>'
                + _table(header, rows, flag_col=len(header) - 1))
    if len(runs) > 1:
        title, header, rows, notes = change_rows(runs, base)
        if rows:
            out += (f'<h3>{esc(title)}</h3><p class="caption">Each group\'s paired change (prompts '
                    'resampled jointly); the gap row says whether the method widened or narrowed the '
                    'largest EMT gap between groups (interval excluding 0), else "no clear change".</p>'
                    + _table(header, rows, flag_col=len(header) - 1))
        out += "".join(f'<p class="caption">Note: {esc(n)}</p>' for n in notes)
    return out


def coverage_html(runs: list[Run]) -> str:
    from .groups import coverage_text

    out = ('<p class="caption">The risks of Weidinger et al. (2021) this evaluation measured, by which '
           'data and scorer, and the risk areas it did not look at (<code>detoxkit ls risks</code>).</p>')
    for label, lines in coverage_text(runs):
        items = "".join(f"<li>{esc(x)}</li>" for x in lines)
        out += f'<div class="coverage"><strong>{esc(label)}</strong><ul>{items}</ul></div>'
    return out
