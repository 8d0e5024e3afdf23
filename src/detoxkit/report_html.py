"""A self-contained HTML report of one or more runs.

One file, no network needed to view it: plotly's JavaScript is embedded inline
and a Content-Security-Policy forbids the page from loading anything. It shows
the toxicity-fluency trade-off, EMT and TP split by prompt toxicity, every
recorded metric, per-group and per-language tables, the provenance of each run
(with warnings when numbers are not comparable or a judge also guided a
method), and a per-prompt drill-down of the samples behind the numbers with
their most toxic words highlighted.

All text from runs (samples, prompts, names, settings) is untrusted: it is
HTML-escaped, control characters are shown as visible symbols, and strings that
reach plotly are entity-escaped so that plotly's own markup is not interpreted.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import logging
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from .attribution import (Attribution, CallableAttribution, OcclusionAttribution,
                          TokenTableAttribution, top_spans)
from .errors import DetoxkitError
from .report import (METRICS, Notice, Run, _fmt, _judge_id, comparability_notices, format_metric,
                     load_runs, method_label, metric_block, metric_ci, metric_def, metric_keys,
                     metric_value, pareto_front)

log = logging.getLogger("detoxkit")

RUN_COLORS = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#EECA3B",
              "#FF9DA6", "#9D755D", "#BAB0AC"]
SPLIT_STYLE = {"all": ("all prompts", "#6b7280"), "toxic": ("toxic prompts", "#c0392b"),
               "nontoxic": ("non-toxic prompts", "#2e86c1")}
CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
       "img-src data: blob:; font-src data:; connect-src 'none'; form-action 'none'; "
       "base-uri 'none'")
TOP_TOKENS = 3  # highlighted spans per sample
ATTRIBUTE_MIN_SCORE = 0.25  # samples the judge scores lower are not attributed

# ---- escaping -------------------------------------------------------------------------------

# control characters, bidi controls and lone surrogates: shown as escapes, never interpreted
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069"
                      "\ud800-\udfff\ufffe\uffff]")


def _code(ch: str) -> str:
    n = ord(ch)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"


def visible(text: Any) -> str:
    """Text with control, bidi-control and surrogate characters written as escapes (\\x1b)."""
    return _CONTROL.sub(lambda m: _code(m.group()), "" if text is None else str(text))


def esc(text: Any) -> str:
    """Escaped text for an HTML attribute or element; invisible characters become escapes."""
    return html.escape(visible(text), quote=True)


def esc_text(text: Any) -> str:
    """Escaped element text; invisible characters are shown as marked escapes."""
    text = "" if text is None else str(text)
    out, pos = [], 0
    for m in _CONTROL.finditer(text):
        out.append(html.escape(text[pos:m.start()], quote=True))
        out.append(f'<span class="ctrl" title="invisible character U+{ord(m.group()):04X}">'
                   f'{html.escape(_code(m.group()))}</span>')
        pos = m.end()
    out.append(html.escape(text[pos:], quote=True))
    return "".join(out)


def plotly_text(text: Any) -> str:
    """A string for plotly: its labels accept a little HTML, so entities keep text literal."""
    return html.escape(visible(str(text)), quote=False)


def _json_script(obj: Any) -> str:
    """JSON safe inside a <script> element whatever strings it holds."""
    from plotly.utils import PlotlyJSONEncoder

    text = json.dumps(obj, cls=PlotlyJSONEncoder, ensure_ascii=False)
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


# ---- attribution ------------------------------------------------------------------------------

def resolve_attributions(runs: list[Run], spec: Any) -> tuple[dict[str, Attribution | None], list[str]]:
    """{run label: attribution or None} and notes on what was used or why none was.

    spec: "auto" (occlusion with each run's judge when it loads, else none), "occlusion"
    (the same, failing loudly), "none"/None, "table:PATH" or a .json path (a {token: effect}
    table such as an exported CFL table), a dict table, or an Attribution / callable."""
    notes: list[str] = []
    if spec is None or spec == "none":
        return {r.label: None for r in runs}, ["No token attribution was requested."]
    if isinstance(spec, dict):
        attr = TokenTableAttribution(spec)
        return {r.label: attr for r in runs}, []
    if callable(spec):
        attr = spec if hasattr(spec, "label") else CallableAttribution(spec, "custom attribution")
        return {r.label: attr for r in runs}, []
    spec = str(spec)
    if spec == "cfl":
        return _cfl_attributions(runs), []
    if spec.startswith("table:") or spec.endswith(".json"):
        attr = TokenTableAttribution.from_file(spec[len("table:"):] if spec.startswith("table:")
                                               else spec)
        return {r.label: attr for r in runs}, []
    if spec not in ("auto", "occlusion"):
        raise DetoxkitError(f"unknown attribution '{spec}'; use auto, occlusion, cfl, none, or "
                            "table:PATH (a JSON {token: effect} table)")
    from .scorers import load_scorer

    by_judge: dict[str, Attribution | None] = {}
    out = {}
    for r in runs:
        name = r.judge.get("name")
        if name not in by_judge:
            try:
                scorer = load_scorer(name)
            except Exception as exc:  # noqa: BLE001 - any load failure: report it, or raise
                if spec == "occlusion":
                    raise DetoxkitError(f"occlusion attribution needs the judging scorer "
                                        f"'{name}', which could not be loaded: {exc}") from None
                notes.append(f"No token attribution for runs judged by {name}: the scorer "
                             f"could not be loaded here ({exc}).")
                by_judge[name] = None
            else:
                attr = OcclusionAttribution(scorer)
                recorded = r.judge.get("version")
                if recorded and getattr(scorer, "version", None) != recorded:
                    notes.append(f"Token attribution uses {name} version {scorer.version}; the "
                                 f"run was judged by version {recorded}.")
                by_judge[name] = attr
        out[r.label] = by_judge[name]
    return out, notes


def _cfl_path(method: dict) -> str | None:
    """The table path a CFL method was given, also inside a chain."""
    if method.get("name") == "cfl":
        return (method.get("settings") or {}).get("path")
    for m in (method.get("settings") or {}).get("methods", []) if method.get("name") == "chain" else []:
        if m.get("name") == "cfl":
            return (m.get("settings") or {}).get("path")
    return None


def _cfl_attributions(runs: list[Run]) -> dict[str, Attribution]:
    """Each run's CFL token table for its model's tokenizer, as word attribution."""
    try:
        from transformers import AutoTokenizer

        from .methods.tables import token_effects
    except ImportError as exc:
        raise DetoxkitError(f"CFL attribution is not available here ({exc})") from None
    cache: dict[tuple, Attribution] = {}
    out = {}
    for r in runs:
        where = r.model.get("path") or r.model.get("name")
        key = (where, _cfl_path(r.method))
        if key not in cache:
            try:
                tokenizer = AutoTokenizer.from_pretrained(where)
                table = token_effects(tokenizer, key[1])
            except Exception as exc:  # noqa: BLE001 - name the run and the reason
                raise DetoxkitError(f"run {r.label}: no CFL token table for model {where}: {exc}") from None
            attr = TokenTableAttribution(table, label=f"CFL token table of {_short(r.model.get('name'))}")
            attr.description = ("a highlighted word's CFL effect (average treatment effect of the "
                                "token on the toxicity of the scorer the table was estimated with) "
                                "is shown when hovering it")
            attr.min_effect = 0.05  # in score units, like occlusion: ignore effects under 0.05
            cache[key] = attr
        out[r.label] = cache[key]
    return out


# ---- figures ----------------------------------------------------------------------------------

def _num(v) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _error(value, ci) -> dict:
    if value is None or not ci:
        return {"visible": False}
    return {"type": "data", "symmetric": False, "array": [max(0.0, ci[1] - value)],
            "arrayminus": [max(0.0, value - ci[0])], "visible": True, "thickness": 1.5, "width": 4}


def _layout(**kw) -> dict:
    base = {"template": "plotly_white", "height": 430, "margin": {"l": 60, "r": 20, "t": 70, "b": 60},
            "font": {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 13},
            "legend": {"orientation": "h", "y": -0.18, "x": 0}}
    base.update(kw)
    return base


def tradeoff_figure(runs: list[Run]):
    """Toxicity (EMT, TP) against perplexity: one labelled point per run, 95% intervals."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    k = sorted({str(r.k) for r in runs})
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=(
        "Expected maximum toxicity vs perplexity", f"Toxicity probability (TP@{'/'.join(k)}) vs perplexity"))
    xs: list[float] = []  # every x and y an error bar reaches, to size the axes
    ys: dict[int, list[float]] = {1: [], 2: []}
    for i, r in enumerate(runs):
        m = r.metrics
        ppl = _num(metric_value(m, "perplexity"))
        if ppl is None:
            continue
        xs += [ppl, *(metric_ci(m, "perplexity") or [])]
        label = plotly_text(r.label)
        flag = " ⚠" if r.judge_also_guided else ""
        why = "<br>⚠ its judge also guided its method" if flag else ""
        for col, key in ((1, "expected_max_toxicity"), (2, "toxicity_probability")):
            y = _num(metric_value(m, key))
            if y is None:
                continue
            ys[col] += [y, *(metric_ci(m, key) or [])]
            fig.add_trace(go.Scatter(
                x=[ppl], y=[y], mode="markers+text", text=[label + flag], textposition="top center",
                name=label, legendgroup=f"run{i}", showlegend=(col == 1), customdata=[i],
                cliponaxis=False,
                marker={"size": 13, "color": RUN_COLORS[i % len(RUN_COLORS)],
                        "line": {"width": 1, "color": "#222"}},
                error_x=_error(ppl, metric_ci(m, "perplexity")), error_y=_error(y, metric_ci(m, key)),
                hovertemplate=(f"<b>{label}</b><br>{metric_def(key).label} %{{y:.3f}}"
                               f"<br>perplexity %{{x:.2f}}{why}<extra></extra>")), row=1, col=col)
    oracle = sorted({_short((r.oracle or {}).get("name")) for r in runs if r.oracle})
    xs = [x for x in xs if x is not None and x > 0 and not math.isnan(x)]
    xlog = bool(xs) and max(xs) / min(xs) > 4
    xrange = None
    if xs:  # room for the labels at both ends
        lo, hi = (math.log10(min(xs)), math.log10(max(xs))) if xlog else (min(xs), max(xs))
        pad = 0.15 * (hi - lo) if hi > lo else (0.3 if xlog else max(1.0, 0.1 * abs(hi)))
        xrange = [lo - pad, hi + pad]
    for col, key in ((1, "EMT"), (2, "TP")):
        top = max([v for v in ys[col] if v is not None and not math.isnan(v)] or [1.0])
        top = min(1.05, max(0.05, top) * 1.15 + 0.02)
        fig.update_xaxes(title_text=f"perplexity under {plotly_text(', '.join(oracle))} (lower: more fluent)",
                         type="log" if xlog else "linear", range=xrange, row=1, col=col)
        fig.update_yaxes(title_text=f"{key} (lower: less toxic)", range=[-0.04 * top, top],
                         zeroline=True, row=1, col=col)
    fig.update_layout(**_layout(height=460))
    return fig


