"""Reading prompt files: RealToxicityPrompts JSONL, and generic JSONL / CSV / Parquet.

Bad rows (malformed JSON, invalid UTF-8, missing or empty text, text holding a NUL
character, bad numbers, duplicate ids) go through one policy object: on_bad="error" raises an
InputError naming the file, line and field at the first one; on_bad="skip"
records it in PromptSet.skipped and goes on. Files are read as bytes and decoded
line by line, so invalid UTF-8 is reported with its line number.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..artefacts import file_sha256
from ..errors import DetoxkitError, InputError
from . import Prompt, PromptSet, fingerprint_prompts

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv",
           ".parquet": "parquet", ".pq": "parquet"}
ON_BAD = ("error", "skip")
DEFAULT_TEXT_FIELD = "text"
RTP_LANGUAGE = "en"  # the language of RTP-layout rows that name none (see _rtp_prompt)
_MISSING = object()


@dataclass(frozen=True)
class Record:
    line: int | None  # 1-based physical line where the record starts; None for Parquet
    index: int  # 0-based data record index (header and blank lines excluded)
    data: dict[str, Any]


class BadRows:
    """The on_bad policy: raise at the first bad row, or record it and go on."""

    def __init__(self, path: str, on_bad: str = "error"):
        if on_bad not in ON_BAD:
            raise DetoxkitError(f"on_bad must be one of {', '.join(ON_BAD)}, not {on_bad!r}")
        self.path, self.on_bad = path, on_bad
        self.skipped: list[dict[str, Any]] = []

    def __call__(self, reason: str, *, line: int | None = None, field: str | None = None,
                 row: int | None = None) -> None:
        if row is not None and line is None:  # Parquet / hub rows have no line numbers
            reason = f"row {row}: {reason}"
        if self.on_bad == "error":
            raise InputError(reason, path=self.path, line=line, field=field)
        self.skipped.append({"file": self.path, "line": line, "field": field, "reason": reason})

    def at(self, rec: Record, reason: str, field: str | None = None) -> None:
        self(reason, line=rec.line, field=field, row=rec.index)


def file_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"unsupported file type '{path.suffix}'; use one of "
                         f"{', '.join(sorted(FORMATS))}", path=str(path))
    return fmt


def open_records(path: Path, bad: BadRows) -> tuple[list[str] | None, Iterator[Record]]:
    """(columns or None for JSONL, records). Raises InputError if the file cannot be read."""
    if not path.is_file():
        raise InputError("no such file", path=str(path))
    fmt = file_format(path)
    if fmt == "parquet":
        return _parquet_records(path)
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark is not part of the first line
        data = data[3:]
    if fmt == "jsonl":
        return None, _jsonl_records(data, bad)
    return _csv_records(path, data, bad, "\t" if fmt == "tsv" else ",")


def _decode(raw: bytes, bad: BadRows, line: int) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad(f"invalid UTF-8 at byte {exc.start + 1} of the line", line=line)
        return None


def _jsonl_records(data: bytes, bad: BadRows) -> Iterator[Record]:
    index = 0
    for line, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        index += 1  # bad lines keep their index so later rows keep theirs
        text = _decode(raw, bad, line)
        if text is None:
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            bad(f"malformed JSON: {exc.msg} (column {exc.colno})", line=line)
            continue
        if not isinstance(obj, dict):
            bad(f"expected a JSON object, got {type(obj).__name__}", line=line)
            continue
        yield Record(line, index - 1, obj)


def _csv_records(path: Path, data: bytes, bad: BadRows,
                 delimiter: str) -> tuple[list[str], Iterator[Record]]:
    lines = data.splitlines(keepends=True)
    consumed: list[int] = []  # physical line numbers handed to the csv reader for this record

    def decoded() -> Iterator[str]:
        for number, raw in enumerate(lines, 1):
            text = _decode(raw, bad, number) if number > 1 else _header(raw)
            if text is not None:
                consumed.append(number)
                yield text

    def _header(raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:  # no header, no file: always an error
            raise InputError(f"invalid UTF-8 in the header at byte {exc.start + 1}",
                             path=str(path), line=1) from None

    reader = csv.reader(decoded(), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError("empty file (no header row)", path=str(path)) from None
    except csv.Error as exc:
        raise InputError(f"malformed CSV header: {exc}", path=str(path), line=1) from None
    header = [h.strip() for h in header]

    def records() -> Iterator[Record]:
        index = 0
        while True:
            consumed.clear()
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # the reader cannot resync after this: always an error
                raise InputError(f"malformed CSV: {exc}", path=str(path),
                                 line=consumed[0] if consumed else None) from None
            start = consumed[0] if consumed else None
            if not row:
                continue
            index += 1
            if len(row) != len(header):
                bad(f"expected {len(header)} fields, got {len(row)}", line=start)
                continue
            yield Record(start, index - 1, dict(zip(header, row)))

    return header, records()


def _parquet_records(path: Path) -> tuple[list[str], Iterator[Record]]:
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except ImportError:
        raise DetoxkitError("reading Parquet needs pyarrow (pip install pyarrow)") from None
    except Exception as exc:  # noqa: BLE001 - any pyarrow failure is a bad file here
        raise InputError(f"cannot read Parquet: {exc}", path=str(path)) from None
    rows = table.to_pylist()
    return table.column_names, (Record(None, i, row) for i, row in enumerate(rows))


def get_field(data: dict[str, Any], name: str) -> Any:
    """data[name], or a dotted path into nested objects ("prompt.text")."""
    if name in data:
        return data[name]
    value: Any = data
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _number(value: Any, rec: Record, field: str, bad: BadRows) -> tuple[bool, float | None]:
    """(ok, value in [0, 1] or None). Empty / null / NaN mean unknown."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return True, None
    if isinstance(value, bool):
        bad.at(rec, f"expected a number in [0, 1], got {value!r}", field)
        return False, None
    try:
        x = float(value)
    except (TypeError, ValueError):
        bad.at(rec, f"not a number: {str(value)[:40]!r}", field)
        return False, None
    if math.isnan(x):
        return True, None
    if not 0.0 <= x <= 1.0:
        bad.at(rec, f"must be in [0, 1], got {x}", field)
        return False, None
    return True, x


