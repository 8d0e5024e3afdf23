"""`detoxkit corpus scan`: stream a corpus, score its documents' units, write Parquet shards.

The driver reads every input file in order (readers.py) and cuts each file's documents into
shards of `shard_docs`; a shard the manifest already lists (with a matching fingerprint) is
skipped, every other one is scored and written (shards.py) and then listed. Scoring runs in this
process (executor "local", no Ray import) or on Ray Data actors (ray_scan.py): both call
shards.score_docs on the same shard, so their scores are the same.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import DetoxkitError
from ..progress import Progress
from ..store import RunStore
from .readers import Reader, expand_inputs
from .shards import (FORMAT, MANIFEST, SHARDS, check_shard, read_manifest, score_docs, shard_name,
                     write_manifest, write_shard)
from .units import UNIT_MODES

log = logging.getLogger(__name__)


@dataclass
class ScanConfig:
    inputs: list[str]
    scorers: list[str]
    out: str
    text_field: str = "text"
    format: str | None = None  # jsonl | parquet | csv | text (default: from the suffix)
    units: str = "sentences"
    unit_size: int = 64
    shard_docs: int = 1000
    on_bad: str = "error"  # or "skip": count malformed records and go on
    batch_size: int | None = None
    device: str = "cpu"
    threads: int = 0  # torch CPU threads of the scoring process or of each Ray actor (0: default)
    executor: str = "local"  # or "ray"
    workers: int = 1
    ray_address: str | None = None
    language: bool = True  # detect each document's language (detoxkit.lang) for the breakdown
    threshold: float = 0.5
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        if not self.scorers:
            raise DetoxkitError("give at least one --scorer")
        if len(set(self.scorers)) != len(self.scorers):
            raise DetoxkitError("a --scorer is given twice")
        if self.units not in UNIT_MODES:
            raise DetoxkitError(f"--units must be one of {', '.join(UNIT_MODES)}")
        if self.unit_size < 1 or self.shard_docs < 1:
            raise DetoxkitError("--unit-size and --shard-docs must be >= 1")
        if self.executor not in ("local", "ray"):
            raise DetoxkitError(f"--executor must be local or ray, not {self.executor}")


# settings that do not change a score: a scan may be resumed with other values
EXECUTION_ONLY = ("out", "executor", "workers", "ray_address", "device", "threads", "threshold",
                  "seed", "extra")


def settings_of(config: ScanConfig, files) -> dict:
    s = {k: v for k, v in asdict(config).items() if k not in EXECUTION_ONLY and k != "inputs"}
    s["inputs"] = [f.describe() for f in files]
    return s


def settings_hash(settings: dict) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def open_manifest(out: Path, config: ScanConfig, files) -> dict:
    """The manifest of a new scan, or of the scan in `out` with the same settings (resumed);
    other settings are refused."""
    settings = settings_of(config, files)
    digest = settings_hash(settings)
    if (out / MANIFEST).exists():
        manifest = read_manifest(out)
        if manifest["settings_hash"] != digest:
            old = manifest["settings"]
            changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise DetoxkitError(f"{out} holds a scan with other settings ({', '.join(changed)} "
                                "differ; an input file changed if 'inputs' is listed): choose "
                                "another --out, or delete the directory to start again")
        return manifest
    return {"format": FORMAT, "settings_hash": digest, "settings": settings, "status": "running",
            "scorers": [], "files": [{"path": f.describe()["path"], "format": f.format,
                                      "compression": f.compression, "done": False}
                                     for f in files],
            "shards": {}, "started": time.time()}


def verify_shards(out: Path, manifest: dict) -> list[str]:
    """Drop the listed shards that are missing or damaged (they are redone); their names."""
    bad = []
    for name, entry in list(manifest["shards"].items()):
        why = check_shard(out, name, entry)
        if why:
            log.warning("shard %s: %s; it is scored again", name, why)
            del manifest["shards"][name]
            manifest["files"][entry["file"]]["done"] = False
            bad.append(name)
    return bad


def set_threads(threads: int) -> None:
    """torch's CPU threads, where given: a neural scorer's last digits depend on the thread
    count, so a scan and its Ray twin score the same bits only with the same count."""
    if threads:
        import torch

        torch.set_num_threads(threads)


class LocalScorer:
    """Scores shards in this process, one at a time."""

    def __init__(self, config: ScanConfig, out: Path):
        from ..scorers import load_scorer

        self.config, self.out = config, out
        set_threads(config.threads)
        self.scorers = [load_scorer(s, config.device, config.batch_size) for s in config.scorers]
        self.infos = [s.info() for s in self.scorers]

    def submit(self, name: str, file_index: int, shard_index: int, docs: list[dict]):
        table = score_docs(docs, file_index, self.scorers, self.config.scorers, self.config.units,
                           self.config.unit_size, self.config.language)
        yield name, write_shard(self.out, name, table), self.infos

    def flush(self):
        return iter(())

    def close(self) -> None:
        pass


def run_scan(config: ScanConfig) -> Path:
    """Scan (or resume scanning) config.inputs into config.out; returns the scan directory."""
    config.check()
    files = expand_inputs(config.inputs, config.format)
    out = Path(config.out)
    store = RunStore(out)
    with store.locked():
        for stray in (out / SHARDS).glob(".*.tmp") if (out / SHARDS).is_dir() else ():
            stray.unlink(missing_ok=True)
        store.remove_temporary_files()
        manifest = open_manifest(out, config, files)
        redo = verify_shards(out, manifest)
        manifest["status"] = "running"
        write_manifest(out, manifest)
        if config.executor == "ray":
            from .ray_scan import RayScorer

            sink = RayScorer(config, out)
        else:
            sink = LocalScorer(config, out)
        try:
            _scan_files(config, files, manifest, out, sink, len(redo))
        finally:
            sink.close()
        manifest["status"] = "finished"
        manifest["finished"] = time.time()
        from .summary import summarize

        manifest_summary = summarize(out, manifest, threshold=config.threshold, seed=config.seed)
        write_manifest(out, manifest)
        log.info("scan %s: %d documents in %d shards", out, manifest_summary["n_docs"],
                 len(manifest["shards"]))
    return out


def _record(manifest: dict, out: Path, results, file_index_of: dict[str, tuple[int, int]],
            counts: dict) -> None:
    for name, entry, infos in results:
        fi, k = file_index_of.pop(name)
        manifest["shards"][name] = {"file": fi, "index": k, **entry}
        if not manifest["scorers"]:
            manifest["scorers"] = infos
        elif [(i["name"], i["version"]) for i in manifest["scorers"]] != \
                [(i["name"], i["version"]) for i in infos]:
            raise DetoxkitError(f"{out}: a scorer's version changed since the scan started "
                                f"({manifest['scorers']} then {infos}): choose another --out")
        counts["docs"] += entry["rows"]
        write_manifest(out, manifest)


def _close_files(manifest: dict, out: Path, read: dict) -> None:
    """Mark done the files read through whose every shard is listed (a Ray window may still
    hold a file's last shards when the next file is read)."""
    for fi, (n_shards, n_docs, bad) in list(read.items()):
        if all(shard_name(fi, k) in manifest["shards"] for k in range(n_shards)):
            manifest["files"][fi].update(done=True, docs=n_docs, shards=n_shards, bad_records=bad)
            del read[fi]
            write_manifest(out, manifest)


def _scan_files(config: ScanConfig, files, manifest: dict, out: Path, sink, redo: int) -> None:
    total_bytes = sum(f.path.stat().st_size for f in files)
    done_bytes = sum(f.path.stat().st_size for f, m in zip(files, manifest["files"]) if m["done"])
    counts = {"docs": sum(e["rows"] for e in manifest["shards"].values())}
    pending: dict[str, tuple[int, int]] = {}
    read: dict[int, tuple[int, int, int]] = {}  # files read through: (shards, docs, bad records)
    t0, docs0 = time.monotonic(), counts["docs"]
    with Progress(total_bytes, f"scan {out.name}", unit="bytes", initial=done_bytes) as bar:
        last_note = [0.0]

        def note(final: bool = False) -> None:
            now = time.monotonic()
            if not final and now - last_note[0] < 10:
                return
            last_note[0] = now
            rate = (counts["docs"] - docs0) / max(now - t0, 1e-9)
            bar.note(f"{counts['docs']} documents scored ({rate:.0f}/s)")

        for fi, (f, fm) in enumerate(zip(files, manifest["files"])):
            if fm["done"]:
                continue
            reader = Reader(f, config.text_field, config.on_bad)
            last_bytes, ordinal, docs = 0, 0, []

            def emit(k: int) -> None:
                name = shard_name(fi, k)
                if name in manifest["shards"]:
                    return
                pending[name] = (fi, k)
                _record(manifest, out, sink.submit(name, fi, k, docs), pending, counts)
                note()

            for doc in reader:
                docs.append({"line": doc.line, "offset": doc.offset, "text": doc.text,
                             "meta": doc.meta})
                ordinal += 1
                if ordinal % config.shard_docs == 0:
                    emit(ordinal // config.shard_docs - 1)
                    docs = []
                if reader.bytes_read > last_bytes:
                    bar.update(reader.bytes_read - last_bytes)
                    last_bytes = reader.bytes_read
            if docs:
                emit(ordinal // config.shard_docs)
            bar.update(max(0, f.path.stat().st_size - last_bytes))
            read[fi] = (-(-ordinal // config.shard_docs), ordinal, reader.bad)
            if reader.bad:
                log.warning("%s: %d malformed records skipped (--on-bad skip)", f.path, reader.bad)
            _close_files(manifest, out, read)
        _record(manifest, out, sink.flush(), pending, counts)  # Ray: the last window
        _close_files(manifest, out, read)
        left = [manifest["files"][fi]["path"] for fi in read]
        if left:
            raise DetoxkitError(f"internal error: shards of {left[0]} were not written")
        note(final=True)
    if redo:
        log.info("%d damaged or missing shards were scored again", redo)
