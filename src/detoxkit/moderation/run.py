"""Scoring conversations for moderation, resumable like a run.

    OUT/moderate.json   what was asked: the input (file, sha256, format), --limit, seed, scorers
    OUT/messages.jsonl  the messages scored (id, conversation, turn, role, text, label, ...)
    OUT/scores.jsonl    one row per message and scorer: score per attribute, flag, scorer version
    OUT/moderation.json the metrics per scorer (all, by language, by category) and the coverage

scores.jsonl is appended a batch at a time through detoxkit.store (whole lines, fsync, a torn
last line cut on reopening), so a killed run loses at most the batch in flight; running the
same command again scores only what is missing. A score counts as done for a message id whose
text hash and scorer version still match.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from ..errors import DetoxkitError
from ..metrics import TOXIC
from ..store import RunStore, json_float, read_jsonl
from .formats import Message, read_messages

log = logging.getLogger(__name__)


class ModerationStore(RunStore):
    rows_file = "scores.jsonl"


def limit_messages(messages: list[Message], limit: int | None, seed: int) -> list[Message]:
    """Whole conversations, `limit` of them, keeping the share of flagged / unflagged / unlabelled
    conversations (the prompt sets' seeded stratified rule: detoxkit/prompts/load.py)."""
    if limit is None:
        return messages
    from ..prompts import Prompt
    from ..prompts.load import stratified_indices

    convs: dict[str, list[Message]] = {}
    for m in messages:
        convs.setdefault(m.conversation_id, []).append(m)
    ids = list(convs)
    labels = [[m.label for m in convs[c] if m.label is not None] for c in ids]
    as_prompts = [Prompt(c, "-", None if not ls else float(max(ls))) for c, ls in zip(ids, labels)]
    keep = stratified_indices(as_prompts, limit, seed)
    return [m for i in keep for m in convs[ids[i]]]


def moderate(spec: str, scorers: list[str], out: str | Path, *, fmt: str = "auto",
             limit: int | None = None, seed: int = 0, on_bad: str = "error",
             batch_size: int = 64, device: str = "cpu") -> dict:
    from ..artefacts import file_sha256
    from ..scorers import load_scorer
    from .sources import resolve

    if not scorers:
        raise DetoxkitError("name at least one --scorer")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store = ModerationStore(out)
    with store.locked():
        store.write_json("run.json", {"kind": "moderation"})  # marks the directory for locked()
        path, data_name = resolve(spec, out)
        messages, info = read_messages(path, fmt, on_bad)
        if data_name == "file":
            data_name = {"toxicchat": "toxic-chat", "lmsys": "lmsys-chat"}.get(info["format"], "file")
        messages = limit_messages(messages, limit, seed)
        request = {"input": spec, "file": str(path), "sha256": file_sha256(path), "format": info["format"],
                   "data": data_name, "limit": limit, "seed": seed, "scorers": list(scorers)}
        if store.exists("moderate.json"):
            before = store.read_json("moderate.json")
            keep = ("sha256", "limit", "seed", "format")
            if any(before.get(k) != request[k] for k in keep):
                changed = [k for k in keep if before.get(k) != request[k]]
                raise DetoxkitError(f"{out} holds a moderation of other data ({', '.join(changed)} "
                                    "differ); choose another --out directory")
            request["scorers"] = list(dict.fromkeys(before.get("scorers", []) + list(scorers)))
            request["scorer_infos"] = before.get("scorer_infos", {})
        store.write_json("moderate.json", request)
        store.write_jsonl("messages.jsonl", (m.as_row() for m in messages))
        store.repair()
        done = read_jsonl(store.file(store.rows_file)) if store.exists(store.rows_file) else []
        infos = {}
        for spec_s in scorers:
            scorer = load_scorer(spec_s, device=device, batch_size=batch_size)
            infos[scorer.name] = {**scorer.info(), "threshold": float(getattr(scorer, "threshold", TOXIC))}
            have = {(r["id"], r["text_sha"]) for r in done
                    if r["scorer"] == scorer.name and r.get("version") == scorer.version}
            todo = [m for m in messages if (m.id, m.text_sha) not in have]
            log.info("%s: %d of %d messages to score", scorer.name, len(todo), len(messages))
            for start in range(0, len(todo), 512):
                chunk = todo[start:start + 512]
                result = scorer.score([m.text for m in chunk])
                threshold = infos[scorer.name]["threshold"]
                store.append_generations([{
                    "id": m.id, "text_sha": m.text_sha, "scorer": scorer.name, "version": scorer.version,
                    "scores": {a: json_float(result[a][i]) for a in result},
                    "flagged": None if math.isnan(result["toxicity"][i]) else bool(result["toxicity"][i] >= threshold)}
                    for i, m in enumerate(chunk)])
                log.info("%s: %d/%d scored", scorer.name, min(start + 512, len(todo)), len(todo))
        # scorers of earlier calls stay in the report, side by side with this call's
        request["scorer_infos"] = {**request.get("scorer_infos", {}), **infos}
        store.write_json("moderate.json", request)
        summary = summarize(store, messages, request["scorer_infos"], request, info)
        store.write_json("moderation.json", summary)
    return summary


def summarize(store: ModerationStore, messages: list[Message], infos: dict, request: dict,
              info: dict) -> dict:
    from ..risks import coverage
    from .metrics import moderation_metrics

    rows = read_jsonl(store.file(store.rows_file))
    latest = {(r["id"], r["scorer"]): r for r in rows if r.get("version") == infos.get(r["scorer"], {}).get("version")}
    scores = {name: [(latest.get((m.id, name)) or {}).get("scores", {}).get("toxicity") for m in messages]
              for name in infos}
    scores = {k: [math.nan if v is None else v for v in vs] for k, vs in scores.items()}
    from ..lang import detect

    languages = [m.language or detect(m.text).language for m in messages]  # given, else detected
    labelled = [i for i, m in enumerate(messages) if m.label is not None]
    pick = lambda xs: [xs[i] for i in labelled]  # noqa: E731
    metrics = moderation_metrics(pick([m.label for m in messages]), pick(languages),
                                 pick([m.categories for m in messages]),
                                 {k: pick(v) for k, v in scores.items()},
                                 {k: i["threshold"] for k, i in infos.items()}) if labelled else {}
    return {"input": request, "n_messages": len(messages), "n_labelled": len(labelled),
            "n_skipped_rows": len(info.get("skipped") or []), "skipped": info.get("skipped") or [],
            "scorers": infos, "metrics": metrics,
            "n_flagged": {k: int(sum(1 for v in vs if not math.isnan(v) and v >= infos[k]["threshold"]))
                          for k, vs in scores.items()},
            "coverage": coverage([request["data"]], list(infos.values()), ["moderate"])}


def is_moderation_dir(path: str | Path) -> bool:
    return (Path(path) / "moderation.json").is_file()
