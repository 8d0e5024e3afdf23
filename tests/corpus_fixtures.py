"""Small corpora for the corpus scan tests, built from the RTP reference files (read from the
shared data folder, written to a test's tmp_path)."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

from helpers import RTP_CHALLENGING, RTP_NONTOXIC


def rtp_records(n: int = 40) -> list[dict]:
    """n // 2 records of each RTP file: text = prompt + continuation, with source and url."""
    out = []
    for path, source in ((RTP_CHALLENGING, "challenging"), (RTP_NONTOXIC, "nontoxic")):
        with open(path, encoding="utf-8") as fh:
            for line, _ in zip(fh, range(n // 2)):
                rec = json.loads(line)
                host = "news.example.org" if len(out) % 3 else "www.forum.example.com"
                out.append({"id": f"{source}-{len(out)}", "source": source,
                            "url": f"https://{host}/{rec['filename']}",
                            "text": " ".join((rec["prompt"]["text"] + rec["continuation"]["text"]).split())})
    return out


def write_jsonl(path: Path, records: list[dict], opener=open) -> Path:
    with opener(path, "wt", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def write_zst(path: Path, text: str) -> Path:
    import zstandard

    path.write_bytes(zstandard.ZstdCompressor().compress(text.encode("utf-8")))
    return path


def write_csv(path: Path, records: list[dict], opener=open) -> Path:
    with opener(path, "wt", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(records[0]))
        w.writeheader()
        w.writerows(records)
    return path


def write_parquet(path: Path, records: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(records), path, row_group_size=7)
    return path


def write_all_formats(directory: Path, records: list[dict]) -> dict[str, Path]:
    """The same documents in every supported format and compression."""
    directory.mkdir(parents=True, exist_ok=True)
    jsonl = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    text = "".join(" ".join(r["text"].split()) + "\n" for r in records)
    return {
        "jsonl": write_jsonl(directory / "c.jsonl", records),
        "jsonl.gz": write_jsonl(directory / "c.jsonl.gz", records, gzip.open),
        "jsonl.zst": write_zst(directory / "c.jsonl.zst", jsonl),
        "csv": write_csv(directory / "c.csv", records),
        "csv.gz": write_csv(directory / "c.csv.gz", records, gzip.open),
        "parquet": write_parquet(directory / "c.parquet", records),
        "txt": (directory / "c.txt").write_text(text, encoding="utf-8") and directory / "c.txt",
        "txt.zst": write_zst(directory / "c.txt.zst", text),
    }
