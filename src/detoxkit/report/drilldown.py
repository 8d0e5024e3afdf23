"""The drill-down: the prompts whose samples scored highest, each with every run's samples.

A few top samples per prompt are attributed (their most toxic words
highlighted); attribution can be slow, so only those the reader is shown.
"""

from __future__ import annotations

from collections import defaultdict

from ..attribution import Attribution, top_spans
from .colors import swatch
from .escaping import esc, esc_text
from .metric_defs import as_float, format_value
from .runs import Run

TOP_TOKENS = 3  # highlighted spans per sample
ATTRIBUTE_MIN_SCORE = 0.25  # samples the judge scores lower are not attributed


def _judge_score(row: dict, judge: str) -> float | None:
    return as_float(((row.get("scores") or {}).get(judge) or {}).get("toxicity"))


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
            maxes.append(f'<span class="maxes">{swatch(i)}{_score_chip(max(scores) if scores else None, f"{r.label}: highest score among its samples")}</span>')
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
                    f'<span class="other">{esc(name)} {esc(format_value(vals.get("toxicity")))}</span>'
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
            cols.append(f'<div class="runcol"><h4>{swatch(i)}{esc(r.label)}</h4>'
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
