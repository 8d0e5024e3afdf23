"""A self-contained HTML report of one or more runs.

One file, no network needed to view it: plotly's JavaScript, the page's CSS
and its script (static/report.css, static/report.js) are embedded inline and a
Content-Security-Policy forbids the page from loading anything. It shows the
toxicity-fluency trade-off, EMT and TP split by prompt toxicity, every
recorded metric, per-group and per-language tables, the provenance of each run
(with warnings when numbers are not comparable or a judge also guided a
method), and a per-prompt drill-down of the samples behind the numbers with
their most toxic words highlighted.
"""

from __future__ import annotations

import datetime as _dt
import functools
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from ..attribution import resolve_attributions
from ..errors import DetoxkitError
from .colors import swatch
from .compare import Notice, comparability_notices, pareto_front
from .drilldown import drilldown_html
from .escaping import esc, script_json
from .figures import curves_figure, groups_figure, splits_figure, tradeoff_figure
from .metric_defs import as_float, metric_value
from .runs import Run, adapter_text, load_runs, method_label, model_text
from .groups_html import coverage_html, groups_html
from .tables import (group_table, metrics_table, notices_html, paired_table, provenance_table,
                     scorers_table, splits_table, versions_table)

CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
       "img-src data: blob:; font-src data:; connect-src 'none'; form-action 'none'; "
       "base-uri 'none'")