def _flag(value: Any, rec: Record, field: str, bad: BadRows) -> tuple[bool, bool | None]:
    if value is None or value == "":
        return True, None
    if isinstance(value, bool):
        return True, value
    if isinstance(value, (int, float)) and value in (0, 1):
        return True, bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return True, value.strip().lower() in ("true", "1", "yes")
    bad.at(rec, f"expected true/false, got {str(value)[:40]!r}", field)
    return False, None


def _text(value: Any, rec: Record, field: str, bad: BadRows) -> str | None:
    if value is _MISSING:
        bad.at(rec, "missing text field", field)
        return None
    if not isinstance(value, str):
        bad.at(rec, f"expected a string, got {type(value).__name__}", field)
        return None
    if not value.strip():
        bad.at(rec, "empty prompt (blank or whitespace only)", field)
        return None
    if "\x00" in value:  # NUL ends strings in C tokenizers and breaks many tools downstream
        bad.at(rec, "the text holds a NUL character (\\x00)", field)
        return None
    return value


def _default_id(rec: Record) -> str:
    return f"line-{rec.line}" if rec.line is not None else f"row-{rec.index}"


def _rtp_prompt(rec: Record, bad: BadRows) -> Prompt | None:
    d = rec.data
    prompt = d.get("prompt")
    if not isinstance(prompt, dict):
        bad.at(rec, "missing 'prompt' object", "prompt")
        return None
    text = _text(prompt.get("text", _MISSING), rec, "prompt.text", bad)
    if text is None:
        return None
    ok, toxicity = _number(prompt.get("toxicity"), rec, "prompt.toxicity", bad)
    ok2, challenging = _flag(d.get("challenging"), rec, "challenging", bad)
    if not (ok and ok2):
        return None
    if d.get("id") not in (None, ""):
        pid = str(d["id"])
    elif d.get("filename") is not None:
        pid = f"{d['filename']}:{d.get('begin')}-{d.get('end')}"
    else:
        pid = _default_id(rec)
    meta: dict[str, Any] = {"line": rec.line, "index": rec.index}
    for key in ("filename", "begin", "end", "source_row", "sentence_index", "sentence_toxicity",
                "label", "language"):
        if d.get(key) is not None:
            meta[key] = d[key]
    # RealToxicityPrompts is English web text, and detection on prompts this short mislabels
    # many (slang read as Nigerian Pidgin); a row's own `language` field says otherwise
    meta.setdefault("language", RTP_LANGUAGE)
    cont = d.get("continuation")
    if isinstance(cont, dict):
        meta["continuation"] = cont.get("text")
        ok, meta["continuation_toxicity"] = _number(cont.get("toxicity"), rec,
                                                    "continuation.toxicity", bad)
        if not ok:
            return None
    return Prompt(pid, text, toxicity, challenging, meta)


def _messages(value: Any, rec: Record, bad: BadRows) -> tuple[list[dict], str] | None:
    """A conversation (OpenAI `messages`): its turns and the text of its last user turn."""
    ok = isinstance(value, list) and value and all(
        isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
        and isinstance(m.get("content"), str) for m in value)
    if not ok:
        bad.at(rec, "expected a list of {role: system|user|assistant, content: text} turns", "messages")
        return None
    users = [m["content"] for m in value if m["role"] == "user"]
    if not users or value[-1]["role"] != "user":
        bad.at(rec, "a conversation must end with a user turn", "messages")
        return None
    text = _text(users[-1], rec, "messages", bad)
    return (value, text) if text is not None else None


