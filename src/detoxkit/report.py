"""Reports of run metrics: terminal tables, Markdown, leaderboards, comparability checks.

Everything here reads finished run directories (metrics.json, run.json); nothing
is recomputed. The HTML report is in report_html.py and uses the same pieces.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DetoxkitError
from .store import RunStore, read_jsonl


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ci_ok(ci) -> bool:
    return (isinstance(ci, (list, tuple)) and len(ci) == 2
            and all(isinstance(c, (int, float)) and not math.isnan(c) for c in ci))


def _ci(metrics: dict, key: str, digits: int = 3) -> str:
    value, ci = metrics.get(key), metrics.get(f"{key}_ci")
    if not _ci_ok(ci) or value is None or (isinstance(value, float) and math.isnan(value)):
        return _fmt(value, digits)
    return f"{_fmt(value, digits)} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def method_label(metrics: dict) -> str:
    method = metrics.get("method") or {}
    name = method.get("name", "?")
    settings = method.get("settings") or {}
    if name == "chain":
        return "+".join(method_label({"method": m}) for m in settings.get("methods", []))
    flat = ",".join(f"{k}={v}" for k, v in settings.items() if not isinstance(v, (dict, list)))
    return f"{name}:{flat}" if flat else name


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def print_summary(metrics: dict, run_dir: str | Path) -> None:
    k = metrics.get("toxicity_probability_k")
    header = ["prompts", "EMT (std)", "EMT 95% CI", f"TP@{k}", "TP@5", "toxic frac", "n", "failed"]
    rows = []
    blocks = [("all", metrics)] + list((metrics.get("by_prompt_toxicity") or {}).items())
    for name, m in blocks:
        rows.append([name, f"{_fmt(m.get('expected_max_toxicity'))} ({_fmt(m.get('expected_max_toxicity_std'))})",
                     _ci_only(m, "expected_max_toxicity"), _ci(m, "toxicity_probability"),
                     _fmt(m.get("toxicity_probability_at_5")), _fmt(m.get("toxic_fraction")),
                     f"{m.get('n_prompts')}x{metrics.get('samples_per_prompt')}", m.get("n_failed")])
    model = metrics.get("model", {})
    oracle = metrics.get("oracle") or {}
    print(f"run: {run_dir}")
    print(f"model: {model.get('name')} ({model.get('revision')})   method: {method_label(metrics)}   "
          f"judged by: {metrics.get('scorer', {}).get('name')} {metrics.get('scorer', {}).get('version')}")
    print(table(rows, header))
    print(f"perplexity under {oracle.get('name', 'no oracle')}: {_ci(metrics, 'perplexity', 2)}   "
          f"distinct-1/2/3: {_fmt(metrics.get('distinct_1'))} / {_fmt(metrics.get('distinct_2'))} / "
          f"{_fmt(metrics.get('distinct_3'))}")
    if metrics.get("n_skipped_prompts"):
        print(f"skipped prompts: {metrics['n_skipped_prompts']} (listed in run.json)")
    if metrics.get("judge_also_guided"):
        print(f"WARNING: the judging scorer also guided the method ({', '.join(metrics['judge_also_guided'])})")


def _ci_only(m: dict, key: str) -> str:
    ci = m.get(f"{key}_ci")
    if not _ci_ok(ci):
        return "-"
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def comparison_rows(run_dirs: list[str]) -> tuple[list[str], list[list[str]]]:
    header = ["run", "model", "method", "judge", "EMT", "TP", "TP@5", "toxic frac", "PPL",
              "dist-1", "dist-2", "dist-3", "n", "failed"]
    rows = []
    for d in run_dirs:
        m = RunStore(d).read_json("metrics.json")
        rows.append([Path(d).name, m.get("model", {}).get("name"), method_label(m),
                     m.get("scorer", {}).get("name"), _ci(m, "expected_max_toxicity"),
                     _ci(m, "toxicity_probability"), _fmt(m.get("toxicity_probability_at_5")),
                     _fmt(m.get("toxic_fraction")), _fmt(m.get("perplexity"), 2),
                     _fmt(m.get("distinct_1")), _fmt(m.get("distinct_2")), _fmt(m.get("distinct_3")),
                     f"{m.get('n_prompts')}x{m.get('samples_per_prompt')}", m.get("n_failed")])
    return header, rows


# ---- runs ----------------------------------------------------------------------------------

@dataclass
class Run:
    """A finished run directory: its metrics and provenance, files read on demand."""

    path: Path
    label: str
    metrics: dict
    info: dict = field(default_factory=dict)  # run.json; {} for runs written without one

    @property
    def config(self) -> dict:
        return self.info.get("config") or {}

    def _get(self, key: str, default=None):
        value = self.metrics.get(key)
        return value if value is not None else self.info.get(key, default)

    @property
    def model(self) -> dict:
        return self._get("model") or {}

    @property
    def method(self) -> dict:
        return self._get("method") or {}

    @property
    def judge(self) -> dict:
        return self._get("scorer") or {}

    @property
    def oracle(self) -> dict | None:
        return self._get("oracle")

    @property
    def guided_by(self) -> list[str]:
        return list(self._get("guided_by") or self.method.get("guided_by") or [])

    @property
    def judge_also_guided(self) -> list[str]:
        return list(self._get("judge_also_guided") or [])

    @property
    def versions(self) -> dict:
        return self._get("versions") or {}

    @property
    def k(self):
        return self.metrics.get("samples_per_prompt") or self.config.get("samples")

    def prompts(self) -> list[dict]:
        path = self.path / "prompts.jsonl"
        return read_jsonl(path) if path.exists() else []

    def generations(self) -> list[dict]:
        return RunStore(self.path).generations()


def load_run(path: str | Path, label: str | None = None) -> Run:
    path = Path(path)
    if not path.is_dir():
        raise DetoxkitError(f"{path}: no such run directory")
    store = RunStore(path)
    if not store.exists("metrics.json"):
        status = ""
        if store.exists("run.json"):
            status = f" (status: {store.read_json('run.json').get('status', 'unknown')})"
        raise DetoxkitError(f"{path} has no metrics.json{status}: finish it with `detoxkit run` "
                            "(the same command resumes it) before reporting on it")
    metrics = store.read_json("metrics.json")
    info = store.read_json("run.json") if store.exists("run.json") else {}
    return Run(path, label or path.name, metrics, info)


def load_runs(paths: list[str | Path]) -> list[Run]:
    """Runs with unique labels (the directory name, widened with parents where names clash)."""
    paths = [Path(p) for p in paths]
    resolved = [p.resolve() for p in paths]
    if len(set(resolved)) != len(resolved):
        dup = next(p for p, r in zip(paths, resolved) if resolved.count(r) > 1)
        raise DetoxkitError(f"run {dup} is given more than once")
    labels = [p.name or str(p) for p in paths]
    depth = 1
    while len(set(labels)) != len(labels) and depth < 8:
        depth += 1
        labels = ["/".join(r.parts[-depth:]) for r in resolved]
    if len(set(labels)) != len(labels):
        labels = [f"{lab}#{i + 1}" for i, lab in enumerate(labels)]
    return [load_run(p, lab) for p, lab in zip(paths, labels)]


# ---- the metric catalogue -------------------------------------------------------------------

@dataclass(frozen=True)
class MetricDef:
    key: str
    label: str
    description: str
    better: str | None = None  # "lower", "higher" or None
    digits: int = 3
    aliases: tuple[str, ...] = ()


METRICS: list[MetricDef] = [
    MetricDef("expected_max_toxicity", "EMT", "Expected Maximum Toxicity: mean over prompts of the "
              "highest score among the prompt's k samples", "lower", aliases=("emt",)),
    MetricDef("expected_max_toxicity_std", "EMT std", "standard deviation over prompts of the "
              "per-prompt maximum toxicity", None, aliases=("emt-std", "emt_std")),
    MetricDef("toxicity_probability", "TP@k", "Toxicity Probability: fraction of prompts with at "
              "least one of k samples scoring >= 0.5", "lower", aliases=("tp", "tp@k")),
    MetricDef("toxicity_probability_at_5", "TP@5", "Toxicity Probability at k = 5: exact "
              "expectation over 5-sample subsets of each prompt's samples", "lower",
              aliases=("tp5", "tp@5")),
    MetricDef("toxic_fraction", "toxic frac", "fraction of all scored samples scoring >= 0.5",
              "lower", aliases=("toxic-fraction", "tf")),
    MetricDef("perplexity", "PPL", "perplexity of the continuations under the oracle LM "
              "(token-weighted)", "lower", 2, aliases=("ppl",)),
    MetricDef("perplexity_mean_of_samples", "PPL (mean of samples)", "mean of per-sample "
              "perplexities (the DExperts code's aggregate)", "lower", 2, aliases=("ppl-mean",)),
    MetricDef("distinct_1", "dist-1", "unique unigrams / words, per prompt, averaged "
              "(DExperts definition)", "higher", aliases=("dist-1", "dist1")),
    MetricDef("distinct_2", "dist-2", "unique bigrams / words, per prompt, averaged "
              "(DExperts definition)", "higher", aliases=("dist-2", "dist2")),
    MetricDef("distinct_3", "dist-3", "unique trigrams / words, per prompt, averaged "
              "(DExperts definition)", "higher", aliases=("dist-3", "dist3")),
    MetricDef("distinct_ngrams_1", "dist-1 (n-grams)", "unique unigrams / unigrams", "higher"),
    MetricDef("distinct_ngrams_2", "dist-2 (n-grams)", "unique bigrams / bigrams", "higher"),
    MetricDef("distinct_ngrams_3", "dist-3 (n-grams)", "unique trigrams / trigrams", "higher"),
    MetricDef("toxicity_probability_k", "k", "samples per prompt behind TP@k"),
    MetricDef("n_prompts", "prompts", "prompts evaluated"),
    MetricDef("n_samples", "samples", "samples generated"),
    MetricDef("n_failed", "failed", "samples the judge could not score (left out, never 0)",
              "lower"),
    MetricDef("n_prompts_all_failed", "prompts all failed", "prompts with no scored sample",
              "lower"),
    MetricDef("n_toxic_samples", "toxic samples", "samples scoring >= 0.5"),
    MetricDef("n_perplexity_samples", "PPL samples", "samples with at least one oracle token"),
    MetricDef("n_skipped_prompts", "skipped prompts", "prompts skipped as unusable (run.json)"),
    MetricDef("elapsed_s", "wall time (s)", "wall-clock seconds of generation, scoring and "
              "perplexity in the last session of the run", "lower", 1, aliases=("time",)),
]
_BY_KEY = {m.key: m for m in METRICS}
# keys of metrics.json that are not metrics
_STRUCTURAL = {"by_prompt_toxicity", "by_group", "by_language", "by_scorer", "model", "method",
               "scorer", "scorers", "oracle", "guided_by", "judge_also_guided", "versions",
               "seed", "samples_per_prompt"}
SPLITS = ("all", "toxic", "nontoxic")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def metric_block(metrics: dict, split: str = "all") -> dict:
    if split == "all":
        return metrics
    return (metrics.get("by_prompt_toxicity") or {}).get(split) or {}


def metric_value(metrics: dict, key: str):
    """A metric by key; a dotted key reaches into nested records (overhead.tokens_per_s)."""
    node: Any = metrics
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node if _is_number(node) else None


def metric_def(key: str) -> MetricDef:
    if key in _BY_KEY:
        return _BY_KEY[key]
    label = key.replace("_", " ")
    lower = ("overhead" in key or key.endswith("_s") or "latency" in key)
    higher = ("per_s" in key or "throughput" in key)
    better = "higher" if higher else ("lower" if lower else None)
    return MetricDef(key, label, "recorded in metrics.json", better)


def _extra_keys(metrics: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in metrics.items():
        full = prefix + key
        if not prefix and (key in _STRUCTURAL or key in _BY_KEY or key.endswith("_ci")):
            continue
        if _is_number(value):
            out.append(full)
        elif (isinstance(value, dict) and key not in _STRUCTURAL and value
              and not all(str(k).lstrip("-").isdigit() for k in value)):  # not a histogram
            out.extend(_extra_keys(value, full + "."))
    return out


def _dicts(runs) -> list[dict]:
    return [r.metrics if isinstance(r, Run) else r for r in runs]


def metric_keys(runs: list[Run] | list[dict]) -> list[str]:
    """Every metric recorded by at least one run (Runs or metrics dicts): the catalogue's
    order, then the rest (decoding overhead and other keys a method records) as first seen."""
    blocks = _dicts(runs)
    keys = [m.key for m in METRICS if any(metric_value(b, m.key) is not None for b in blocks)]
    for b in blocks:
        for key in _extra_keys(b):
            if key not in keys:
                keys.append(key)
    return keys


def metric_ci(metrics: dict, key: str) -> list[float] | None:
    ci = metrics.get(f"{key}_ci") if "." not in key else None
    return list(ci) if _ci_ok(ci) else None


def format_metric(metrics: dict, key: str, with_ci: bool = True) -> str:
    d = metric_def(key)
    value = metric_value(metrics, key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = _fmt(float(value) if isinstance(value, float) else value, d.digits)
    ci = metric_ci(metrics, key) if with_ci else None
    if ci:
        text += f" [{ci[0]:.{d.digits}f}, {ci[1]:.{d.digits}f}]"
    return text


def resolve_metric(name: str, runs: list[Run] | list[dict]) -> str:
    """The metric key for a user's name (key or alias); a clear error listing the choices."""
    known = metric_keys(runs)
    aliases = {}
    for m in METRICS:
        for a in (m.key, m.label.lower(), *m.aliases):
            aliases.setdefault(a.lower(), m.key)
    for key in known:
        aliases.setdefault(key.lower(), key)
    key = aliases.get(name.strip().lower())
    if key is not None and key in known:
        return key
    choices = ", ".join(known)
    hint = difflib.get_close_matches(name.lower(), list(aliases), n=1)
    did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
    if key is not None:
        raise DetoxkitError(f"metric '{name}' is not recorded by these runs{did_you_mean}; "
                            f"choose one of: {choices}")
    raise DetoxkitError(f"unknown metric '{name}'{did_you_mean}; choose one of: {choices} "
                        "(short names: emt, tp, tp5, ppl, dist-1, dist-2, dist-3)")


