"""Streaming readers for the corpora `detoxkit corpus scan` reads: JSONL, Parquet, CSV and
plain text (one document per non-blank line), each optionally gzip- or zstd-compressed.

Every document carries a pointer back into its file: `line` (1-based line of a JSONL or text
file, 1-based data row of a CSV or Parquet file) and `offset` (byte offset of the line in the
uncompressed stream; None for CSV and Parquet). A malformed record is an InputError naming the
file, the line or row and the field, unless on_bad="skip", which counts it instead.
"""

from __future__ import annotations

import csv
import glob
import gzip
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import DetoxkitError, InputError
from ..prompts.files import _MISSING, get_field

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet",
           ".csv": "csv", ".txt": "text"}
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
URL_FIELDS = ("url", "URL", "link", "source_url")


@dataclass
class Document:
    line: int  # 1-based line (JSONL, text) or data row (CSV, Parquet)
    offset: int | None  # byte offset of the line in the uncompressed stream (JSONL, text)
    text: str
    meta: dict[str, Any] = field(default_factory=dict)
    record: Any = None  # the parsed record (JSONL dict, CSV row dict) for the filter's writer


@dataclass(frozen=True)
class InputFile:
    path: Path
    format: str  # jsonl | parquet | csv | text
    compression: str | None  # gzip | zstd | None

    def describe(self) -> dict:
        st = self.path.stat()
        return {"path": str(self.path), "format": self.format, "compression": self.compression,
                "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def detect(path: Path, fmt: str | None = None) -> InputFile:
    """The format and compression of `path` from its suffixes (--format overrides the format)."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = COMPRESSIONS.get(suffixes[-1]) if suffixes else None
    if compression:
        suffixes = suffixes[:-1]
    found = fmt or (FORMATS.get(suffixes[-1]) if suffixes else None)
    if found is None:
        raise InputError(f"unknown file type (known: {', '.join(sorted(FORMATS))}, optionally "
                         f"+ .gz or .zst; or give --format)", path=str(path))
    if found not in FORMATS.values():
        raise DetoxkitError(f"unknown --format {found} (jsonl, parquet, csv, text)")
    if found == "parquet" and compression:
        raise InputError("a compressed Parquet file: Parquet compresses its own columns; "
                         "decompress it first", path=str(path))
    return InputFile(path, found, compression)


def expand_inputs(specs: list[str], fmt: str | None = None) -> list[InputFile]:
    """Files, globs and directories (searched recursively for known suffixes), sorted and
    deduplicated; a spec that matches nothing is an error."""
    out: list[Path] = []
    for spec in specs:
        p = Path(spec).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and _known(f))
        elif p.is_file():
            found = [p]
        else:
            found = sorted(Path(f) for f in glob.glob(str(p), recursive=True) if Path(f).is_file())
        if not found:
            raise DetoxkitError(f"{spec}: no such file, or no corpus files in it (known suffixes: "
                                f"{', '.join(sorted(FORMATS))}, optionally + .gz or .zst)")
        out += found
    seen, files = set(), []
    for f in out:
        r = f.resolve()
        if r not in seen:
            seen.add(r)
            files.append(detect(r, fmt))
    return files


def _known(path: Path) -> bool:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes = suffixes[:-1]
    return bool(suffixes) and suffixes[-1] in FORMATS


class CountingReader(io.RawIOBase):
    """A raw file whose position (bytes read from disk) is the progress in bytes."""

    def __init__(self, fh):
        self.fh, self.pos = fh, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self.fh.readinto(b)
        self.pos += n or 0
        return n

    def close(self) -> None:
        self.fh.close()
        super().close()


def open_binary(f: InputFile):
    """(decompressed binary stream, counting raw reader)."""
    raw = CountingReader(open(f.path, "rb"))
    if f.compression == "gzip":
        return gzip.GzipFile(fileobj=io.BufferedReader(raw)), raw
    if f.compression == "zstd":
        try:
            import zstandard
        except ImportError:
            raise DetoxkitError("reading .zst files needs zstandard (pip install zstandard)") from None
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw)), raw
    return io.BufferedReader(raw), raw


class Reader:
    """Documents of one file, in order. `bytes_read` follows the on-disk bytes consumed;
    `bad` counts the records skipped with on_bad="skip"."""

    def __init__(self, f: InputFile, text_field: str = "text", on_bad: str = "error"):
        if on_bad not in ("error", "skip"):
            raise ValueError(f"on_bad must be error or skip, not {on_bad!r}")
        self.file, self.text_field, self.on_bad = f, text_field, on_bad
        self.bad = 0
        self.bytes_read = 0
        self._raw = None

    def _fail(self, message: str, line: int | None, field: str | None = None) -> None:
        if self.on_bad == "skip":
            self.bad += 1
            return
        raise InputError(message, path=str(self.file.path), line=line, field=field)

    def __iter__(self) -> Iterator[Document]:
        try:
            if self.file.format == "parquet":
                yield from self._parquet()
                return
            stream, self._raw = open_binary(self.file)
            with stream:
                yield from {"jsonl": self._jsonl, "text": self._text, "csv": self._csv}[self.file.format](stream)
        except (OSError, EOFError) as exc:  # a truncated gzip / zstd stream, a damaged file
            raise InputError(f"cannot be read ({type(exc).__name__}: {exc}); the file is damaged "
                             "or not what its suffix says", path=str(self.file.path)) from None
        except Exception as exc:
            if type(exc).__module__.startswith("zstd") or "zstd" in type(exc).__name__.lower():
                raise InputError(f"not a valid zstd stream ({exc})", path=str(self.file.path)) from None
            raise
        finally:
            if self._raw is not None:
                self.bytes_read = self._raw.pos

    def _tick(self) -> None:
        if self._raw is not None:
            self.bytes_read = self._raw.pos

    def _lines(self, stream) -> Iterator[tuple[int, int, str]]:
        offset = 0
        for n, raw in enumerate(stream, 1):
            start, offset = offset, offset + len(raw)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                self._fail(f"not valid UTF-8 ({exc.reason})", n)
                continue
            self._tick()
            yield n, start, text

    def _jsonl(self, stream) -> Iterator[Document]:
        tf = self.text_field
        for n, start, line in self._lines(stream):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as exc:
                self._fail(f"not valid JSON ({getattr(exc, 'msg', exc)})", n)
                continue
            if not isinstance(rec, dict):
                self._fail(f"a JSON {type(rec).__name__}, not an object", n)
                continue
            text = get_field(rec, tf)  # a dotted path reaches nested objects (RTP's prompt.text)
            text = None if text is _MISSING else text
            if not isinstance(text, str):
                self._fail("missing" if text is None else f"must be a string, not {type(text).__name__}",
                           n, tf)
                continue
            yield Document(n, start, text, _meta(rec, tf), rec)

    def _text(self, stream) -> Iterator[Document]:
        for n, start, line in self._lines(stream):
            text = line.rstrip("\r\n")
            if text.strip():
                yield Document(n, start, text, {}, None)

    def _csv(self, stream) -> Iterator[Document]:
        text_stream = io.TextIOWrapper(stream, encoding="utf-8", newline="")
        try:
            reader = csv.DictReader(text_stream)
            if self.text_field not in (reader.fieldnames or []):
                raise InputError(f"no such column (the header has {reader.fieldnames})",
                                 path=str(self.file.path), line=1, field=self.text_field)
            for row_no, rec in enumerate(reader, 1):
                self._tick()
                if None in rec or any(v is None for v in rec.values()):
                    cells = sum(v is not None for k, v in rec.items() if k is not None)
                    cells += len(rec.get(None) or [])
                    self._fail(f"data row {row_no} has {cells} cells, the header "
                               f"{len(reader.fieldnames)}", reader.line_num)
                    continue
                yield Document(row_no, None, rec[self.text_field], _meta(rec, self.text_field), rec)
        except UnicodeDecodeError as exc:
            raise InputError(f"not valid UTF-8 ({exc.reason})", path=str(self.file.path),
                             line=None) from None
        except csv.Error as exc:
            raise InputError(f"not valid CSV ({exc})", path=str(self.file.path)) from None

    def _parquet(self) -> Iterator[Document]:
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(self.file.path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds for a bad file
            raise InputError(f"not a readable Parquet file ({exc})", path=str(self.file.path)) from None
        names = pf.schema_arrow.names
        if self.text_field not in names:
            raise InputError(f"no such column (the file has {names})", path=str(self.file.path),
                             field=self.text_field)
        row = 0
        size = self.file.path.stat().st_size
        n_groups = max(1, pf.num_row_groups)
        for g in range(pf.num_row_groups):
            for rec in pf.read_row_group(g).to_pylist():
                row += 1
                text = rec.get(self.text_field)
                if not isinstance(text, str):
                    self._fail(f"row {row}: " + ("missing (null)" if text is None else
                               f"must be a string, not {type(text).__name__}"), None, self.text_field)
                    continue
                yield Document(row, None, text, _meta(rec, self.text_field), rec)
            self.bytes_read = size * (g + 1) // n_groups


def _meta(rec: dict, text_field: str) -> dict:
    """The record's scalar fields (the breakdowns' metadata), with url_host from a URL field."""
    meta = {k: v for k, v in rec.items() if k != text_field and isinstance(v, (str, int, float, bool))
            and not (isinstance(v, str) and len(v) > 200)}
    for key in URL_FIELDS:
        if isinstance(rec.get(key), str):
            meta["url_host"] = url_host(rec[key])
            break
    return meta


def url_host(url: str) -> str:
    from urllib.parse import urlsplit

    host = urlsplit(url if "//" in url else "//" + url).hostname or ""
    return host[4:] if host.startswith("www.") else host
