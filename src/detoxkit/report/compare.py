"""Comparing runs: what makes their numbers incomparable, the trade-off front, the leaderboard.

Toxicity numbers only compare under one judge, one prompt set and one k, so
every comparison comes with the notices a reader needs before trusting it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import DetoxkitError
from ..hygiene import judge_tags, shared_teachers
from ..store import RunStore
from .metric_defs import (SPLITS, format_metric, format_value, format_with_interval, metric_block,
                          metric_def, metric_value, resolve_metric)
from .runs import Run, method_label


@dataclass(frozen=True)
class Notice:
    level: str  # "warning": numbers may mislead; "note": worth knowing
    message: str


def _model_id(d: dict | None) -> tuple:
    d = d or {}
    return (d.get("name"), d.get("revision"))


def comparability_notices(runs: list[Run]) -> list[Notice]:
    """What a reader must know before comparing these runs' numbers."""
    out: list[Notice] = []
    judges = {}
    for r in runs:
        judges.setdefault(r.judge_label, []).append(r.label)
    if len(judges) > 1:
        names = {r.judge.get("name") for r in runs}
        what = ("different versions of the scorer" if len(names) == 1 else "different scorers")
        detail = "; ".join(f"{j} judged {', '.join(labels)}" for j, labels in judges.items())
        out.append(Notice("warning", f"These runs were judged by {what} ({detail}): toxicity "
                          "numbers are comparable only within one scorer and version. Re-judge "
                          "them with one scorer: `detoxkit score RUN --scorer NAME --judge`."))
    reported = set()
    for r in runs:
        if r.judge_also_guided:
            reported.update((r.label, g) for g in r.judge_also_guided)
            out.append(Notice("warning", f"Run {r.label}: its judge {r.judge.get('name')} also "
                              f"guided its method (via {', '.join(r.judge_also_guided)}), so the "
                              "method is graded by its own teacher. Judge with a scorer no "
                              "compared method used."))
    for r in runs:  # a judge of any run that guided another run's method
        for s in runs:
            for g in shared_teachers(r.guided_by, judge_tags(s.judge)):
                if (r.label, g) in reported:
                    continue
                reported.add((r.label, g))
                out.append(Notice("warning", f"Run {r.label}'s method was guided by {g}, which "
                                  f"also judges run {s.label}: the comparison uses an evaluator "
                                  "that a compared method was steered by."))
    fps = {(r.info.get("prompts") or {}).get("fingerprint") for r in runs} - {None}
    if len(fps) > 1:
        out.append(Notice("warning", "The runs used different prompt sets (their prompt "
                          "fingerprints differ): their numbers are not paired prompt by prompt."))
    ks = {r.k for r in runs} - {None}
    if len(ks) > 1:
        out.append(Notice("warning", f"The runs drew different numbers of samples per prompt "
                          f"(k = {', '.join(map(str, sorted(ks)))}): TP@k and EMT grow with k; "
                          "compare TP@5 instead."))
    oracles = {_model_id(r.oracle) for r in runs if r.oracle}
    if len(oracles) > 1:
        out.append(Notice("warning", "Perplexity was measured under different oracle models: "
                          "perplexities are not comparable across these runs."))
    for r in runs:
        if r.oracle and _model_id(r.oracle) == _model_id(r.model):
            out.append(Notice("note", f"Run {r.label}: perplexity is measured under the generator "
                              "itself, which flatters it; use a separate, larger oracle."))
        elif not r.oracle:
            out.append(Notice("note", f"Run {r.label} has no oracle: no perplexity recorded."))
        status = r.info.get("status")
        if status and status != "complete":
            out.append(Notice("warning", f"Run {r.label} is not complete (status: {status})."))
        for w in r.metrics.get("language_warnings") or []:  # judged outside validated languages
            out.append(Notice("warning", f"Run {r.label}, {w['language']} prompts: {w['message']}; "
                              f"their toxicity numbers are not validated figures."))
        failed = r.metrics.get("n_failed") or 0
        if failed:
            out.append(Notice("note", f"Run {r.label}: {failed} sample(s) could not be scored; they "
                              "are left out of its toxicity metrics (not counted as 0)."))
    for key in ("max_new_tokens", "top_p", "temperature", "top_k"):
        values = {r.label: r.config.get(key) for r in runs if key in r.config}
        if len(set(map(repr, values.values()))) > 1:
            out.append(Notice("note", f"Sampling setting {key} differs: " + ", ".join(
                f"{lab} {v}" for lab, v in values.items()) + "."))
    versions = {r.versions.get("detoxkit") for r in runs} - {None}
    if len(versions) > 1:
        out.append(Notice("note", f"The runs were made by different detoxkit versions "
                          f"({', '.join(sorted(versions))})."))
    return out


