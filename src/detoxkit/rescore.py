"""Add scorers to an existing run: score every sample, rewrite generations.jsonl
atomically, record the scorer, recompute metrics."""

from __future__ import annotations

import logging

from .hygiene import judge_tags, shared_teachers
from .progress import Progress
from .metrics import compute_metrics
from .scorers import load_scorer
from .store import RunStore, json_float

log = logging.getLogger(__name__)


def add_scores(run_dir: str, scorer_names: list[str], *, device: str = "cpu",
               judge: bool = False) -> dict:
    from .scorers import check_scorer_spec

    for spec in scorer_names:  # before the run is touched
        check_scorer_spec(spec)
    store = RunStore(run_dir)
    with store.locked(create=False):
        prov = store.read_json("run.json")
        rows = store.generations()
        if not rows:
            from .errors import DetoxkitError

            raise DetoxkitError(f"{run_dir} has no samples to score")
        names = []  # scores are keyed by the scorer's name, as `detoxkit run` keys them
        for spec in scorer_names:
            scorer = load_scorer(spec, device=device)
            name = scorer.name
            names.append(name)
            drawn = [r for r in rows if not r.get("failed")]  # failed samples have no text
            progress = Progress(len(drawn), f"scoring with {name}", unit="texts")
            texts = [r["text"] for r in drawn]
            if hasattr(scorer, "score_routed"):  # auto: the stored sample languages route
                from .lang import confident_language

                stored = [r.get("language") for r in drawn]
                langs = None if None in stored else [confident_language(s.get("code"), s.get("confidence"))
                                                     for s in stored]
                values, routes = scorer.score_routed(texts, langs)
                for r, route in zip(drawn, routes):
                    r.setdefault("judged_by", {})[name] = route
                progress.update(len(texts))
            else:
                values = scorer.score(texts, progress=progress.update)
            progress.close()
            for j, r in enumerate(drawn):
                r.setdefault("scores", {})[name] = {a: json_float(v[j]) for a, v in values.items()}
            infos = [s for s in prov.get("scorers", [prov["scorer"]]) if s["name"] != name]
            prov["scorers"] = infos + [scorer.info()]
        if judge:
            prov["scorer"] = next(s for s in prov["scorers"] if s["name"] == names[0])
            judge_info = prov["scorer"]
            prov["judge_also_guided"] = shared_teachers(prov.get("guided_by", []),
                                                        judge_tags(judge_info))
        store.write_jsonl("generations.jsonl", rows)
        store.write_json("run.json", prov)
        old = store.read_json("metrics.json") if store.exists("metrics.json") else {}
        metrics = compute_metrics(store, prov, prov.get("skipped"))
        if "elapsed_s" in old:
            metrics["elapsed_s"] = old["elapsed_s"]
        store.write_json("metrics.json", metrics)
        return metrics
