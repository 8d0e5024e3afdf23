"""The plotly figures of the HTML page: the toxicity-fluency trade-off, splits and groups.

Every number is drawn with its 95% bootstrap interval where the run recorded
one; plotly is imported only when a figure is made (it is an optional extra).
"""

from __future__ import annotations

import math

from .colors import SPLIT_STYLE, run_color
from .escaping import plotly_text
from .metric_defs import as_float, metric_block, metric_ci, metric_def, metric_value
from .runs import Run, short_model_name


def _error(value, ci) -> dict:
    if value is None or not ci:
        return {"visible": False}
    return {"type": "data", "symmetric": False, "array": [max(0.0, ci[1] - value)],
            "arrayminus": [max(0.0, value - ci[0])], "visible": True, "thickness": 1.5, "width": 4}


def _errors(values: list, cis: list) -> dict:
    """plotly's asymmetric error bars for several points (none where a point has no interval)."""
    return {"type": "data", "symmetric": False, "thickness": 1.5, "width": 4,
            "array": [max(0.0, ci[1] - v) if (ci and v is not None) else None for v, ci in zip(values, cis)],
            "arrayminus": [max(0.0, v - ci[0]) if (ci and v is not None) else None
                           for v, ci in zip(values, cis)]}


def _bars(blocks: list[dict], key: str) -> tuple[list[float | None], dict]:
    """One bar height per metrics block and plotly's asymmetric error bars for them."""
    ys = [as_float(metric_value(b, key)) for b in blocks]
    return ys, _errors(ys, [metric_ci(b, key) for b in blocks])


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
        ppl = as_float(metric_value(m, "perplexity"))
        if ppl is None:
            continue
        xs += [ppl, *(metric_ci(m, "perplexity") or [])]
        label = plotly_text(r.label)
        flag = " ⚠" if r.judge_also_guided else ""
        why = "<br>⚠ its judge also guided its method" if flag else ""
        for col, key in ((1, "expected_max_toxicity"), (2, "toxicity_probability")):
            y = as_float(metric_value(m, key))
            if y is None:
                continue
            ys[col] += [y, *(metric_ci(m, key) or [])]
            fig.add_trace(go.Scatter(
                x=[ppl], y=[y], mode="markers+text", text=[label + flag], textposition="top center",
                name=label, legendgroup=f"run{i}", showlegend=(col == 1), customdata=[i],
                cliponaxis=False,
                marker={"size": 13, "color": run_color(i), "line": {"width": 1, "color": "#222"}},
                error_x=_error(ppl, metric_ci(m, "perplexity")), error_y=_error(y, metric_ci(m, key)),
                hovertemplate=(f"<b>{label}</b><br>{metric_def(key).label} %{{y:.3f}}"
                               f"<br>perplexity %{{x:.2f}}{why}<extra></extra>")), row=1, col=col)
    oracle = sorted({short_model_name((r.oracle or {}).get("name")) for r in runs if r.oracle})
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
        n = [b.get("n_prompts") if b else None for b in blocks]
        for col, key in ((1, "expected_max_toxicity"), (2, "toxicity_probability")):
            ys, error_y = _bars(blocks, key)
            fig.add_trace(go.Bar(
                x=labels, y=ys, name=name, legendgroup=split, showlegend=(col == 1),
                marker_color=color, customdata=n, error_y=error_y,
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
    # groups of a domain whose EMT gap is significant in some run get a "*" (permutation p < 0.05)
    flagged = {d for r in runs for d, b in (r.metrics.get("group_disparity") or {}).items()
               if (b.get("expected_max_toxicity") or {}).get("significant")} if key == "by_group" else set()
    names = [plotly_text(g) + (" *" if (g.split("/", 1)[0] if "/" in g else "all") in flagged else "")
             for g in groups]
    if flagged:
        title += " (* a domain whose EMT gap between groups is significant, permutation p < 0.05)"
    fig = go.Figure()
    for i, r in enumerate(runs):
        blocks = [(r.metrics.get(key) or {}).get(g) or {} for g in groups]
        ys, error_y = _bars(blocks, "expected_max_toxicity")
        label = plotly_text(r.label)
        fig.add_trace(go.Bar(x=names, y=ys, name=label,
                             marker_color=run_color(i), error_y=error_y,
                             hovertemplate=f"{label}<br>%{{x}}: EMT %{{y:.3f}}<extra></extra>"))
    fig.update_yaxes(title_text="EMT (lower: less toxic)", rangemode="tozero")
    # long group names slant under the axis: the legend goes above the plot, out of their way
    fig.update_layout(**_layout(barmode="group", title={"text": title, "x": 0.5}, height=500,
                                margin={"l": 60, "r": 20, "t": 90, "b": 140},
                                legend={"orientation": "h", "x": 1, "xanchor": "right",
                                        "y": 1.02, "yanchor": "bottom"}))
    return fig


def curves_figure(runs: list[Run]):
    """Sweep curves: each curve's points joined in the order swept, 95% intervals, and the
    Pareto frontier across every run (no other run both less toxic and more fluent) dashed."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from .compare import pareto_front

    curves: dict[str, list[Run]] = {}
    for r in runs:
        curves.setdefault((r.sweep or {}).get("curve") or r.label, []).append(r)
    k = sorted({str(r.k) for r in runs})
    panels = ((1, "expected_max_toxicity", "EMT"), (2, "toxicity_probability", "TP"))
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=(
        "Expected maximum toxicity vs perplexity", f"Toxicity probability (TP@{'/'.join(k)}) vs perplexity"))
    for i, (curve, members) in enumerate(curves.items()):
        color = "#222" if curve == "base" else run_color(i)
        name = plotly_text(curve)
        for col, key, _ in panels:
            pts = [(as_float(metric_value(r.metrics, "perplexity")), as_float(metric_value(r.metrics, key)), r)
                   for r in members]
            pts = [(x, y, r) for x, y, r in pts if x is not None and y is not None]
            if not pts:
                continue
            ci_x = [metric_ci(r.metrics, "perplexity") for *_, r in pts]
            ci_y = [metric_ci(r.metrics, key) for *_, r in pts]
            fig.add_trace(go.Scatter(
                x=[x for x, *_ in pts], y=[y for _, y, _ in pts], mode="lines+markers+text",
                text=[plotly_text((r.sweep or {}).get("label") or "") if len(pts) > 1 else ""
                      for *_, r in pts], textposition="top center", cliponaxis=False,
                name=name, legendgroup=f"curve{i}", showlegend=(col == 1),
                line={"color": color, "width": 2},
                marker={"size": 11, "color": color, "symbol": "star" if curve == "base" else "circle",
                        "line": {"width": 1, "color": "#222"}},
                error_x=_errors([x for x, *_ in pts], ci_x), error_y=_errors([y for _, y, _ in pts], ci_y),
                customdata=[r.label for *_, r in pts],
                hovertemplate=(f"<b>%{{customdata}}</b><br>{metric_def(key).label} %{{y:.3f}}"
                               "<br>perplexity %{x:.2f}<extra></extra>")), row=1, col=col)
    for col, key, short in panels:
        front = pareto_front(runs, key)
        pts = sorted((as_float(metric_value(r.metrics, "perplexity")), as_float(metric_value(r.metrics, key)))
                     for r in runs if r.label in front)
        if pts:
            fig.add_trace(go.Scatter(
                x=[x for x, _ in pts], y=[y for _, y in pts], mode="lines+markers", name="Pareto frontier",
                legendgroup="front", showlegend=(col == 1), line={"dash": "dash", "color": "#888", "shape": "hv"},
                marker={"size": 19, "symbol": "circle-open", "color": "#888"}, hoverinfo="skip"),
                row=1, col=col)
        fig.update_xaxes(title_text="perplexity (lower: more fluent)", row=1, col=col)
        fig.update_yaxes(title_text=f"{short} (lower: less toxic)", rangemode="tozero", row=1, col=col)
    fig.update_layout(**_layout(height=500))
    return fig