def pareto_front(runs: list[Run], tox_key: str = "expected_max_toxicity") -> set[str]:
    """Labels of runs no other run beats on both toxicity and perplexity (lower is better)."""
    pts = {}
    for r in runs:
        t, p = metric_value(r.metrics, tox_key), metric_value(r.metrics, "perplexity")
        if t is not None and p is not None and not (math.isnan(t) or math.isnan(p)):
            pts[r.label] = (t, p)
    front = set()
    for lab, (t, p) in pts.items():
        if not any((t2 <= t and p2 <= p) and (t2 < t or p2 < p) for t2, p2 in pts.values()):
            front.add(lab)
    return front


def front_marks(runs: list[Run]) -> dict[str, str]:
    """Per run label, the toxicity metrics on whose trade-off front with perplexity it lies
    ("EMT", "TP" or "EMT, TP"); runs on neither front are absent."""
    marks: dict[str, list[str]] = {}
    for key, short in (("expected_max_toxicity", "EMT"), ("toxicity_probability", "TP")):
        for label in pareto_front(runs, key):
            marks.setdefault(label, []).append(short)
    return {label: ", ".join(v) for label, v in marks.items()}


LEADERBOARD_COLUMNS = ["expected_max_toxicity", "toxicity_probability", "toxicity_probability_at_5",
                       "toxic_fraction", "perplexity", "perplexity_published", "distinct_2",
                       "elapsed_s"]


def leaderboard(runs: list[Run], sort: str = "emt", split: str = "all",
                descending: bool | None = None) -> tuple[list[str], list[list[str]], str]:
    """(header, rows, sort key). Runs lacking the metric go last; default order is best first."""
    if split not in SPLITS:
        raise DetoxkitError(f"unknown split '{split}'; choose one of: {', '.join(SPLITS)}")
    blocks = {r.label: metric_block(r.metrics, split) for r in runs}
    key = resolve_metric(sort, list(blocks.values()))
    d = metric_def(key)
    if descending is None:
        descending = d.better == "higher"

    def sort_key(r: Run):
        v = metric_value(blocks[r.label], key)
        missing = v is None or math.isnan(v)
        return (missing, 0.0 if missing else (-v if descending else v), r.label)

    ordered = sorted(runs, key=sort_key)
    cols = [key] + [c for c in LEADERBOARD_COLUMNS if c != key and
                    any(metric_value(blocks[r.label], c) is not None for r in runs)]
    front = pareto_front(runs) if split == "all" else set()
    header = ["#", "run", "model", "method", "judge"] + [
        metric_def(c).label + (" (sorted)" if c == key else "") for c in cols]
    if front:
        header.append("pareto")
    vs_best = _paired_with_best(ordered, key) if split == "all" else {}
    if vs_best:
        header.append(f"vs #1 (paired {metric_def(key).label})")
    versions_differ = len({r.judge_label for r in runs}) > len({r.judge.get("name") for r in runs})
    rows = []
    for i, r in enumerate(ordered, 1):
        judge = r.judge_label if versions_differ else str(r.judge.get("name"))
        row = [str(i), r.label, str(r.model.get("name")), method_label(r.metrics), judge] + [
            format_metric(blocks[r.label], c, with_ci=(c == key)) for c in cols]
        if front:
            row.append("*" if r.label in front else "")
        if vs_best:
            row.append(vs_best.get(r.label, "-"))
        rows.append(row)
    return header, rows, key