# ---- comparability ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Notice:
    level: str  # "warning": numbers may mislead; "note": worth knowing
    message: str


def _judge_id(run: Run) -> str:
    j = run.judge
    return f"{j.get('name', '?')} {j.get('version', '?')}".strip()


def _model_id(d: dict | None) -> tuple:
    d = d or {}
    return (d.get("name"), d.get("revision"))


def comparability_notices(runs: list[Run]) -> list[Notice]:
    """What a reader must know before comparing these runs' numbers."""
    out: list[Notice] = []
    judges = {}
    for r in runs:
        judges.setdefault(_judge_id(r), []).append(r.label)
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
            related = {s.judge.get("name")} | set(s.judge.get("guided_by") or [])
            for g in sorted(set(r.guided_by) & related - {None}):
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


# ---- leaderboard --------------------------------------------------------------------------------

LEADERBOARD_COLUMNS = ["expected_max_toxicity", "toxicity_probability", "toxicity_probability_at_5",
                       "toxic_fraction", "perplexity", "distinct_2", "elapsed_s"]


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
    versions_differ = len({_judge_id(r) for r in runs}) > len({r.judge.get("name") for r in runs})
    rows = []
    for i, r in enumerate(ordered, 1):
        judge = _judge_id(r) if versions_differ else str(r.judge.get("name"))
        row = [str(i), r.label, str(r.model.get("name")), method_label(r.metrics), judge] + [format_metric(blocks[r.label], c, with_ci=(c == key)) for c in cols]
        if front:
            row.append("*" if r.label in front else "")
        rows.append(row)
    return header, rows, key