def _generic_prompt(rec: Record, text_field: str, bad: BadRows,
                    group_field: str = "group") -> Prompt | None:
    d = rec.data
    conversation = None
    if "messages" in d and get_field(d, text_field) is _MISSING:  # a conversation file
        conversation = _messages(d["messages"], rec, bad)
        if conversation is None:
            return None
        text = conversation[1]
    else:
        text = _text(get_field(d, text_field), rec, text_field, bad)
    if text is None:
        return None
    ok, toxicity = _number(d.get("toxicity"), rec, "toxicity", bad)
    ok2, challenging = _flag(d.get("challenging"), rec, "challenging", bad)
    if not (ok and ok2):
        return None
    pid = str(d["id"]) if d.get("id") not in (None, "") else _default_id(rec)
    meta: dict[str, Any] = {"line": rec.line, "index": rec.index}
    for key in ("group", "language", "domain"):
        value = get_field(d, group_field) if key == "group" else d.get(key)
        if value not in (None, "", _MISSING):
            meta[key] = value
    if group_field != "group" and "group" not in meta:
        bad.at(rec, "missing group field (named by --group-field)", group_field)
        return None
    if conversation is not None:  # chat mode sends it as it is (detoxkit/chat.py)
        meta["messages"] = [{"role": m["role"], "content": m["content"]} for m in conversation[0]]
    return Prompt(pid, text, toxicity, challenging, meta)


def prompts_from_records(records: Iterable[Record], bad: BadRows, *,
                         text_field: str | None = None, allow_rtp: bool = True,
                         drop_exact_duplicates: bool = False,
                         group_field: str | None = None) -> tuple[list[Prompt], bool]:
    """(prompts, is_rtp). RTP format is detected on the first record (a `prompt` object)
    unless a text field is named; duplicate ids are bad rows. drop_exact_duplicates: a
    repeat of an earlier prompt (same id, text and toxicity) is dropped and listed in
    `skipped` even when on_bad="error" (for data we cannot fix, like the hub's)."""
    prompts: list[Prompt] = []
    seen: dict[str, str] = {}
    first: dict[str, Prompt] = {}
    rtp: bool | None = None
    for rec in records:
        if rtp is None:
            rtp = allow_rtp and text_field is None and isinstance(rec.data.get("prompt"), dict)
        p = _rtp_prompt(rec, bad) if rtp else _generic_prompt(rec, text_field or DEFAULT_TEXT_FIELD,
                                                                 bad, group_field or "group")
        if p is None:
            continue
        if p.id in seen:
            same = (first[p.id].text, first[p.id].toxicity) == (p.text, p.toxicity)
            if drop_exact_duplicates and same:
                bad.skipped.append({"file": bad.path, "line": rec.line, "field": "id",
                                    "reason": f"exact duplicate of {seen[p.id]} (dropped)"})
            else:
                bad.at(rec, f"duplicate id {p.id!r} (first at {seen[p.id]})", "id")
            continue
        seen[p.id] = f"line {rec.line}" if rec.line is not None else f"row {rec.index}"
        first[p.id] = p
        prompts.append(p)
    return prompts, bool(rtp)


def read_prompt_file(path: str | Path, *, text_field: str | None = None, on_bad: str = "error",
                     name: str | None = None, drop_exact_duplicates: bool = False,
                     group_field: str | None = None) -> PromptSet:
    """A prompt set from RTP-format JSONL or generic JSONL / CSV / TSV / Parquet."""
    path = Path(path)
    bad = BadRows(str(path), on_bad)
    columns, records = open_records(path, bad)
    fmt = file_format(path)
    wanted = text_field or DEFAULT_TEXT_FIELD
    if columns is not None and wanted not in columns:
        raise InputError(f"no such column (columns: {', '.join(map(str, columns))}); "
                         "name the text column with --text-field",
                         path=str(path), line=1 if fmt in ("csv", "tsv") else None, field=wanted)
    prompts, rtp = prompts_from_records(records, bad, text_field=text_field,
                                        allow_rtp=fmt == "jsonl",
                                        drop_exact_duplicates=drop_exact_duplicates,
                                        group_field=group_field)
    if not prompts:
        raise InputError(f"no usable prompts ({len(bad.skipped)} rows skipped)", path=str(path))
    provenance = {"kind": "file", "format": "rtp-jsonl" if rtp else fmt, "path": str(path),
                  "file_sha256": file_sha256(path),
                  "text_field": "prompt.text" if rtp else wanted}
    if group_field:
        provenance["group_field"] = group_field
    return PromptSet(prompts, name or path.stem, str(path), fingerprint_prompts(prompts),
                     provenance, bad.skipped)
