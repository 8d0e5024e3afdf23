"""The HTML tables of the page: every metric, splits, groups, scorers, provenance, notices.

Best values are marked only where runs are comparable (one judge, one oracle),
and provenance cells that differ between runs are shaded.
"""

from __future__ import annotations

import json
import math

from ..hygiene import judge_tags, shared_teachers
from .colors import SPLIT_STYLE, swatch
from .compare import Notice
from .escaping import esc
from .metric_defs import (as_float, format_metric, format_value, metric_block, metric_def, metric_keys,
                          metric_value)
from .runs import Run, method_label, model_text


def _run_head(runs: list[Run]) -> str:
    return "".join(f'<th scope="col">{swatch(i)}{esc(r.label)}<div class="sub">judge: '
                   f'{esc(r.judge_label)}</div></th>' for i, r in enumerate(runs))


def _best(values: list[float | None], better: str | None) -> set[int]:
    nums = [(v, i) for i, v in enumerate(values) if v is not None and not math.isnan(v)]
    if better not in ("lower", "higher") or len(nums) < 2 or len({v for v, _ in nums}) < 2:
        return set()
    target = min(v for v, _ in nums) if better == "lower" else max(v for v, _ in nums)
    return {i for v, i in nums if v == target}


def _number_cells(block: dict, columns: list[tuple[str, bool]]) -> str:
    """A block's metrics as number cells, each (key, with interval), then its prompt count."""
    cells = "".join(f'<td class="num">{esc(format_metric(block, key, with_ci))}</td>'
                    for key, with_ci in columns)
    return cells + f'<td class="num">{esc(format_value(block.get("n_prompts")) if block else "-")}</td>'


def _two_row_head_table(attrs: str, corner: str, head: str, sub: str, rows: list[str]) -> str:
    """A table whose head is a row of column groups over a row of their columns."""
    return (f'<table {attrs}><thead><tr><th rowspan="2">{corner}</th>{head}</tr><tr>{sub}</tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table>')


def metrics_table(runs: list[Run]) -> str:
    comparable_tox = len({r.judge_label for r in runs}) == 1
    comparable_ppl = len({json.dumps(r.oracle, sort_keys=True) for r in runs}) == 1
    rows = []
    for key in metric_keys(runs):
        d = metric_def(key)
        values = [as_float(metric_value(r.metrics, key)) for r in runs]
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
    columns = [("expected_max_toxicity", True), ("toxicity_probability", True)]
    rows = []
    for i, r in enumerate(runs):
        cells = "".join(_number_cells(metric_block(r.metrics, split), columns) for split in SPLIT_STYLE)
        rows.append(f'<tr><th scope="row">{swatch(i)}{esc(r.label)}</th>{cells}</tr>')
    return _two_row_head_table('class="splits"', "run", head, sub, rows)


def judged_text(block: dict) -> str:
    """Which scorer judged how many samples of a language block, and how many out of its
    validated languages (a routed scorer records one per sample)."""
    judged = ", ".join(f"{k} {v}" for k, v in (block.get("judged_by") or {}).items()) or "-"
    n = block.get("n_unvalidated_judgements") or 0
    return judged + (f" ({n} unvalidated)" if n else "")


def group_table(runs: list[Run], key: str, what: str) -> str:
    groups = sorted({g for r in runs for g in (r.metrics.get(key) or {})})
    lang = key == "by_language"
    width = 6 if lang else 5
    head = "".join(f'<th colspan="{width}">{swatch(i)}{esc(r.label)}</th>' for i, r in enumerate(runs))
    sub = ("<th>EMT [95% CI]</th><th>TP@k</th><th>PPL</th><th>prompts</th>"
           + ("<th>answer in prompt language [95% CI]</th><th>judged by</th>" if lang
              else "<th>mean toxicity [95% CI]</th>")) * len(runs)
    columns = [("expected_max_toxicity", True), ("toxicity_probability", False), ("perplexity", False)]
    rows = []
    for g in groups:
        cells = ""
        for r in runs:
            block = (r.metrics.get(key) or {}).get(g) or {}
            cells += _number_cells(block, columns)
            if lang:
                warn = " warn" if block.get("n_unvalidated_judgements") else ""
                cells += (f'<td class="num">{esc(format_metric(block, "answer_in_prompt_language_rate"))}'
                          f'</td><td class="num{warn}">{esc(judged_text(block))}</td>')
            else:  # groups: the mean toxicity over the group's prompts
                cells += f'<td class="num">{esc(format_metric(block, "mean_toxicity"))}</td>'
        rows.append(f'<tr><th scope="row">{esc(g)}</th>{cells}</tr>')
    return _two_row_head_table(f'class="groups" id="table-{esc(key)}"', esc(what), head, sub, rows)


