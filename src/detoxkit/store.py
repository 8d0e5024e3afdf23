"""The run store: one directory per run.

    DIR/config.yaml        the resolved config (what produced the samples)
    DIR/run.json           provenance: config hash, model, method, scorers, oracle, versions
    DIR/prompts.jsonl      the prompts of the run (id, text, toxicity, meta)
    DIR/generations.jsonl  one JSON object per sample, appended in whole lines
    DIR/metrics.json       metrics, recomputed from the files above
    DIR/.lock              held (flock) by the one process writing to the run

Crash safety: samples are appended a batch at a time with one write and fsync;
a line torn by kill -9 is cut off when the run is reopened, so a resumed run
neither loses a finished sample nor duplicates one. Every other file is written
to a temporary name and renamed.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import DetoxkitError

GENERATIONS = "generations.jsonl"


@contextmanager
def atomic_target(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path to write; renamed over `path` when the block ends without error.

    The name is unique to this process and call, so writers racing to build the same file
    (Ray actors converting one scorer into one cache directory) never rename each other's
    half-written file; the last rename wins with complete content."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def _atomic_open(path: Path) -> Iterator[Any]:
    """A text file that replaces `path` only once fully written and synced."""
    with atomic_target(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


def write_text_atomic(path: Path, text: str) -> None:
    with _atomic_open(path) as fh:
        fh.write(text)


def strict_json(obj: Any) -> Any:
    """`obj` with every NaN or infinity as None: strict JSON readers (JavaScript, jq) reject
    bare NaN. detoxkit's readers treat null as "no value" (NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def write_json_atomic(path: Path, obj: Any) -> None:
    with _atomic_open(path) as fh:
        json.dump(strict_json(obj), fh, indent=2, ensure_ascii=False, allow_nan=False, default=str)
        fh.write("\n")


def write_jsonl_atomic(path: Path, rows: Iterable[dict]) -> None:
    with _atomic_open(path) as fh:
        for row in rows:
            fh.write(json.dumps(strict_json(row), ensure_ascii=False, allow_nan=False) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.endswith("\n"):
                break  # a torn final line from a killed writer; see RunStore.repair
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DetoxkitError(f"{path}, line {line_no}: not valid JSON ({exc.msg}); "
                                    "the run directory is damaged") from None
    return rows


class RunStore:
    rows_file = GENERATIONS  # the append-only file of rows (detoxkit moderate: scores.jsonl)

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_fh = None

    # ---- locking -------------------------------------------------------------------------
    @contextmanager
    def locked(self, create: bool = True) -> Iterator["RunStore"]:
        """Hold the run's write lock; a second writer is refused with a clear message.
        create=False: the directory must already be a run (nothing is created otherwise)."""
        if not create and not (self.path / "run.json").is_file():
            raise DetoxkitError(f"{self.path} is not a detoxkit run directory (no run.json)")
        self.path.mkdir(parents=True, exist_ok=True)
        fh = open(self.path / ".lock", "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            owner = fh.read().strip() or "another process"
            fh.close()
            raise DetoxkitError(f"{self.path} is in use by {owner}; wait for it to finish or "
                                "choose another --out directory") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"detoxkit pid {os.getpid()}\n")
        fh.flush()
        self._lock_fh = fh
        try:
            yield self
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()
            self._lock_fh = None

    def remove_temporary_files(self) -> int:
        """Remove the temporary files of atomic writes that a kill interrupted (under the lock,
        no writer of this run is alive)."""
        self._require_lock()
        stray = list(self.path.glob(".*.*.tmp"))
        for path in stray:
            path.unlink(missing_ok=True)
        return len(stray)

    def _require_lock(self) -> None:
        if self._lock_fh is None:
            raise RuntimeError("write to a run store without holding its lock")

    # ---- files ---------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        return self.path / name

    def exists(self, name: str) -> bool:
        return (self.path / name).exists()

    def read_json(self, name: str) -> dict:
        try:
            with open(self.path / name, encoding="utf-8") as fh:
                return json.load(fh)
        except FileNotFoundError:
            raise DetoxkitError(f"{self.path} is not a detoxkit run (no {name})") from None
        except json.JSONDecodeError as exc:
            raise DetoxkitError(f"{self.path / name}: not valid JSON ({exc.msg})") from None

    def write_json(self, name: str, obj: Any) -> None:
        self._require_lock()
        write_json_atomic(self.path / name, obj)

    def write_text(self, name: str, text: str) -> None:
        self._require_lock()
        write_text_atomic(self.path / name, text)

    def write_jsonl(self, name: str, rows: Iterable[dict]) -> None:
        self._require_lock()
        write_jsonl_atomic(self.path / name, rows)

    # ---- generations ---------------------------------------------------------------------
    def repair(self) -> int:
        """Cut a torn final line left by a killed writer; returns bytes removed."""
        self._require_lock()
        path = self.path / self.rows_file
        if not path.exists():
            return 0
        with open(path, "rb+") as fh:
            data_end = fh.seek(0, os.SEEK_END)
            if data_end == 0:
                return 0
            # scan back to the last newline
            pos, chunk = data_end, 1 << 16
            while pos > 0:
                start = max(0, pos - chunk)
                fh.seek(start)
                block = fh.read(pos - start)
                nl = block.rfind(b"\n")
                if nl >= 0:
                    keep = start + nl + 1
                    break
                pos = start
            else:
                keep = 0
            if keep < data_end:
                fh.truncate(keep)
                fh.flush()
                os.fsync(fh.fileno())
            return data_end - keep

    def generations(self) -> list[dict]:
        """The run's samples, one per (prompt, sample index): where a failed sample was drawn
        again on resume, its later line wins."""
        path = self.path / self.rows_file
        rows = read_jsonl(path) if path.exists() else []
        latest = {(r["prompt_id"], r["sample_index"]): r for r in rows}
        return list(latest.values()) if len(latest) < len(rows) else rows

    def append_generations(self, rows: list[dict]) -> None:
        self._require_lock()
        if not rows:
            return
        payload = "".join(json.dumps(strict_json(r), ensure_ascii=False, allow_nan=False) + "\n"
                          for r in rows).encode("utf-8")
        fd = os.open(self.path / self.rows_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(payload)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)


def json_float(v: float) -> float | None:
    """A score for a JSON file: JSON has no NaN, so null means "not scored"."""
    v = float(v)
    return None if math.isnan(v) else v
