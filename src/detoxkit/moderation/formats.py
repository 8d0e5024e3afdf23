"""Conversations to moderate, message by message, from three formats (detected by their fields):

- OpenAI `messages` JSONL: `{"id"?, "messages": [{"role", "content", "label"?, "categories"?}],
  "label"?, "categories"?, "language"?}`; a record's `label` (0/1, true/false) applies to its
  user turns that carry none of their own.
- LMSYS-Chat-1M (JSONL or Parquet): `conversation_id`, `conversation` (turns `{role, content}`),
  `language`, `openai_moderation` (one `{categories: {name: bool}, category_scores, flagged}` per
  turn). The reference label of a turn is OpenAI moderation's `flagged`, and its categories those
  set to true: a second classifier's verdict, not a human one.
- ToxicChat (CSV as on the hub, JSONL or Parquet): `conv_id`, `user_input`, `model_output`,
  `human_annotation`, `toxicity` (0/1, the label of the user input), `jailbreaking` (0/1: the
  category `jailbreaking`), `openai_moderation` (a JSON string). The model output is a second,
  unlabelled message.

Bad rows go through the prompt readers' policy (detoxkit/prompts/files.py): an error naming the
file, line and field, or a counted skip with on_bad="skip".
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import InputError
from ..prompts.files import _MISSING, BadRows, Record, open_records

FORMATS = ("openai", "lmsys", "toxicchat")
ROLES = ("system", "user", "assistant")


@dataclass
class Message:
    id: str  # "<conversation id>:<turn index>"
    conversation_id: str
    turn: int
    role: str
    text: str
    label: int | None = None  # 1 = should be flagged; None = no reference label
    categories: list[str] = field(default_factory=list)
    language: str | None = None
    line: int | None = None

    @property
    def text_sha(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:16]

    def as_row(self) -> dict:
        return {**asdict(self), "text_sha": self.text_sha}


def detect_format(data: dict) -> str | None:
    if "user_input" in data:
        return "toxicchat"
    if "conversation" in data:
        return "lmsys"
    if "messages" in data:
        return "openai"
    return None


def _label(value: Any, rec: Record, name: str, bad: BadRows) -> tuple[bool, int | None]:
    if value is None or value == "":
        return True, None
    if isinstance(value, bool):
        return True, int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return True, int(value)
    if isinstance(value, str) and value.strip().lower() in ("0", "1", "true", "false"):
        return True, int(value.strip().lower() in ("1", "true"))
    bad.at(rec, f"expected a 0/1 label, got {str(value)[:40]!r}", name)
    return False, None


def _categories(value: Any, rec: Record, name: str, bad: BadRows) -> list[str] | None:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(c, str) for c in value):
        return list(value)
    bad.at(rec, "expected a category name or a list of names", name)
    return None


def _turn_text(value: Any, rec: Record, name: str, bad: BadRows) -> str | None:
    if value is _MISSING or value is None:
        bad.at(rec, "missing text", name)
        return None
    if not isinstance(value, str):
        bad.at(rec, f"expected a string, got {type(value).__name__}", name)
        return None
    if "\x00" in value:
        bad.at(rec, "the text holds a NUL character (\\x00)", name)
        return None
    return value


def _record_id(rec: Record, value: Any) -> str:
    return str(value) if value not in (None, "") else (f"line-{rec.line}" if rec.line else f"row-{rec.index}")


def _turns(rec: Record, bad: BadRows, key: str) -> list[dict] | None:
    turns = rec.data.get(key, _MISSING)
    if not isinstance(turns, list) or not turns:
        bad.at(rec, "expected a non-empty list of {role, content} turns", key)
        return None
    for i, t in enumerate(turns):
        if not isinstance(t, dict) or t.get("role") not in ROLES:
            bad.at(rec, f"turn {i}: expected a role of {', '.join(ROLES)}", f"{key}[{i}].role")
            return None
    return turns


def openai_messages(rec: Record, bad: BadRows) -> list[Message] | None:
    d = rec.data
    turns = _turns(rec, bad, "messages")
    if turns is None:
        return None
    ok, record_label = _label(d.get("label"), rec, "label", bad)
    cats = _categories(d.get("categories", d.get("category")), rec, "categories", bad)
    if not ok or cats is None:
        return None
    cid = _record_id(rec, d.get("id", d.get("conversation_id")))
    out = []
    for i, t in enumerate(turns):
        text = _turn_text(t.get("content", _MISSING), rec, f"messages[{i}].content", bad)
        ok, label = _label(t.get("label"), rec, f"messages[{i}].label", bad)
        own = _categories(t.get("categories"), rec, f"messages[{i}].categories", bad)
        if text is None or not ok or own is None:
            return None
        if label is None and t["role"] == "user":
            label = record_label
        out.append(Message(f"{cid}:{i}", cid, i, t["role"], text, label,
                           own or (cats if t["role"] == "user" else []), d.get("language"), rec.line))
    return out


def lmsys_messages(rec: Record, bad: BadRows) -> list[Message] | None:
    d = rec.data
    turns = _turns(rec, bad, "conversation")
    if turns is None:
        return None
    moderation = d.get("openai_moderation")
    if moderation is not None and (not isinstance(moderation, list) or len(moderation) != len(turns)):
        bad.at(rec, f"expected one moderation result per turn ({len(turns)})", "openai_moderation")
        return None
    cid = _record_id(rec, d.get("conversation_id"))
    out = []
    for i, t in enumerate(turns):
        text = _turn_text(t.get("content", _MISSING), rec, f"conversation[{i}].content", bad)
        if text is None:
            return None
        label, cats = None, []
        if moderation is not None:
            m = moderation[i]
            if not isinstance(m, dict) or not isinstance(m.get("flagged"), bool):
                bad.at(rec, "expected {categories, category_scores, flagged: bool}",
                       f"openai_moderation[{i}].flagged")
                return None
            label = int(m["flagged"])
            cats = sorted(k for k, v in (m.get("categories") or {}).items() if v is True)
        out.append(Message(f"{cid}:{i}", cid, i, t["role"], text, label, cats, d.get("language"), rec.line))
    return out


def toxicchat_messages(rec: Record, bad: BadRows) -> list[Message] | None:
    d = rec.data
    text = _turn_text(d.get("user_input", _MISSING), rec, "user_input", bad)
    if text is None:
        return None
    ok, label = _label(d.get("toxicity"), rec, "toxicity", bad)
    ok2, jail = _label(d.get("jailbreaking"), rec, "jailbreaking", bad)
    if not (ok and ok2):
        return None
    cid = _record_id(rec, d.get("conv_id"))
    # no language field: mostly English, some not; the report detects each message's language
    out = [Message(f"{cid}:0", cid, 0, "user", text, label, ["jailbreaking"] if jail else [],
                   None, rec.line)]
    reply = d.get("model_output")
    if isinstance(reply, str) and reply.strip():
        out.append(Message(f"{cid}:1", cid, 1, "assistant", reply, None, [], None, rec.line))
    return out


READERS = {"openai": openai_messages, "lmsys": lmsys_messages, "toxicchat": toxicchat_messages}


def read_messages(path: str | Path, fmt: str = "auto", on_bad: str = "error") -> tuple[list[Message], dict]:
    """(messages, info: format, skipped, file). The format is detected on the first record."""
    path = Path(path)
    bad = BadRows(str(path), on_bad)
    _, records = open_records(path, bad)
    messages: list[Message] = []
    seen: dict[str, int | None] = {}
    for rec in records:
        if fmt == "auto":
            fmt = detect_format(rec.data) or "auto"
            if fmt == "auto":
                raise InputError("not a conversation: expected OpenAI `messages`, LMSYS-Chat-1M "
                                 "`conversation` or ToxicChat `user_input` fields",
                                 path=str(path), line=rec.line)
        got = READERS[fmt](rec, bad)
        if got is None:
            continue
        if got and got[0].conversation_id in seen:
            bad.at(rec, f"duplicate conversation id {got[0].conversation_id!r} "
                        f"(first at line {seen[got[0].conversation_id]})", "id")
            continue
        seen[got[0].conversation_id] = rec.line
        messages += got
    if not messages:
        raise InputError(f"no usable messages ({len(bad.skipped)} rows skipped)", path=str(path))
    return messages, {"format": fmt, "skipped": bad.skipped, "file": str(path)}


def write_openai_jsonl(path: Path, conversations: Iterator[dict]) -> int:
    """Write conversations as OpenAI `messages` JSONL (how the offline data sets are framed)."""
    from ..store import write_jsonl_atomic

    rows = list(conversations)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(path, rows)
    return len(rows)


def single_message(cid: str, text: str, label: int, categories: list[str] | None = None,
                   language: str | None = "en") -> dict:
    return {"id": cid, "messages": [{"role": "user", "content": text}], "label": int(label),
            "categories": categories or [], "language": language}

