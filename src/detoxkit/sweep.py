"""Trade-off curves: one resumable run per setting of a method, all on the same prompts and seed.

A curve is a method spec (or a `+` chain of them) whose settings may list several values:
`dexperts:alpha=0.5,1,2` is three runs; `cfl:strength=20,40+dexperts:alpha=0.5,1` is the
four points of their grid. An item without `=` after a setting is one more value of that
setting. Values inside parentheses (a gate's `wrap=(...)`) are one value, not a grid.

Each point runs as `detoxkit run` would, in `<sweep dir>/<curve>/<point>`, so a stopped sweep
resumes where it stopped when the same command is run again, and adding a curve reuses the
finished ones. `sweep.json` in the sweep directory lists the curves and their points; reports
(`detoxkit report SWEEP_DIR`) read it to draw each curve and the Pareto frontier.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import DetoxkitError
from .specs import parse_value, split_top

log = logging.getLogger(__name__)

INDEX = "sweep.json"
BASE_CURVE = "base"


@dataclass(frozen=True)
class SweepPoint:
    curve: str  # the curve's text as given, e.g. "dexperts:alpha=0.5,1,2"
    methods: tuple[str, ...]  # the chain this point runs, e.g. ("dexperts:alpha=0.5",)
    values: tuple[tuple[str, Any], ...]  # the swept settings at this point, e.g. (("alpha", 0.5),)

    @property
    def label(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.values) or "+".join(self.methods)

    @property
    def run_dir(self) -> str:
        """The point's directory inside the sweep, relative to it."""
        return f"{_slug(self.curve)}/{_slug('+'.join(self.methods))}"


def curve_name(curve: str) -> str:
    """A curve's methods without their settings: 'cfl+dexperts' for 'cfl:strength=20+dexperts:...'."""
    return "+".join(part.split(":")[0].strip() for part in split_top(curve, "+"))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=,+-]+", "_", text).strip("_")[:120] or "point"


def _expand_spec(text: str) -> list[tuple[str, tuple[tuple[str, Any], ...]]]:
    """Every (spec text, swept values) of one method spec whose settings may list values."""
    name, colon, rest = text.strip().partition(":")
    if not name:
        raise DetoxkitError(f"sweep curve '{text}': a spec has no name")
    fixed: list[str] = []  # items kept as given (an ARG, single values)
    grid: dict[str, list[str]] = {}
    last_key: str | None = None
    for i, item in enumerate(s.strip() for s in split_top(rest, ",")):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if eq and "(" not in key:
            last_key = key.strip()
            if last_key in grid:
                raise DetoxkitError(f"sweep curve '{text}': setting '{last_key}' given twice")
            grid[last_key] = [value.strip()]
        elif last_key is not None:  # one more value of the setting before it
            grid[last_key].append(item)
        elif i == 0:
            fixed.append(item)  # a component's ARG
        else:
            raise DetoxkitError(f"sweep curve '{text}': expected key=value, got '{item}'")
    keys = list(grid)
    out = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        items = fixed + [f"{k}={v}" for k, v in zip(keys, combo)]
        swept = tuple((k, parse_value(v)) for k, v in zip(keys, combo) if len(grid[k]) > 1)
        out.append((name + (":" + ",".join(items) if items else ""), swept))
    return out


def expand_curve(text: str) -> list[SweepPoint]:
    """The points of one curve: the grid of every multi-valued setting of its chain."""
    parts = [p.strip() for p in split_top(text, "+") if p.strip()]
    if not parts:
        raise DetoxkitError("sweep: an empty curve")
    points = []
    for combo in itertools.product(*(_expand_spec(p) for p in parts)):
        methods = tuple(spec for spec, _ in combo)
        prefix = len(parts) > 1
        values = tuple((f"{spec.split(':')[0]}.{k}" if prefix else k, v)
                       for spec, swept in combo for k, v in swept)
        points.append(SweepPoint(text, methods, values))
    return points