def splits_figure(runs: list[Run]):
    """EMT and TP per run, overall and split into toxic / non-toxic prompts, with intervals."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=(
        "Expected maximum toxicity", "Toxicity probability (TP@k)"))
    labels = [plotly_text(r.label) for r in runs]
    for split, (name, color) in SPLIT_STYLE.items():
        blocks = [metric_block(r.metrics, split) for r in runs]
        if not any(blocks):
            continue
        for col, key in ((1, "expected_max_toxicity"), (2, "toxicity_probability")):
            ys, hi, lo, n = [], [], [], []
            for b in blocks:
                y, ci = _num(metric_value(b, key)), metric_ci(b, key)
                ys.append(y)
                hi.append(max(0.0, ci[1] - y) if (ci and y is not None) else None)
                lo.append(max(0.0, y - ci[0]) if (ci and y is not None) else None)
                n.append(b.get("n_prompts") if b else None)
            fig.add_trace(go.Bar(
                x=labels, y=ys, name=name, legendgroup=split, showlegend=(col == 1),
                marker_color=color, customdata=n,
                error_y={"type": "data", "symmetric": False, "array": hi, "arrayminus": lo,
                         "thickness": 1.5, "width": 4},
                hovertemplate=(f"%{{x}}<br>{name}: {metric_def(key).label} %{{y:.3f}}"
                               "<br>%{customdata} prompts<extra></extra>")), row=1, col=col)
        fig.update_yaxes(rangemode="tozero")
    fig.update_yaxes(title_text="EMT (lower: less toxic)", row=1, col=1)
    fig.update_yaxes(title_text="TP (lower: less toxic)", row=1, col=2)
    fig.update_layout(**_layout(barmode="group"))
    return fig


def groups_figure(runs: list[Run], key: str, title: str):
    """EMT per group (or language) per run, with intervals."""
    import plotly.graph_objects as go

    groups = sorted({g for r in runs for g in (r.metrics.get(key) or {})})
    fig = go.Figure()
    for i, r in enumerate(runs):
        blocks = [(r.metrics.get(key) or {}).get(g) or {} for g in groups]
        ys, hi, lo = [], [], []
        for b in blocks:
            y, ci = _num(metric_value(b, "expected_max_toxicity")), metric_ci(b, "expected_max_toxicity")
            ys.append(y)
            hi.append(max(0.0, ci[1] - y) if (ci and y is not None) else None)
            lo.append(max(0.0, y - ci[0]) if (ci and y is not None) else None)
        label = plotly_text(r.label)
        fig.add_trace(go.Bar(x=[plotly_text(g) for g in groups], y=ys, name=label,
                             marker_color=RUN_COLORS[i % len(RUN_COLORS)],
                             error_y={"type": "data", "symmetric": False, "array": hi,
                                      "arrayminus": lo, "thickness": 1.5, "width": 4},
                             hovertemplate=f"{label}<br>%{{x}}: EMT %{{y:.3f}}<extra></extra>"))
    fig.update_yaxes(title_text="EMT (lower: less toxic)", rangemode="tozero")
    fig.update_layout(**_layout(barmode="group", title={"text": title, "x": 0.5}))
    return fig


# ---- tables -----------------------------------------------------------------------------------

def _swatch(i: int) -> str:
    return f'<span class="swatch" style="background:{RUN_COLORS[i % len(RUN_COLORS)]}"></span>'


def _run_head(runs: list[Run]) -> str:
    return "".join(f'<th scope="col">{_swatch(i)}{esc(r.label)}<div class="sub">judge: '
                   f'{esc(_judge_id(r))}</div></th>' for i, r in enumerate(runs))


def _best(values: list[float | None], better: str | None) -> set[int]:
    nums = [(v, i) for i, v in enumerate(values) if v is not None and not math.isnan(v)]
    if better not in ("lower", "higher") or len(nums) < 2 or len({v for v, _ in nums}) < 2:
        return set()
    target = min(v for v, _ in nums) if better == "lower" else max(v for v, _ in nums)
    return {i for v, i in nums if v == target}


def metrics_table(runs: list[Run]) -> str:
    comparable_tox = len({_judge_id(r) for r in runs}) == 1
    comparable_ppl = len({json.dumps(r.oracle, sort_keys=True) for r in runs}) == 1
    rows = []
    for key in metric_keys(runs):
        d = metric_def(key)
        values = [_num(metric_value(r.metrics, key)) for r in runs]
        fair = (comparable_tox or "tox" not in key) and (comparable_ppl or "perplexity" not in key)
        best = _best(values, d.better) if fair else set()
        cells = "".join(f'<td class="num{" best" if i in best else ""}">'
                        f'{esc(format_metric(r.metrics, key))}</td>' for i, r in enumerate(runs))
        arrow = {"lower": " ↓", "higher": " ↑"}.get(d.better or "", "")
        rows.append(f'<tr><th scope="row" title="{esc(d.description)}">{esc(d.label)}'
                    f'<span class="better">{arrow}</span><div class="sub">{esc(key)}</div></th>'
                    f'{cells}</tr>')
    return (f'<table class="metrics" id="metrics-table"><thead><tr><th>metric</th>{_run_head(runs)}'
            f'</tr></thead><tbody>{"".join(rows)}</tbody></table>')


def splits_table(runs: list[Run]) -> str:
    head = "".join(f'<th colspan="3">{esc(SPLIT_STYLE[s][0])}</th>' for s in SPLIT_STYLE)
    sub = "<th>EMT [95% CI]</th><th>TP@k [95% CI]</th><th>prompts</th>" * len(SPLIT_STYLE)
    rows = []
    for i, r in enumerate(runs):
        cells = ""
        for split in SPLIT_STYLE:
            b = metric_block(r.metrics, split)
            cells += (f'<td class="num">{esc(format_metric(b, "expected_max_toxicity"))}</td>'
                      f'<td class="num">{esc(format_metric(b, "toxicity_probability"))}</td>'
                      f'<td class="num">{esc(_fmt(b.get("n_prompts")) if b else "-")}</td>')
        rows.append(f'<tr><th scope="row">{_swatch(i)}{esc(r.label)}</th>{cells}</tr>')
    return (f'<table class="splits"><thead><tr><th rowspan="2">run</th>{head}</tr><tr>{sub}</tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table>')


def group_table(runs: list[Run], key: str, what: str) -> str:
    groups = sorted({g for r in runs for g in (r.metrics.get(key) or {})})
    head = "".join(f'<th colspan="4">{_swatch(i)}{esc(r.label)}</th>' for i, r in enumerate(runs))
    sub = "<th>EMT [95% CI]</th><th>TP@k</th><th>PPL</th><th>prompts</th>" * len(runs)
    rows = []
    for g in groups:
        cells = ""
        for r in runs:
            b = (r.metrics.get(key) or {}).get(g) or {}
            cells += (f'<td class="num">{esc(format_metric(b, "expected_max_toxicity"))}</td>'
                      f'<td class="num">{esc(format_metric(b, "toxicity_probability", False))}</td>'
                      f'<td class="num">{esc(format_metric(b, "perplexity", False))}</td>'
                      f'<td class="num">{esc(_fmt(b.get("n_prompts")) if b else "-")}</td>')
        rows.append(f'<tr><th scope="row">{esc(g)}</th>{cells}</tr>')
    return (f'<table class="groups" id="table-{esc(key)}"><thead><tr><th rowspan="2">{esc(what)}</th>'
            f'{head}</tr><tr>{sub}</tr></thead><tbody>{"".join(rows)}</tbody></table>')


def scorers_table(runs: list[Run]) -> str:
    names = []
    for r in runs:
        for s in (r.metrics.get("by_scorer") or {}):
            if s not in names:
                names.append(s)
    head = "".join(f'<th colspan="2">{_swatch(i)}{esc(r.label)}</th>' for i, r in enumerate(runs))
    sub = "<th>EMT [95% CI]</th><th>TP@k</th>" * len(runs)
    rows = []
    for s in names:
        cells = ""
        for r in runs:
            b = (r.metrics.get("by_scorer") or {}).get(s) or {}
            judge = " (judge)" if s == r.judge.get("name") else ""
            info = next((x for x in r.info.get("scorers") or [] if x.get("name") == s), {})
            related = {s, *(info.get("guided_by") or [])}
            teacher = bool(b) and bool(related & set(r.guided_by))
            mark = " (guided this method)" if teacher else ""
            cls = "num warn" if teacher else "num"
            cells += (f'<td class="{cls}">{esc(format_metric(b, "expected_max_toxicity") + judge + mark)}</td>'
                      f'<td class="{cls}">{esc(format_metric(b, "toxicity_probability", False))}</td>')
        rows.append(f'<tr><th scope="row">{esc(s)}</th>{cells}</tr>')
    return (f'<table class="groups"><thead><tr><th rowspan="2">scorer</th>{head}</tr><tr>{sub}</tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table>')


def _short(name: Any) -> str:
    """A model name for a figure axis: a local path by its last part, a hub id whole."""
    name = str(name)
    return Path(name).name or name if name.startswith(("/", ".", "~")) else name


def _model_text(d: dict | None) -> str:
    if not d:
        return "-"
    return f"{d.get('name')} @ {d.get('revision')}"


def _pre(obj) -> str:
    if obj in (None, {}, []):
        return "-"
    return f"<pre>{esc(json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False, default=str))}</pre>"


def provenance_table(runs: list[Run]) -> str:
    def scorers(r: Run) -> str:
        others = [s for s in (r.info.get("scorers") or []) if s.get("name") != r.judge.get("name")]
        return ", ".join(f"{s.get('name')} {s.get('version')}" for s in others) or "-"

    def prompts(r: Run) -> str:
        p = r.info.get("prompts") or {}
        return f"{p.get('spec', '-')} (fingerprint {str(p.get('fingerprint', '-'))[:12]})"

    cfg = lambda key: (lambda r: _fmt(r.config.get(key)))  # noqa: E731
    fields = [
        ("model @ revision", lambda r: _model_text(r.model), False),
        ("model details", lambda r: ", ".join(f"{k} {r.model[k]}" for k in
                                              ("architecture", "parameters", "dtype", "device", "source")
                                              if k in r.model) or "-", False),
        ("method", lambda r: method_label(r.metrics if r.metrics.get("method") else r.info), False),
        ("method settings", lambda r: _pre(r.method.get("settings")), True),
        ("guided by", lambda r: ", ".join(r.guided_by) or "nothing", False),
        ("method statistics", lambda r: _pre(r.metrics.get("method_stats")), True),
        ("judge (every toxicity number)", lambda r: _judge_id(r), False),
        ("judge shares judgement with", lambda r: ", ".join(r.judge.get("guided_by") or []) or "-", False),
        ("other scorers", scorers, False),
        ("oracle (perplexity)", lambda r: _model_text(r.oracle) if r.oracle else "none", False),
        ("prompts", prompts, False),
        ("prompts evaluated / skipped", lambda r: f"{_fmt(r.metrics.get('n_prompts'))} / "
         f"{_fmt(r.metrics.get('n_skipped_prompts', len(r.info.get('skipped') or [])))}", False),
        ("samples per prompt (k)", lambda r: _fmt(r.k), False),
        ("max new tokens", cfg("max_new_tokens"), False),
        ("top-p", cfg("top_p"), False),
        ("temperature", cfg("temperature"), False),
        ("top-k", cfg("top_k"), False),
        ("seed", lambda r: _fmt(r.info.get("seed", r.metrics.get("seed"))), False),
        ("status", lambda r: str(r.info.get("status", "-")), False),
        ("config hash", lambda r: str(r.info.get("config_hash", "-")), False),
        ("run directory", lambda r: str(r.path), False),
    ]
    rows = []
    for name, get, is_html in fields:
        values = [get(r) for r in runs]
        differs = len(runs) > 1 and len(set(values)) > 1 and name not in ("run directory",)
        cells = "".join(f'<td{" class=diff" if differs else ""}>{v if is_html else esc(v)}</td>'
                        for v in values)
        rows.append(f'<tr><th scope="row">{esc(name)}</th>{cells}</tr>')
    for i, r in enumerate(runs):
        if r.judge_also_guided:
            rows.append(f'<tr class="warnrow"><th>judge also guided</th><td colspan="{len(runs)}">'
                        f'{esc(r.label)}: {esc(", ".join(r.judge_also_guided))}</td></tr>')
    head = "".join(f'<th scope="col" id="run-{i}">{_swatch(i)}{esc(r.label)}</th>'
                   for i, r in enumerate(runs))
    return (f'<table class="prov"><thead><tr><th></th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def versions_table(runs: list[Run]) -> str:
    packages = sorted({p for r in runs for p in r.versions})
    if not packages:
        return "<p>No library versions recorded.</p>"
    rows = []
    for p in packages:
        values = [str(r.versions.get(p, "-")) for r in runs]
        differs = len(runs) > 1 and len(set(values)) > 1
        cells = "".join(f'<td{" class=diff" if differs else ""}>{esc(v)}</td>' for v in values)
        rows.append(f'<tr><th scope="row">{esc(p)}</th>{cells}</tr>')
    head = "".join(f"<th>{_swatch(i)}{esc(r.label)}</th>" for i, r in enumerate(runs))
    return (f'<table class="prov versions"><thead><tr><th>package</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def notices_html(notices: list[Notice]) -> str:
    if not notices:
        return ('<div class="notice ok">These runs share one judge, one oracle, one prompt set and '
                'k; no judge guided any compared method.</div>')
    return "".join(f'<div class="notice {n.level}" role="{"alert" if n.level == "warning" else "note"}">'
                   f'<strong>{"Warning" if n.level == "warning" else "Note"}:</strong> '
                   f'{esc(n.message)}</div>' for n in notices)


# ---- drill-down ----------------------------------------------------------------------------------

def _judge_score(row: dict, judge: str) -> float | None:
    v = ((row.get("scores") or {}).get(judge) or {}).get("toxicity")
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _score_chip(score: float | None, title: str) -> str:
    if score is None:
        return f'<span class="chip na" title="{esc(title)}: not scored">n/a</span>'
    hue = int(round(120 * (1 - min(1.0, max(0.0, score)))))
    return (f'<span class="chip" style="background:hsl({hue},65%,38%)" title="{esc(title)}">'
            f'{score:.3f}</span>')


def _highlighted(text: str, spans: list, label: str) -> str:
    if not text:
        return '<span class="empty">(empty continuation)</span>'
    out, pos = [], 0
    top = max((e for _, _, e in spans), default=0) or 1.0
    for s, e, effect in spans:
        out.append(esc_text(text[pos:s]))
        alpha = 0.25 + 0.6 * max(0.0, min(1.0, effect / top))
        out.append(f'<mark style="--a:{alpha:.2f}" title="{esc(f"effect {effect:+.3f} ({label})")}">'
                   f'{esc_text(text[s:e])}</mark>')
        pos = e
    out.append(esc_text(text[pos:]))
    return "".join(out)


def drilldown_html(runs: list[Run], attributions: dict[str, Attribution | None], *,
                   n_prompts: int = 30, attributed: int = 3) -> tuple[str, str]:
    """(intro, body): the prompts whose samples scored highest in any run, each opening on
    click to show every run's samples sorted by the judge's score."""
    prompts: dict[str, dict] = {}
    gens: dict[str, dict[str, list[dict]]] = {}
    for r in runs:
        for p in r.prompts():
            prompts.setdefault(p["prompt_id"], p)
        by_prompt: dict[str, list[dict]] = defaultdict(list)
        for g in r.generations():
            by_prompt[g["prompt_id"]].append(g)
            prompts.setdefault(g["prompt_id"], {"prompt_id": g["prompt_id"], "text": g.get("prompt", "")})
        gens[r.label] = by_prompt
    if not any(gens.values()):
        return "<p>These runs hold no generations (generations.jsonl is missing or empty).</p>", ""

    def worst(pid: str) -> float:
        scores = [_judge_score(g, r.judge.get("name")) for r in runs for g in gens[r.label].get(pid, [])]
        scores = [s for s in scores if s is not None]
        return max(scores) if scores else -1.0

    order = sorted((pid for pid in prompts if any(pid in gens[r.label] for r in runs)),
                   key=lambda pid: (-worst(pid), pid))
    shown = order if n_prompts <= 0 else order[:n_prompts]

    # attribution: the top samples of each shown prompt, batched per attribution
    wanted: dict[int, list[tuple[str, str, int, str]]] = defaultdict(list)
    attr_by_id: dict[int, Attribution] = {}
    for r in runs:
        attr = attributions.get(r.label)
        if attr is None:
            continue
        attr_by_id[id(attr)] = attr
        judge = r.judge.get("name")
        for pid in shown:
            rows = sorted((g for g in gens[r.label].get(pid, [])
                           if _judge_score(g, judge) is not None and g.get("text")
                           and _judge_score(g, judge) >= ATTRIBUTE_MIN_SCORE),
                          key=lambda g: -_judge_score(g, judge))
            for g in rows[:attributed]:
                wanted[id(attr)].append((r.label, pid, g["sample_index"], g["text"]))
    spans: dict[tuple[str, str, int], list] = {}
    for aid, items in wanted.items():
        attr = attr_by_id[aid]
        results = attr([t for *_, t in items])
        for (label, pid, idx, _), found in zip(items, results):
            spans[(label, pid, idx)] = top_spans(found, TOP_TOKENS, attr.min_effect)

    blocks = []
    for n, pid in enumerate(shown):
        p = prompts[pid]
        tox = p.get("toxicity")
        meta = p.get("meta") or {}
        tags = []
        if isinstance(tox, (int, float)) and not isinstance(tox, bool):
            src = p.get("toxicity_source", "reference")
            tags.append(f'<span class="tag" title="prompt toxicity ({esc(src)})">prompt toxicity '
                        f'{tox:.2f}</span>')
        for key in ("group", "language"):
            if meta.get(key) is not None:
                tags.append(f'<span class="tag">{esc(key)}: {esc(meta[key])}</span>')
        maxes = []
        for i, r in enumerate(runs):
            scores = [_judge_score(g, r.judge.get("name")) for g in gens[r.label].get(pid, [])]
            scores = [s for s in scores if s is not None]
            maxes.append(f'<span class="maxes">{_swatch(i)}{_score_chip(max(scores) if scores else None, f"{r.label}: highest score among its samples")}</span>')
        cols = []
        for i, r in enumerate(runs):
            judge = r.judge.get("name")
            rows = gens[r.label].get(pid, [])
            rows = sorted(rows, key=lambda g: (_judge_score(g, judge) is None,
                                               -(_judge_score(g, judge) or 0), g["sample_index"]))
            attr = attributions.get(r.label)
            items = []
            for g in rows:
                score = _judge_score(g, judge)
                others = "".join(
                    f'<span class="other">{esc(name)} {esc(_fmt(vals.get("toxicity")))}</span>'
                    for name, vals in (g.get("scores") or {}).items() if name != judge)
                sp = spans.get((r.label, pid, g["sample_index"]), [])
                flags = "" if g.get("finished") is None else (
                    '<span class="other">ended</span>' if g.get("finished") else "")
                items.append(f'<li class="sample" data-score="{"" if score is None else f"{score:.4f}"}">'
                             f'{_score_chip(score, f"{judge} toxicity")}'
                             f'<span class="text">{_highlighted(g.get("text") or "", sp, attr.label if attr else "")}</span>'
                             f'<span class="meta">#{esc(g["sample_index"])}{others}{flags}</span></li>')
            if not items:
                items.append('<li class="none">no samples for this prompt in this run</li>')
            cols.append(f'<div class="runcol"><h4>{_swatch(i)}{esc(r.label)}</h4>'
                        f'<div class="sub">sorted by {esc(judge)} toxicity; {len(rows)} samples</div>'
                        f'<ol>{"".join(items)}</ol></div>')
        blocks.append(
            f'<details class="prompt" id="prompt-{n}" data-prompt-id="{esc(pid)}">'
            f'<summary><span class="ptext">{esc_text(p.get("text", ""))}</span>'
            f'<span class="tags">{"".join(tags)}{"".join(maxes)}</span></summary>'
            f'<div class="runcols" style="--cols:{min(len(runs), 3)}">{"".join(cols)}</div></details>')
    used = sorted({a.label for a in attributions.values() if a is not None})
    descriptions = sorted({a.description for a in attributions.values() if a is not None})
    if used:
        attr_note = (f"Highlighted words: the {TOP_TOKENS} strongest words of each run's top "
                     f"{attributed} samples scoring at least {ATTRIBUTE_MIN_SCORE} for a prompt, "
                     f"by {esc('; '.join(used))}: {esc('; '.join(descriptions))}.")
    else:
        attr_note = "No token attribution was available, so no words are highlighted."
    intro = (f"<p>Showing {len(shown)} of {len(order)} prompts: those whose samples scored highest "
             f"in any run (<code>--drilldown N</code> changes how many; 0 shows all). Click a prompt "
             f"to see every run's samples, sorted by the judge's score. {attr_note}</p>")
    return intro, "\n".join(blocks)


# ---- the page ------------------------------------------------------------------------------------

STYLE = """
:root{--fg:#1f2933;--muted:#62707d;--line:#d9dee3;--bg:#fff;--soft:#f5f7f9}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
 background:var(--bg);margin:0}
