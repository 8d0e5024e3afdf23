"""A scan directory: manifest.json (settings, inputs, finished shards with their fingerprints)
and shards/*.parquet (per-document scores), plus summary.json once the scan is finished.

A shard is a fixed range of one input file's documents (the k-th `shard_docs` of them), so the
plan is the same on every run: a resumed scan scores only the shards the manifest does not list
with a matching fingerprint. A shard is written to a temporary name, synced and renamed before
the manifest names it, so kill -9 at any point leaves either a listed, complete shard or one to
redo; a listed shard whose file is missing or whose SHA-256 differs is redone, the others kept.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np

from ..errors import DetoxkitError
from ..store import atomic_target, write_json_atomic
from .units import count_tokens, split_units

FORMAT = "detoxkit-corpus-scan/1"
MANIFEST = "manifest.json"
SUMMARY = "summary.json"
SHARDS = "shards"


def is_scan_dir(path: str | Path) -> bool:
    p = Path(path) / MANIFEST
    if not p.is_file():
        return False
    try:
        return json.loads(p.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def read_manifest(scan_dir: str | Path) -> dict:
    path = Path(scan_dir) / MANIFEST
    if not path.is_file():
        raise DetoxkitError(f"{scan_dir} is not a corpus scan directory (no {MANIFEST}): "
                            "make one with `detoxkit corpus scan PATH --out DIR`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DetoxkitError(f"{path}: not valid JSON ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise DetoxkitError(f"{path}: not a corpus scan manifest (format {manifest.get('format')!r})")
    return manifest


def write_manifest(scan_dir: Path, manifest: dict) -> None:
    write_json_atomic(scan_dir / MANIFEST, manifest)


def shard_name(file_index: int, shard_index: int) -> str:
    return f"{file_index:05d}-{shard_index:06d}.parquet"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def score_key(spec: str) -> str:
    """The column prefix of a scorer spec (its columns are KEY.max, KEY.mean, KEY.units)."""
    return spec


def score_docs(docs: list[dict], file_index: int, scorers: list, specs: list[str], units: str,
               unit_size: int, language: bool = True):
    """The shard table of `docs` ({line, offset, text, meta}): every unit of every document
    scored by each scorer in one call (the scorer sorts them by length and batches them), the
    document's score the maximum and the mean over its units (NaN when it has none scored);
    language: each document's language from detoxkit.lang (None when off or not installed)."""
    import pyarrow as pa

    spans = [split_units(d["text"], units, unit_size) for d in docs]
    flat = [d["text"][a:b] for d, sp in zip(docs, spans) for a, b in sp]
    bounds = np.cumsum([0] + [len(sp) for sp in spans])
    cols: dict[str, object] = {
        "file": pa.array([file_index] * len(docs), pa.int32()),
        "line": pa.array([d["line"] for d in docs], pa.int64()),
        "offset": pa.array([d["offset"] for d in docs], pa.int64()),
        "n_chars": pa.array([len(d["text"]) for d in docs], pa.int64()),
        "n_tokens": pa.array([count_tokens(d["text"]) for d in docs], pa.int64()),
        "n_units": pa.array([len(sp) for sp in spans], pa.int32()),
        "meta": pa.array([json.dumps(d["meta"], ensure_ascii=False, sort_keys=True) for d in docs],
                         pa.string()),
        "language": pa.array(languages_of([d["text"] for d in docs]) if language
                             else [None] * len(docs), pa.string()),
        "unit_start": pa.array([[a for a, _ in sp] for sp in spans], pa.list_(pa.int32())),
        "unit_end": pa.array([[b for _, b in sp] for sp in spans], pa.list_(pa.int32())),
    }
    starts = bounds[:-1][bounds[1:] > bounds[:-1]]  # first unit of each document with units
    has = bounds[1:] > bounds[:-1]
    for scorer, spec in zip(scorers, specs):
        tox = np.asarray(scorer.score(flat)["toxicity"], dtype=np.float64) if flat else np.zeros(0)
        doc_max, doc_mean = np.full(len(docs), np.nan), np.full(len(docs), np.nan)
        if len(starts):
            valid = ~np.isnan(tox)
            doc_max[has] = np.fmax.reduceat(tox, starts)  # NaN only where every unit is NaN
            n_ok = np.add.reduceat(valid.astype(np.int64), starts)
            sums = np.add.reduceat(np.where(valid, tox, 0.0), starts)
            doc_mean[has] = np.where(n_ok > 0, sums / np.maximum(n_ok, 1), np.nan)
        key = score_key(spec)
        cols[f"{key}.max"] = pa.array(doc_max, pa.float64(), from_pandas=True)
        cols[f"{key}.mean"] = pa.array(doc_mean, pa.float64(), from_pandas=True)
        cols[f"{key}.units"] = pa.array([[None if math.isnan(x) else float(x)
                                          for x in tox[bounds[i]:bounds[i + 1]]]
                                         for i in range(len(docs))], pa.list_(pa.float64()))
    return pa.table(cols)


def languages_of(texts: list[str]) -> list[str | None]:
    """Each text's language from detoxkit.lang (offline identification); None for every text
    where that component is not installed."""
    try:
        from ..lang import detect_many
    except ImportError:
        return [None] * len(texts)
    return [d.language for d in detect_many(texts)]


def write_shard(scan_dir: Path, name: str, table) -> dict:
    """Write a shard atomically; its manifest entry (rows, bytes, fingerprint)."""
    import pyarrow.parquet as pq

    final = scan_dir / SHARDS / name
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(final) as tmp:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    return {"rows": table.num_rows, "bytes": final.stat().st_size, "sha256": file_sha256(final)}


def check_shard(scan_dir: Path, name: str, entry: dict) -> str | None:
    """Why a listed shard cannot be used (missing, fingerprint differs), or None."""
    path = scan_dir / SHARDS / name
    if not path.is_file():
        return "missing"
    if path.stat().st_size != entry.get("bytes") or file_sha256(path) != entry.get("sha256"):
        return "its SHA-256 differs from the manifest's (damaged or changed)"
    return None


def load_table(scan_dir: str | Path, columns: list[str] | None = None, verify: bool = True):
    """Every shard of a finished (or partial) scan as one table, in the plan's order. verify:
    refuse a shard whose fingerprint differs from the manifest's (rerun the scan to redo it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    scan_dir = Path(scan_dir)
    manifest = read_manifest(scan_dir)
    tables = []
    for name in sorted(manifest["shards"]):
        if verify:
            why = check_shard(scan_dir, name, manifest["shards"][name])
            if why:
                raise DetoxkitError(f"{scan_dir / SHARDS / name}: {why}; run the same "
                                    "`detoxkit corpus scan` command again to redo this shard")
        tables.append(pq.read_table(scan_dir / SHARDS / name, columns=columns))
    if not tables:
        raise DetoxkitError(f"{scan_dir}: no finished shard yet")
    return pa.concat_tables(tables)