# ---- Markdown -----------------------------------------------------------------------------------

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
    import json

    settings = method.get("settings") or {}
    return json.dumps(settings, sort_keys=True, default=str) if settings else ""


def _group_rows(runs: list[Run], key: str) -> list[list[str]]:
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
                         format_metric(m, "perplexity", with_ci=False), _fmt(m.get("n_prompts"))])
    return rows


def markdown_report(runs: list[Run]) -> str:
    """A Markdown report for papers and pull requests: results, splits, groups, provenance."""
    parts = ["## detoxkit report", ""]
    judges = sorted({_judge_id(r) for r in runs})
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
    front = pareto_front(runs)
    header = ["run", "model", "method", "EMT", "TP@k", "TP@5", "toxic frac", "PPL", "dist-1",
              "dist-2", "dist-3", "prompts x k"]
    rows = []
    for r in runs:
        m = r.metrics
        rows.append([r.label + (" (pareto)" if r.label in front and len(runs) > 1 else ""),
                     r.model.get("name"), method_label(m),
                     format_metric(m, "expected_max_toxicity"), format_metric(m, "toxicity_probability"),
                     format_metric(m, "toxicity_probability_at_5", with_ci=False),
                     format_metric(m, "toxic_fraction", with_ci=False),
                     format_metric(m, "perplexity"), _fmt(m.get("distinct_1")),
                     _fmt(m.get("distinct_2")), _fmt(m.get("distinct_3")),
                     f"{m.get('n_prompts')} x {r.k}"])
    parts += [md_table(header, rows), ""]
    extra = [k for k in metric_keys(runs) if k not in _BY_KEY]
    if extra or any(r.metrics.get("elapsed_s") is not None for r in runs):
        keys = ["elapsed_s"] + extra
        parts += ["### Time and other recorded figures", "", md_table(["run"] + [metric_def(k).label for k in keys], [
            [r.label] + [format_metric(r.metrics, k) for k in keys] for r in runs]), ""]
    split_rows = []
    for r in runs:
        for split in ("toxic", "nontoxic"):
            m = metric_block(r.metrics, split)
            if m:
                split_rows.append([r.label, split, format_metric(m, "expected_max_toxicity"),
                                   format_metric(m, "toxicity_probability"),
                                   format_metric(m, "toxic_fraction", with_ci=False),
                                   _fmt(m.get("n_prompts"))])
    if split_rows:
        parts += ["### By prompt toxicity", "", md_table(
            ["run", "prompts", "EMT", "TP@k", "toxic frac", "n prompts"], split_rows), ""]
    for key, title in (("by_group", "By group"), ("by_language", "By language")):
        rows = _group_rows(runs, key)
        if rows:
            parts += [f"### {title}", "", md_table(
                [title.split()[-1], "run", "EMT", "TP@k", "toxic frac", "PPL", "n prompts"], rows), ""]
    prov = []
    for r in runs:
        oracle = r.oracle or {}
        prov.append([r.label, f"{r.model.get('name')} ({r.model.get('revision')})",
                     f"{r.method.get('name')} {_settings_text(r.method)}".strip(),
                     _judge_id(r), ", ".join(r.guided_by) or "-",
                     f"{oracle.get('name')} ({oracle.get('revision')})" if r.oracle else "-",
                     _fmt(r.info.get("seed", r.metrics.get("seed"))),
                     (r.info.get("prompts") or {}).get("spec", "-")])
    parts += ["### Provenance", "", md_table(
        ["run", "model (revision)", "method (settings)", "judge (version)", "guided by", "oracle",
         "seed", "prompts"], prov), ""]
    packages = sorted({p for r in runs for p in r.versions})
    if packages:
        vrows = [[p] + [r.versions.get(p, "-") for r in runs] for p in packages]
        parts += ["Library versions:", "", md_table(["package"] + [r.label for r in runs], vrows), ""]
    return "\n".join(parts).rstrip() + "\n"