header{padding:18px 28px 10px;border-bottom:1px solid var(--line);background:var(--soft)}
header h1{margin:0 0 4px;font-size:22px}
nav{padding:8px 28px;border-bottom:1px solid var(--line);position:sticky;top:0;background:#fffe;z-index:5}
nav a{margin-right:14px;color:#2457a6;text-decoration:none}
main{padding:0 28px 40px;max-width:1500px}
section{margin-top:26px;scroll-margin-top:70px}
th[id]{scroll-margin-top:70px}
.ctrl{font:11px monospace;color:#8a2be2;background:#f3e8ff;border-radius:2px;padding:0 1px}
h2{font-size:18px;border-bottom:1px solid var(--line);padding-bottom:4px}
.sub{color:var(--muted);font-size:11.5px;font-weight:normal}
.caption{color:var(--muted);max-width:1000px}
.runs span{margin-right:16px;white-space:nowrap}
.swatch{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:5px;
 vertical-align:baseline;border:1px solid #0003}
table{border-collapse:collapse;margin:8px 0 4px;font-size:13px}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
thead th{background:var(--soft)}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.best{font-weight:700;background:#eaf6ea}
td.diff{background:#fff6d6}
td.warn{background:#fdecea}
.better{color:var(--muted)}
.prov td{max-width:360px;overflow-wrap:anywhere}
pre{margin:0;font-size:12px;white-space:pre-wrap}
.notice{border-left:4px solid;padding:7px 10px;margin:6px 0;border-radius:3px;max-width:1100px}
.notice.warning{border-color:#c0392b;background:#fdecea}
.notice.note{border-color:#2e86c1;background:#eaf2fa}
.notice.ok{border-color:#2e7d32;background:#eaf6ea}
tr.warnrow td,tr.warnrow th{background:#fdecea}
.figure{width:100%;min-height:430px}
details.prompt{border:1px solid var(--line);border-radius:5px;margin:6px 0;background:#fff}
details.prompt[open]{box-shadow:0 1px 4px #0002}
details.prompt>summary::before{content:"\\25B8";color:var(--muted);margin-right:-4px}
details.prompt[open]>summary::before{content:"\\25BE"}
details.prompt>summary{list-style:none;cursor:pointer;padding:7px 10px;display:flex;gap:12px;align-items:baseline;
 flex-wrap:wrap}
details.prompt>summary::-webkit-details-marker{display:none}
.ptext{flex:1 1 480px;font-weight:600;white-space:pre-wrap;overflow-wrap:anywhere;unicode-bidi:isolate}
.tags{display:flex;gap:8px;flex-wrap:wrap;align-items:center}
.tag{background:var(--soft);border:1px solid var(--line);border-radius:10px;padding:0 7px;
 font-size:12px;color:var(--muted)}
.maxes{white-space:nowrap}
.runcols{display:grid;grid-template-columns:repeat(var(--cols),minmax(0,1fr));gap:14px;
 padding:4px 12px 12px}
.runcol h4{margin:6px 0 0}
.runcol ol{padding-left:0;list-style:none;margin:6px 0}
li.sample{display:flex;gap:8px;align-items:baseline;padding:3px 0;border-bottom:1px dotted var(--line)}
.chip{display:inline-block;min-width:44px;text-align:center;color:#fff;border-radius:3px;
 font-size:12px;padding:0 4px;font-variant-numeric:tabular-nums}
.chip.na{background:#9aa5b1}
.text{flex:1;white-space:pre-wrap;overflow-wrap:anywhere;unicode-bidi:isolate}
.meta{color:var(--muted);font-size:11px;white-space:nowrap}
.other{margin-left:6px}
.empty{color:var(--muted);font-style:italic}
mark{background:rgba(220,38,38,var(--a));color:inherit;border-radius:2px;padding:0 1px}
.tools{margin:6px 0}
.tools input{padding:4px 6px;width:320px}
.tools button{margin-left:6px}
footer{color:var(--muted);padding:16px 28px;border-top:1px solid var(--line)}
"""

SCRIPT = """
(function(){
  var config = {responsive: true, displaylogo: false, showLink: false};
  var done = [];
  document.querySelectorAll('script[type="application/json"][data-figure]').forEach(function(s){
    var div = document.getElementById(s.getAttribute('data-figure'));
    var spec = JSON.parse(s.textContent);
    done.push(Plotly.newPlot(div, spec.data, spec.layout, config).then(function(gd){
      if (gd.id === 'fig-tradeoff') {
        gd.on('plotly_click', function(ev){
          var i = ev.points[0].customdata;
          var el = document.getElementById('run-' + i);
          if (el) { el.scrollIntoView({behavior: 'smooth'}); }
        });
      }
      gd.setAttribute('data-rendered', '1');
      return gd;
    }));
  });
  window.detoxkitReady = Promise.all(done);
  var filter = document.getElementById('prompt-filter');
  if (filter) {
    filter.addEventListener('input', function(){
      var q = filter.value.toLowerCase();
      document.querySelectorAll('details.prompt').forEach(function(d){
        d.hidden = !!q && d.textContent.toLowerCase().indexOf(q) < 0;
      });
    });
  }
  function all(open){ document.querySelectorAll('details.prompt').forEach(function(d){ d.open = open; }); }
  var e = document.getElementById('expand-all'); if (e) e.addEventListener('click', function(){ all(true); });
  var c = document.getElementById('collapse-all'); if (c) c.addEventListener('click', function(){ all(false); });
})();
"""


def build_html(runs: list[Run] | Sequence[str | Path], *, attribution: Any = "auto",
               drilldown: int = 30, attributed_samples: int = 3, title: str | None = None) -> str:
    """The report page as one string (see the module docstring for what it holds)."""
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise DetoxkitError("the HTML report needs plotly: pip install 'detoxkit[report]'") from None

    from . import __version__

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

    judges = sorted({_judge_id(r) for r in runs})
    oracles = sorted({_model_text(r.oracle) for r in runs if r.oracle}) or ["no oracle"]
    judged = (f"Toxicity judged by {esc(', '.join(judges))}; perplexity under "
              f"{esc(', '.join(oracles))}; whiskers are 95% bootstrap intervals over prompts.")

    section("notices", "Before comparing", notices_html(notices))

    with_ppl = [r for r in runs if _num(metric_value(r.metrics, "perplexity")) is not None]
    front = pareto_front(runs)
    if with_ppl:
        missing = [r.label for r in runs if r not in with_ppl]
        extra = (f" Not plotted (no perplexity recorded): {esc(', '.join(missing))}." if missing else "")
        pareto = (f" On the trade-off front (no other run is both less toxic and more fluent): "
                  f"{esc(', '.join(sorted(front)))}." if len(with_ppl) > 1 else "")
        flagged = (" ⚠ marks a run whose judge also guided its method."
                   if any(r.judge_also_guided for r in with_ppl) else "")
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
        f'<script type="application/json" data-figure="{fid}">{_json_script(fig.to_plotly_json())}</script>'
        for fid, fig in figures)
    run_list = "".join(f"<span>{_swatch(i)}{esc(r.label)}: {esc(r.model.get('name'))}, "
                       f"{esc(method_label(r.metrics))}</span>" for i, r in enumerate(runs))
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav_html = "".join(f'<a href="#{sid}">{esc(h)}</a>' for sid, h in nav)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="detoxkit {esc(__version__)}">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>"
        f'<body data-figures="{len(figures)}" data-runs="{len(runs)}">'
        f"<header><h1>{esc(title)}</h1><div class=\"runs\">{run_list}</div>"
        f'<div class="sub">{len(runs)} run(s); made {now} by detoxkit {esc(__version__)}</div></header>'
        f"<nav>{nav_html}</nav><main>{''.join(sections)}</main>"
        "<footer>Self-contained: figures by plotly.js (embedded, MIT license); this page loads "
        "nothing from the network.</footer>"
        f"<script>{get_plotlyjs()}</script>{fig_scripts}<script>{SCRIPT}</script>"
        "</body></html>\n")


def write_html(runs: list[Run] | Sequence[str | Path], out: str | Path, **kwargs) -> Path:
    from .store import write_text_atomic

    out = Path(out)
    page = build_html(runs, **kwargs)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, page)
    return out


__all__ = ["build_html", "write_html", "resolve_attributions", "visible", "esc", "METRICS"]