@functools.cache
def static_text(name: str) -> str:
    """A file of static/ (the page's CSS or script), to be inlined: the CSP forbids loading it."""
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def build_html(runs: list[Run] | Sequence[str | Path], *, attribution: Any = "auto",
               drilldown: int = 30, attributed_samples: int = 3, title: str | None = None,
               base: Run | None = None) -> str:
    """The report page as one string (see the module docstring for what it holds)."""
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise DetoxkitError("the HTML report needs plotly: pip install 'detoxkit[report]'") from None

    from .. import __version__

    runs = list(runs)
    if not all(isinstance(r, Run) for r in runs):
        runs = load_runs(runs)
    if not runs:
        raise DetoxkitError("no runs to report on")
    notices = comparability_notices(runs)
    attributions, attr_notes = resolve_attributions(runs, attribution)
    notices += [Notice("note", n) for n in attr_notes]
    title = title or ("detoxkit report: " + ", ".join(r.label for r in runs))

    figures: list[tuple[str, Any]] = []
    sections: list[str] = []
    nav: list[tuple[str, str]] = []

    def section(sid: str, heading: str, body: str) -> None:
        nav.append((sid, heading))
        sections.append(f'<section id="{sid}"><h2>{esc(heading)}</h2>{body}</section>')

    def figure(fid: str, fig) -> str:
        figures.append((fid, fig))
        return f'<div class="figure" id="{fid}"></div>'

    judges = sorted({r.judge_label for r in runs})
    oracles = sorted({model_text(r.oracle) for r in runs if r.oracle}) or ["no oracle"]
    judged = (f"Toxicity judged by {esc(', '.join(judges))}; perplexity under "
              f"{esc(', '.join(oracles))}; whiskers are 95% bootstrap intervals over prompts.")

    section("notices", "Before comparing", notices_html(notices))
    section("coverage", "What this evaluation covers", coverage_html(runs))

    with_ppl = [r for r in runs if as_float(metric_value(r.metrics, "perplexity")) is not None]
    front = pareto_front(runs)
    if with_ppl:
        missing = [r.label for r in runs if r not in with_ppl]
        extra = (f" Not plotted (no perplexity recorded): {esc(', '.join(missing))}." if missing else "")
        pareto = (f" On the trade-off front (no other run is both less toxic and more fluent): "
                  f"{esc(', '.join(sorted(front)))}." if len(with_ppl) > 1 else "")
        flagged = (" ⚠ marks a run whose judge also guided its method."
                   if any(r.judge_also_guided for r in with_ppl) else "")
        if any(r.sweep for r in runs):  # a sweep: one curve per method, the frontier dashed
            front_tp = pareto_front(runs, "toxicity_probability")
            section("tradeoff", "Trade-off curves",
                    figure("fig-tradeoff", curves_figure(runs)) +
                    f'<p class="caption">One curve per swept method, its points in the order swept; '
                    f'lower left is better. The dashed line is the Pareto frontier across all runs. '
                    f'{judged} On the frontier by toxicity probability: '
                    f'{esc(", ".join(sorted(front_tp)))}.{pareto}{extra}{flagged}</p>')
        else:
            section("tradeoff", "Toxicity-fluency trade-off",
                    figure("fig-tradeoff", tradeoff_figure(runs)) +
                    f'<p class="caption">One point per run; lower left is better (less toxic, more '
                    f'fluent). {judged}{pareto}{extra}{flagged} Click a point to see its provenance.</p>')
    else:
        section("tradeoff", "Toxicity-fluency trade-off",
                '<p class="caption">No run recorded perplexity (they ran with <code>--oracle '
                'none</code>), so there is no trade-off to plot; the toxicity of each run is '
                'below.</p>')

    section("splits", "Toxicity by prompt toxicity",
            figure("fig-splits", splits_figure(runs)) +
            f'<p class="caption">Expected maximum toxicity and toxicity probability of each run, '
            f'over all prompts and split into toxic (prompt toxicity ≥ 0.5) and non-toxic prompts. '
            f'{judged}</p>' + splits_table(runs))

    if len(runs) > 1:
        section("paired", "Paired differences", paired_table(runs, base))

    section("metrics", "Every metric",
            '<p class="caption">Every number recorded in each run\'s metrics.json, with 95% '
            'bootstrap intervals over prompts where computed. ↓/↑: lower/higher is better; the '
            'best value is bold where the runs are comparable (same judge, same oracle). Decoding '
            'overhead and any other figure a method records appears at the end.</p>' +
            metrics_table(runs))

    for key, heading, what in (("by_group", "By group", "group"),
                               ("by_language", "By language", "language")):
        groups = {g for r in runs for g in (r.metrics.get(key) or {})}
        if groups:
            body = group_table(runs, key, what)
            if len(groups) > 1:
                body = figure(f"fig-{key}", groups_figure(runs, key, f"EMT {heading.lower()}")) + body
            section(key.replace("_", "-"), heading, body +
                    f'<p class="caption">{judged} Small groups have wide intervals.</p>')
    groups_body = groups_html(runs, base)
    if groups_body:
        section("group-gaps", "Gaps between groups", groups_body)
    if any(r.metrics.get("by_scorer") for r in runs):
        section("by-scorer", "The same samples under every scorer",
                '<p class="caption">Each run\'s samples scored by every scorer it recorded; the '
                'judge is marked. Methods should be compared under a scorer none of them used '
                'for guidance: red cells are numbers from a scorer that guided that run\'s '
                'method (graded by its own teacher).</p>' + scorers_table(runs))

    section("provenance", "Provenance",
            '<p class="caption">Where every number comes from. Cells that differ between runs are '
            'shaded.</p>' + provenance_table(runs) + "<h3>Library versions</h3>" + versions_table(runs))

    intro, body = drilldown_html(runs, attributions, n_prompts=drilldown,
                                 attributed=attributed_samples)
    tools = ('<div class="tools"><input id="prompt-filter" type="search" placeholder="filter prompts '
             'and samples by text" aria-label="filter prompts"><button id="expand-all" type="button">'
             'expand all</button><button id="collapse-all" type="button">collapse all</button></div>'
             if body else "")
    section("generations", "Generations behind the numbers",
            '<p class="caption">Content warning: model samples below can be offensive.</p>' + intro +
            tools + f'<div id="drilldown">{body}</div>')

    fig_scripts = "".join(
        f'<script type="application/json" data-figure="{fid}">{script_json(fig.to_plotly_json())}</script>'
        for fid, fig in figures)
    run_list = "".join(f"<span>{swatch(i)}{esc(r.label)}: {esc(r.model.get('name'))}"
                       f"{esc(adapter_text(r.model))}, "
                       f"{esc(method_label(r.metrics))}</span>" for i, r in enumerate(runs))
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav_html = "".join(f'<a href="#{sid}">{esc(h)}</a>' for sid, h in nav)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="detoxkit {esc(__version__)}">'
        f"<title>{esc(title)}</title><style>{static_text('report.css')}</style></head>"
        f'<body data-figures="{len(figures)}" data-runs="{len(runs)}">'
        f"<header><h1>{esc(title)}</h1><div class=\"runs\">{run_list}</div>"
        f'<div class="sub">{len(runs)} run(s); made {now} by detoxkit {esc(__version__)}</div></header>'
        f"<nav>{nav_html}</nav><main>{''.join(sections)}</main>"
        "<footer>Self-contained: figures by plotly.js (embedded, MIT license); this page loads "
        "nothing from the network.</footer>"
        f"<script>{get_plotlyjs()}</script>{fig_scripts}<script>{static_text('report.js')}</script>"
        "</body></html>\n")


def write_html(runs: list[Run] | Sequence[str | Path], out: str | Path, **kwargs) -> Path:
    from ..store import write_text_atomic

    out = Path(out)
    page = build_html(runs, **kwargs)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, page)
    return out