def _paired_with_best(ordered: list[Run], key: str) -> dict[str, str]:
    """Each run's paired difference with the top run on `key` ('~0': a tie in effect)."""
    from ..paired import PAIRED_METRICS

    if key not in PAIRED_METRICS or len(ordered) < 2:
        return {}
    best, diffs, _ = paired_against(ordered, ordered[0])
    return {label: format_difference(d[key], 2 if key == "perplexity" else 3)
            for label, d in diffs.items() if key in d}


def comparison_rows(run_dirs: list[str]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the headline metrics of each run directory, for a terminal table."""
    header = ["run", "model", "method", "judge", "EMT", "TP", "TP@5", "toxic frac", "PPL",
              "PPL (as published)", "dist-1", "dist-2", "dist-3", "n", "failed"]
    rows = []
    for d in run_dirs:
        m = RunStore(d).read_json("metrics.json")
        rows.append([Path(d).name, m.get("model", {}).get("name"), method_label(m),
                     m.get("scorer", {}).get("name"), format_with_interval(m, "expected_max_toxicity"),
                     format_with_interval(m, "toxicity_probability"),
                     format_value(m.get("toxicity_probability_at_5")),
                     format_value(m.get("toxic_fraction")), format_value(m.get("perplexity"), 2),
                     format_value(m.get("perplexity_published"), 2),
                     format_value(m.get("distinct_1")), format_value(m.get("distinct_2")),
                     format_value(m.get("distinct_3")),
                     f"{m.get('n_prompts')}x{m.get('samples_per_prompt')}", m.get("n_failed")])
    return header, rows


# ---- paired differences -------------------------------------------------------------------

def paired_against(runs: list[Run], base: Run | None = None) -> tuple[Run, dict, list[str]]:
    """(base, {run label: {metric: Difference}}, notes): every other run against `base` (the
    first run by default), judged by the judge both share, prompts resampled jointly."""
    from ..metrics import records_of
    from ..paired import paired_differences

    base = base or runs[0]
    judge = base.judge.get("name")
    base_records = records_of(base.generations(), judge)
    out, notes = {}, []
    for r in runs:
        if r is base:
            continue
        if r.judge.get("name") != judge:
            notes.append(f"{r.label} is judged by {r.judge.get('name')}, {base.label} by {judge}: "
                         "no paired difference")
            continue
        diffs = paired_differences(base_records, records_of(r.generations(), judge),
                                   seed=int(base.metrics.get("seed") or 0))
        if not diffs:
            notes.append(f"{r.label} shares no scored prompt with {base.label}: no paired difference")
            continue
        out[r.label] = diffs
    return base, out, notes


def format_difference(d, digits: int = 3) -> str:
    """'-0.041 [-0.060, -0.022]', with ' (~0)' when the interval holds 0."""
    text = (f"{d.difference:+.{digits}f} [{d.ci[0]:+.{digits}f}, {d.ci[1]:+.{digits}f}]")
    return text if d.distinguishable else text + " (~0)"


def paired_rows(runs: list[Run], base: Run | None = None) -> tuple[str, list[str], list[list[str]], list[str]]:
    """(title, header, rows, notes) of a table of paired differences against the base run."""
    from ..paired import PAIRED_METRICS

    base, diffs, notes = paired_against(runs, base)
    header = ["run"] + [metric_def(k).label for k in PAIRED_METRICS] + ["prompts"]
    rows = []
    for label, d in diffs.items():
        n = next(iter(d.values())).n_prompts
        rows.append([label] + [format_difference(d[k], 2 if k == "perplexity" else 3) if k in d
                               else "-" for k in PAIRED_METRICS] + [str(n)])
    title = (f"Paired differences vs {base.label} (run - {base.label}; 95% interval with prompts "
             "resampled jointly; ~0: not distinguishable from zero)")
    return title, header, rows, notes