def plan(curves: list[str], include_base: bool = True) -> list[SweepPoint]:
    """Every point of the sweep, the base model (`none`) first."""
    points = [SweepPoint(BASE_CURVE, ("none",), ())] if include_base else []
    seen = {p.methods for p in points}
    for text in curves:
        for p in expand_curve(text):
            if p.methods not in seen:  # the same chain in two curves runs once
                seen.add(p.methods)
                points.append(p)
    if len(points) < 2:
        raise DetoxkitError("sweep: nothing to compare (give --method with at least one curve)")
    return points


def _shared(cfg) -> dict:
    """What must agree across a sweep's runs for their points to lie on comparable curves: every
    setting a run is hashed by (model, adapter, prompts, sampling, judge, oracle, ...) but its methods."""
    return {k: v for k, v in cfg.hashed_fields().items() if k != "methods"}


def _point_entry(p: SweepPoint) -> dict:
    return {"curve": p.curve, "methods": list(p.methods), "values": [list(v) for v in p.values],
            "label": p.label, "run": p.run_dir}


def write_index(out: Path, cfg, points: list[SweepPoint]) -> dict:
    """sweep.json: the shared config and every point, merged with an earlier index of the same
    directory (a sweep grows by adding curves); a different shared config is refused."""
    from .config import diff_configs
    from .store import write_json_atomic

    path = out / INDEX
    shared = json.loads(json.dumps(_shared(cfg)))
    entries: list[dict] = []
    old = read_index(out)
    if old is not None:
        changes = diff_configs(old.get("config", {}), shared)
        if changes:
            raise DetoxkitError(f"{path} is a sweep with other shared settings ({'; '.join(changes)}): "
                                "its curves would not be comparable. Use another --out directory.")
        entries = old.get("points", [])
    known = {tuple(e["methods"]): e for e in entries}
    for p in points:
        entry = _point_entry(p)
        if p.methods in known:  # the latest curves name the point; its directory stays
            known[p.methods].update({k: v for k, v in entry.items() if k != "run"})
        else:
            entries.append(entry)
    index = {"version": 1, "config": shared, "points": entries}
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, index)
    return index


def run_sweep(cfg, curves: list[str], out: str | Path, include_base: bool = True, *,
              skip: Callable[[SweepPoint], bool] | None = None,
              on_finished: Callable[[SweepPoint, Path], None] | None = None) -> list[Path]:
    """Run (or resume) every point of the curves; returns the run directories in plan order.
    `skip` leaves out points measured elsewhere (a benchmark's kept results); `on_finished` is
    called after each point, e.g. to keep its numbers before the next one starts."""
    from .methods import build_method
    from .runner import Evaluation

    out = Path(out)
    points = plan(curves, include_base)
    for p in points:  # a bad spec fails before the first run, not after an hour of them
        build_method(list(p.methods))
    index = write_index(out, cfg, points)
    # a point keeps the directory it was first run in, so a curve given more values later
    # (alpha=0.5,1 -> alpha=0.5,1,2) reuses its finished points
    run_of = {tuple(e["methods"]): e["run"] for e in index["points"]}
    dirs = []
    for i, p in enumerate(points, 1):
        run_dir = out / run_of[p.methods]
        if skip is not None and skip(p):
            log.info("sweep point %d/%d: %s measured before, skipped", i, len(points), "+".join(p.methods))
            continue
        log.info("sweep point %d/%d: %s (%s)", i, len(points), "+".join(p.methods), run_dir)
        point_cfg = dataclasses.replace(cfg, methods=list(p.methods), out=str(run_dir))
        Evaluation(point_cfg).run()
        dirs.append(run_dir)
        if on_finished is not None:
            on_finished(p, run_dir)
    return dirs


def read_index(path: str | Path) -> dict | None:
    """A sweep directory's index, or None when `path` is not a sweep."""
    index = Path(path) / INDEX
    if not index.exists():
        return None
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        if not isinstance(data.get("points"), list):
            raise ValueError("no 'points' list")
        return data
    except (ValueError, AttributeError) as exc:
        raise DetoxkitError(f"{index}: not a sweep index ({exc})") from None
