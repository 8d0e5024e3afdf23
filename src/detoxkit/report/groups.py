"""Per-group disparities, a method's effect on them, and the risk-coverage block, as rows that the
terminal, Markdown and HTML reports all render (detoxkit/group_metrics.py computes them)."""

from __future__ import annotations

from .metric_defs import format_value
from .runs import Run

GAP_LABELS = {"expected_max_toxicity": "EMT", "toxicity_probability": "TP",
              "toxic_fraction": "toxic frac", "mean_toxicity": "mean toxicity"}


def _interval(value, ci, digits: int = 3, sign: bool = False) -> str:
    if value is None:
        return "-"
    fmt = f"{{:{'+' if sign else ''}.{digits}f}}"
    text = fmt.format(value)
    return f"{text} [{fmt.format(ci[0])}, {fmt.format(ci[1])}]" if ci and None not in ci else text


def disparity_rows(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    """One row per run, domain and metric: most / least affected group, the largest gap with its
    interval, their ratio, the permutation test's p and a flag where p < 0.05."""
    header = ["run", "domain", "metric", "most affected", "least affected", "largest gap [95% CI]",
              "ratio", "p (no difference)", "gap"]
    rows = []
    for r in runs:
        for domain, block in (r.metrics.get("group_disparity") or {}).items():
            for key, label in GAP_LABELS.items():
                d = block.get(key)
                if not d:
                    continue
                tie = d["most_affected"] is None  # every group has the same mean
                rows.append([r.label, domain, label,
                             "all equal" if tie else d["most_affected"].split("/", 1)[-1],
                             "all equal" if tie else d["least_affected"].split("/", 1)[-1],
                             _interval(d["largest_gap"], d["largest_gap_ci"]),
                             format_value(d.get("ratio"), 2), f"{d['p_value']:.4f}",
                             "SIGNIFICANT" if d["significant"] else "not significant"])
    return header, rows


def group_changes(runs: list[Run], base: Run | None = None) -> tuple[Run, dict, list[str]]:
    """(base, {run label: group_metrics.group_changes(...)}, notes) for runs judged like base."""
    from ..group_metrics import group_changes as compute
    from ..metrics import records_of

    base = base or runs[0]
    judge = base.judge.get("name")
    if not base.metrics.get("by_group"):
        return base, {}, []
    prompts = {p["prompt_id"]: p for p in base.prompts()}
    base_records = records_of(base.generations(), judge)
    out, notes = {}, []
    for r in runs:
        if r is base or not r.metrics.get("by_group"):
            continue
        if r.judge.get("name") != judge:
            notes.append(f"{r.label} is judged by another scorer than {base.label}: no per-group change")
            continue
        out[r.label] = compute(base_records, records_of(r.generations(), judge), prompts,
                               seed=int(base.metrics.get("seed") or 0))
    return base, out, notes


def change_rows(runs: list[Run], base: Run | None = None) -> tuple[str, list[str], list[list[str]], list[str]]:
    """(title, header, rows, notes): each group's paired EMT change, then per domain the change of
    the largest EMT gap and whether the method widened or narrowed it."""
    base, changes, notes = group_changes(runs, base)
    header = ["run", "domain", "group", "EMT change [95% CI]", "TP change [95% CI]", "prompts",
              "gap verdict"]
    rows = []
    for label, domains in changes.items():
        for domain, block in domains.items():
            for g, d in block["groups"].items():
                emt, tp = d.get("expected_max_toxicity"), d.get("toxicity_probability")
                rows.append([label, domain, g.split("/", 1)[-1],
                             _interval(emt["difference"], emt["ci"], sign=True) if emt else "-",
                             _interval(tp["difference"], tp["ci"], sign=True) if tp else "-",
                             str(emt["n_prompts"]) if emt else "-", ""])
            gap = block.get("gap")
            if gap:
                rows.append([label, domain, "largest EMT gap (base -> run)",
                             f"{gap['base']:.3f} -> {gap['run']:.3f}: "
                             + _interval(gap["change"], gap["change_ci"], sign=True),
                             "-", str(gap["n_prompts"]), gap["verdict"].upper()])
    title = (f"Per-group change vs {base.label} (run - {base.label}, paired on the same prompts; "
             "the gap is the most minus the least affected group's EMT)")
    return title, header, rows, notes


# ---- the risk-coverage block ----------------------------------------------------------------

def coverage_of(run: Run) -> dict:
    from ..risks import run_coverage

    return run.metrics.get("coverage") or run_coverage(run.info, run.metrics)


def coverage_text(runs: list[Run]) -> list[tuple[str, list[str]]]:
    """(run label, lines) of each run's block; runs with the same block share one entry."""
    from ..risks import coverage_lines

    out: list[tuple[str, list[str]]] = []
    for r in runs:
        lines = coverage_lines(coverage_of(r))
        for i, (label, other) in enumerate(out):
            if other == lines:
                out[i] = (f"{label}, {r.label}", other)
                break
        else:
            out.append((r.label, lines))
    return out