def scorers_table(runs: list[Run]) -> str:
    names = []
    for r in runs:
        for s in (r.metrics.get("by_scorer") or {}):
            if s not in names:
                names.append(s)
    head = "".join(f'<th colspan="2">{swatch(i)}{esc(r.label)}</th>' for i, r in enumerate(runs))
    sub = "<th>EMT [95% CI]</th><th>TP@k</th>" * len(runs)
    rows = []
    for s in names:
        cells = ""
        for r in runs:
            b = (r.metrics.get("by_scorer") or {}).get(s) or {}
            judge = " (judge)" if s == r.judge.get("name") else ""
            info = next((x for x in r.info.get("scorers") or [] if x.get("name") == s), {})
            teacher = bool(b) and bool(shared_teachers(r.guided_by, judge_tags({**info, "name": s})))
            mark = " (guided this method)" if teacher else ""
            cls = "num warn" if teacher else "num"
            cells += (f'<td class="{cls}">{esc(format_metric(b, "expected_max_toxicity") + judge + mark)}</td>'
                      f'<td class="{cls}">{esc(format_metric(b, "toxicity_probability", False))}</td>')
        rows.append(f'<tr><th scope="row">{esc(s)}</th>{cells}</tr>')
    return _two_row_head_table('class="groups"', "scorer", head, sub, rows)


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

    cfg = lambda key: (lambda r: format_value(r.config.get(key)))  # noqa: E731
    fields = [
        ("model @ revision", lambda r: model_text(r.model), False),
        ("model details", lambda r: ", ".join(f"{k} {r.model[k]}" for k in
                                              ("architecture", "parameters", "dtype", "device", "source")
                                              if k in r.model) or "-", False),
        ("method", lambda r: method_label(r.metrics if r.metrics.get("method") else r.info), False),
        ("method settings", lambda r: _pre(r.method.get("settings")), True),
        ("guided by", lambda r: ", ".join(r.guided_by) or "nothing", False),
        ("method statistics", lambda r: _pre(r.metrics.get("method_stats")), True),
        ("judge (every toxicity number)", lambda r: r.judge_label, False),
        ("judge shares judgement with", lambda r: ", ".join(r.judge.get("guided_by") or []) or "-", False),
        ("other scorers", scorers, False),
        ("oracle (perplexity)", lambda r: model_text(r.oracle) if r.oracle else "none", False),
        ("prompts", prompts, False),
        ("prompts evaluated / skipped", lambda r: f"{format_value(r.metrics.get('n_prompts'))} / "
         f"{format_value(r.metrics.get('n_skipped_prompts', len(r.info.get('skipped') or [])))}", False),
        ("samples per prompt (k)", lambda r: format_value(r.k), False),
        ("max new tokens", cfg("max_new_tokens"), False),
        ("top-p", cfg("top_p"), False),
        ("temperature", cfg("temperature"), False),
        ("top-k", cfg("top_k"), False),
        ("seed", lambda r: format_value(r.info.get("seed", r.metrics.get("seed"))), False),
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
    head = "".join(f'<th scope="col" id="run-{i}">{swatch(i)}{esc(r.label)}</th>'
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
    head = "".join(f"<th>{swatch(i)}{esc(r.label)}</th>" for i, r in enumerate(runs))
    return (f'<table class="prov versions"><thead><tr><th>package</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def notices_html(notices: list[Notice]) -> str:
    if not notices:
        return ('<div class="notice ok">These runs share one judge, one oracle, one prompt set and '
                'k; no judge guided any compared method.</div>')
    return "".join(f'<div class="notice {n.level}" role="{"alert" if n.level == "warning" else "note"}">'
                   f'<strong>{"Warning" if n.level == "warning" else "Note"}:</strong> '
                   f'{esc(n.message)}</div>' for n in notices)


def paired_table(runs: list[Run], base: Run | None = None) -> str:
    """Each run minus the base run, with paired 95% intervals (prompts resampled jointly)."""
    from .compare import paired_rows

    title, header, rows, notes = paired_rows(runs, base)
    body = "".join("<tr>" + f'<th scope="row">{esc(row[0])}</th>' + "".join(
        f'<td class="num{"" if "~0" in c else " best"}">{esc(c)}</td>' for c in row[1:-1])
        + f'<td class="num">{esc(row[-1])}</td></tr>' for row in rows)
    table = (f'<table class="paired"><thead><tr>{"".join(f"<th>{esc(h)}</th>" for h in header)}'
             f'</tr></thead><tbody>{body}</tbody></table>' if rows else "")
    caption = (f'<p class="caption">{esc(title)}. Per-run intervals overlap for most pairs of runs '
               'on the same prompts; the paired interval removes the prompt-to-prompt variation '
               'both runs share. Bold: distinguishable from zero.</p>')
    return caption + table + "".join(f'<p class="caption">Note: {esc(n)}</p>' for n in notes)
