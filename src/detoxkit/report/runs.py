"""Finished run directories as the reports see them: metrics.json plus run.json.

Reports only read runs; nothing here recomputes a metric.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DetoxkitError
from ..store import RunStore, read_jsonl

log = logging.getLogger(__name__)


@dataclass
class Run:
    """A finished run directory: its metrics and provenance, files read on demand."""

    path: Path
    label: str
    metrics: dict
    info: dict = field(default_factory=dict)  # run.json; {} for runs written without one
    sweep: dict | None = None  # the run's point in a sweep: {"curve", "label", "values"}

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
    def judge_label(self) -> str:
        """The judge's name and version: toxicity numbers compare only within one."""
        j = self.judge
        return f"{j.get('name', '?')} {j.get('version', '?')}".strip()

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
    """Runs with unique labels (the directory name, widened with parents where names clash).
    A sweep directory (`detoxkit sweep`) stands for its finished runs, labelled by curve and
    point; its unfinished points are left out with a log line."""
    from ..sweep import curve_name, read_index

    expanded: list[tuple[Path, str | None, dict | None]] = []
    for p in map(Path, paths):
        index = read_index(p) if p.is_dir() else None
        if index is None:
            expanded.append((p, None, None))
            continue
        finished = [e for e in index["points"] if (p / e["run"] / "metrics.json").exists()]
        if not finished:
            raise DetoxkitError(f"sweep {p} has no finished point yet: run its `detoxkit sweep` "
                                "command (the same command resumes it)")
        for e in index["points"]:
            if e not in finished:
                log.info("sweep %s: point %s is not finished; left out", p, e["run"])
        for e in finished:
            name = curve_name(e["curve"])
            label = f"{name} {e['label']}" if e["values"] else e["label"]
            expanded.append((p / e["run"], label, {k: e[k] for k in ("curve", "label", "values")}))
    runs = _load_labelled([p for p, *_ in expanded])
    for run, (_, label, sweep) in zip(runs, expanded):
        if sweep is not None:
            run.label, run.sweep = label, sweep
    return _unique_labels(runs)


def _unique_labels(runs: list[Run]) -> list[Run]:
    seen: dict[str, int] = {}
    for r in runs:
        seen[r.label] = seen.get(r.label, 0) + 1
        if seen[r.label] > 1:
            r.label = f"{r.label}#{seen[r.label]}"
    return runs


def _load_labelled(paths: list[Path]) -> list[Run]:
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


def method_label(metrics: dict) -> str:
    """A method and its flat settings in one short string (chains joined with '+')."""
    method = metrics.get("method") or {}
    name = method.get("name", "?")
    settings = method.get("settings") or {}
    if name == "chain":
        return "+".join(method_label({"method": m}) for m in settings.get("methods", []))
    parts = []
    for k, v in settings.items():
        if isinstance(v, dict) and "name" in v:  # a wrapped method (the gate's): in parentheses,
            parts.append(f"{k}=({method_label({'method': v})})")  # as the spec grammar nests it
        elif not isinstance(v, (dict, list)):
            parts.append(f"{k}={v}")
    flat = ",".join(parts)
    return f"{name}:{flat}" if flat else name


def short_model_name(name: Any) -> str:
    """A model name for tight spaces: a local path by its last part, a hub id whole."""
    name = str(name)
    return Path(name).name or name if name.startswith(("/", ".", "~")) else name


def model_text(d: dict | None) -> str:
    """A model (generator or oracle) as 'name @ revision', '-' when there is none, with the
    trained adapter applied to it (if any)."""
    if not d:
        return "-"
    return f"{d.get('name')} @ {d.get('revision')}{adapter_text(d)}"


def adapter_text(d: dict | None) -> str:
    """' + <recipe> adapter <dir> (<fingerprint>)' for a generator run with --adapter, else ''."""
    a = (d or {}).get("adapter")
    if not a:
        return ""
    return (f" + {a.get('recipe') or 'trained'} adapter {Path(str(a.get('path'))).name} "
            f"({str(a.get('fingerprint', ''))[:19]})")
