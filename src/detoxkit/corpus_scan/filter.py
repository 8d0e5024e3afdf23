"""`detoxkit corpus filter SCAN_DIR --max-toxicity T [--by doc|unit]`.

Reads the scanned files again (the scan holds pointers, not text) and writes two corpora: the
kept part and the removed part. --by doc keeps a document whose score (the maximum over its
units) is at most T; --by unit keeps, of every document, the units scoring at most T, joined by
one space (a document with no unit left is removed whole; one with some units removed appears in
both parts, each with its own units). A document no scorer could score (NaN) is removed and
counted as unscored. Tokens are whitespace words, as the scan counts them.

--format same writes each input file in its own format (JSONL records keep every other field,
CSV keeps its columns, Parquet its schema, compression as the input's). --format jsonl or txt
writes one merged kept.* and removed.* file: what `detoxkit train dapt --data FILE` reads.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
from pathlib import Path

from ..errors import DetoxkitError
from ..store import write_json_atomic
from .pointers import reader_for
from .shards import load_table, read_manifest, score_key
from .units import count_tokens


def decisions(table, key: str, threshold: float, by: str) -> dict[tuple[int, int], tuple]:
    """{(file, line): (kept spans, removed spans, scored)} of every scanned document."""
    cols = {c: table.column(c).to_pylist() for c in ("file", "line", "unit_start", "unit_end")}
    doc_max = table.column(f"{key}.max").to_pylist()
    units = table.column(f"{key}.units").to_pylist()
    out = {}
    for i, (fi, line) in enumerate(zip(cols["file"], cols["line"])):
        spans = list(zip(cols["unit_start"][i], cols["unit_end"][i]))
        scored = doc_max[i] is not None and not math.isnan(doc_max[i])
        if by == "doc":
            keep = scored and doc_max[i] <= threshold
            out[(fi, line)] = ("all", None, scored) if keep else (None, "all", scored)
        else:
            kept = [s for s, v in zip(spans, units[i]) if v is not None and v <= threshold]
            removed = [s for s, v in zip(spans, units[i]) if v is None or v > threshold]
            out[(fi, line)] = (kept, removed, scored)
    return out


def _part(text: str, spans) -> str | None:
    if spans == "all":
        return text
    if not spans:
        return None
    return " ".join(" ".join(text[a:b].split()) for a, b in spans)


class Writer:
    """One output file written under a temporary name, renamed when closed."""

    def __init__(self, path: Path, fmt: str, compression: str | None, text_field: str,
                 fieldnames=None, schema=None):
        self.path, self.fmt, self.text_field = path, fmt, text_field
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list = []
        self.schema = schema
        if fmt == "parquet":
            return
        raw = open(self.tmp, "wb")
        if compression == "gzip":
            raw = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0)
        elif compression == "zstd":
            import zstandard

            raw = zstandard.ZstdCompressor().stream_writer(raw)
        self.fh = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        if fmt == "csv":
            self.csv = csv.DictWriter(self.fh, fieldnames=fieldnames)
            self.csv.writeheader()

    def write(self, text: str, record) -> None:
        if self.fmt == "text":
            self.fh.write(" ".join(text.split()) + "\n")
        elif self.fmt == "jsonl":
            rec = dict(record) if isinstance(record, dict) else {}
            _set(rec, self.text_field, text)
            self.fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        elif self.fmt == "csv":
            self.csv.writerow({**record, self.text_field: text})
        else:
            self.rows.append({**record, self.text_field: text})

    def close(self) -> None:
        if self.fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(self.rows, schema=self.schema), self.tmp)
        else:
            self.fh.close()
        os.replace(self.tmp, self.path)


def _set(rec: dict, field: str, text: str) -> None:
    """rec[field] = text, or into a nested object for a dotted field (RTP's prompt.text)."""
    if field in rec or "." not in field:
        rec[field] = text
        return
    *parents, last = field.split(".")
    node = rec
    for p in parents:
        node[p] = dict(node.get(p) or {})
        node = node[p]
    node[last] = text


def filter_scan(scan_dir: str | Path, max_toxicity: float, *, by: str = "doc",
                scorer: str | None = None, out: str | Path | None = None, fmt: str = "same") -> dict:
    """Write the kept and removed parts; returns the counts (also in OUT/filter.json)."""
    if by not in ("doc", "unit"):
        raise DetoxkitError(f"--by must be doc or unit, not {by}")
    if fmt not in ("same", "jsonl", "txt"):
        raise DetoxkitError(f"--format must be same, jsonl or txt, not {fmt}")
    scan_dir = Path(scan_dir)
    manifest = read_manifest(scan_dir)
    if manifest.get("status") != "finished":
        raise DetoxkitError(f"{scan_dir}: the scan is not finished; run its `detoxkit corpus scan` "
                            "command again (it resumes) before filtering")
    specs = manifest["settings"]["scorers"]
    spec = scorer or specs[0]
    if spec not in specs:
        raise DetoxkitError(f"--scorer {spec} did not score this scan (it has {', '.join(specs)})")
    key = score_key(spec)
    table = load_table(scan_dir, ["file", "line", "unit_start", "unit_end", f"{key}.max",
                                  f"{key}.units"])
    plan = decisions(table, key, max_toxicity, by)
    out = Path(out) if out else scan_dir / f"filtered-{by}-{max_toxicity:g}"
    text_field = manifest["settings"]["text_field"]
    counts = {"kept": {"docs": 0, "tokens": 0}, "removed": {"docs": 0, "tokens": 0},
              "partly_removed_docs": 0, "unscored_docs": 0}
    files_out = []
    merged = {}
    if fmt != "same":
        suffix = ".jsonl" if fmt == "jsonl" else ".txt"
        merged = {part: Writer(out / f"{part}{suffix}", "jsonl" if fmt == "jsonl" else "text",
                               None, "text") for part in ("kept", "removed")}
    names = _output_names(manifest)
    for fi, f in enumerate(manifest["files"]):
        reader = reader_for(manifest, fi)
        writers = merged or _file_writers(out, names[fi], f, text_field)
        per_file = {"kept": 0, "removed": 0}
        for doc in reader:
            kept, removed, scored = plan.get((fi, doc.line), (None, "all", False))
            counts["unscored_docs"] += not scored
            for part, spans in (("kept", kept), ("removed", removed)):
                text = _part(doc.text, spans)
                if text is None:
                    continue
                record = doc.record if fmt == "same" else {"text": text, "source": f["path"],
                                                            "line": doc.line}
                writers[part].write(text, record)
                counts[part]["docs"] += 1
                counts[part]["tokens"] += count_tokens(text)
                per_file[part] += 1
            if by == "unit" and kept and removed:
                counts["partly_removed_docs"] += 1
        if not merged:
            for w in writers.values():
                w.close()
            files_out.append({"input": f["path"], **{p: str(writers[p].path) for p in writers},
                              **{f"{p}_docs": n for p, n in per_file.items()}})
    for w in merged.values():
        w.close()
    if merged:
        files_out = [{"input": "all", **{p: str(w.path) for p, w in merged.items()}}]
    result = {"scan_dir": str(scan_dir), "scorer": spec, "max_toxicity": max_toxicity, "by": by,
              "format": fmt, **counts, "files": files_out}
    write_json_atomic(out / "filter.json", result)
    result["lines"] = _summary_lines(result, out, text_field if fmt == "same" else "text")
    return result


def _output_names(manifest: dict) -> list[str]:
    """Output file names: each input's name, prefixed by its index where two names clash."""
    names = [Path(f["path"]).name for f in manifest["files"]]
    return [n if names.count(n) == 1 else f"{i:05d}-{n}" for i, n in enumerate(names)]


def _file_writers(out: Path, name: str, f: dict, text_field: str) -> dict:
    fieldnames = schema = None
    if f["format"] == "csv":
        from .readers import detect, open_binary

        stream, _ = open_binary(detect(Path(f["path"]), "csv"))
        with stream:
            fieldnames = next(csv.reader(io.TextIOWrapper(stream, encoding="utf-8", newline="")))
    if f["format"] == "parquet":
        import pyarrow.parquet as pq

        schema = pq.read_schema(f["path"])
    return {part: Writer(out / part / name, f["format"], f["compression"], text_field,
                         fieldnames, schema) for part in ("kept", "removed")}


def _summary_lines(r: dict, out: Path, text_field: str) -> list[str]:
    k, rm = r["kept"], r["removed"]
    tokens = k["tokens"] + rm["tokens"]
    lines = [f"filter {r['scan_dir']} by {r['by']} at max toxicity {r['max_toxicity']:g} "
             f"({r['scorer']}): kept {k['docs']} documents, {k['tokens']} tokens "
             f"({100 * k['tokens'] / max(tokens, 1):.1f}% of tokens); removed {rm['docs']} "
             f"documents, {rm['tokens']} tokens"
             + (f"; {r['partly_removed_docs']} documents partly removed" if r["by"] == "unit" else "")
             + (f"; {r['unscored_docs']} unscored documents removed" if r["unscored_docs"] else "")]
    for f in r["files"]:
        lines.append(f"kept: {f['kept']}   removed: {f['removed']}")
    trainable = [f["kept"] for f in r["files"] if f["kept"].endswith((".jsonl", ".txt"))
                 and not (f["kept"].endswith(".jsonl") and "." in text_field)]
    if len(trainable) == 1:
        field = f" --text-field {text_field}" if trainable[0].endswith(".jsonl") and text_field != "text" else ""
        lines.append(f"train on it: detoxkit train dapt --data {trainable[0]}{field}")
    else:
        lines.append("for `detoxkit train dapt --data FILE` (one .jsonl or .txt file): "
                     "filter again with --format jsonl")
    lines.append(f"counts: {out / 'filter.json'}")
    return lines
