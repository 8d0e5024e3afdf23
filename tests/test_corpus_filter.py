"""`detoxkit corpus filter`: what it keeps and removes (by document and by unit), its counts,
its output formats, and that `detoxkit train dapt --data` trains on what it kept."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest

from corpus_fixtures import rtp_records, write_csv, write_jsonl, write_parquet
from detoxkit.cli import main
from detoxkit.corpus_scan.filter import filter_scan
from detoxkit.corpus_scan.scan import ScanConfig, run_scan
from detoxkit.corpus_scan.shards import load_table
from detoxkit.corpus_scan.units import count_tokens, split_units
from detoxkit.errors import DetoxkitError
from detoxkit.training.lm_data import read_text_file

SVM = "profanity-svm"
T = 0.5


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    d = tmp_path_factory.mktemp("filter")
    records = rtp_records(80)
    path = write_jsonl(d / "c.jsonl", records)
    out = run_scan(ScanConfig(inputs=[str(path)], scorers=[SVM], out=str(d / "scan"), shard_docs=30))
    return records, out


def test_by_doc_keeps_exactly_the_documents_at_or_below_the_threshold(scanned, tmp_path):
    records, out = scanned
    table = load_table(out)
    scores = dict(zip(table.column("line").to_pylist(), table.column(f"{SVM}.max").to_pylist()))
    r = filter_scan(out, T, out=tmp_path / "f")
    kept = [json.loads(x) for x in open(tmp_path / "f" / "kept" / "c.jsonl", encoding="utf-8")]
    removed = [json.loads(x) for x in open(tmp_path / "f" / "removed" / "c.jsonl", encoding="utf-8")]
    expect_kept = [rec for line, rec in enumerate(records, 1) if scores[line] <= T]
    assert kept == expect_kept  # whole records, every field kept, in order
    assert len(removed) == len(records) - len(kept) and 10 < len(kept) < 70
    assert all(scores[records.index(rec) + 1] > T for rec in removed)
    assert r["kept"] == {"docs": len(kept), "tokens": sum(count_tokens(x["text"]) for x in kept)}
    assert r["removed"]["tokens"] + r["kept"]["tokens"] == sum(table.column("n_tokens").to_pylist())
    saved = json.loads((tmp_path / "f" / "filter.json").read_text())
    assert saved["kept"] == r["kept"] and saved["removed"] == r["removed"]
    assert any(line.startswith("train on it: detoxkit train dapt --data") for line in r["lines"])


def test_by_unit_cuts_the_toxic_units_only(scanned, tmp_path):
    from detoxkit.scorers import load_scorer

    records, out = scanned
    r = filter_scan(out, T, by="unit", out=tmp_path / "u", fmt="jsonl")
    kept = read_text_file(tmp_path / "u" / "kept.jsonl").texts  # what dapt reads
    removed = [json.loads(x) for x in open(tmp_path / "u" / "removed.jsonl", encoding="utf-8")]
    table = load_table(out)
    assert r["partly_removed_docs"] > 0
    assert r["kept"]["tokens"] + r["removed"]["tokens"] == sum(table.column("n_tokens").to_pylist())
    assert len(kept) == r["kept"]["docs"] and len(removed) == r["removed"]["docs"]
    # every kept unit scores at most T, every removed one above it (units scored one by one)
    scorer = load_scorer(SVM)
    for texts, ok in ((kept, lambda v: v <= T), ([x["text"] for x in removed], lambda v: v > T)):
        for text in texts[:20]:
            unit_texts = [text[a:b] for a, b in split_units(text)]
            assert all(ok(v) for v in scorer.score(unit_texts)["toxicity"]), text[:40]
    by_doc = filter_scan(out, T, out=tmp_path / "d")
    assert r["kept"]["tokens"] > by_doc["kept"]["tokens"]  # cutting units keeps more text


@pytest.mark.parametrize("kind", ["csv.gz", "parquet", "txt"])
def test_output_keeps_the_input_format(tmp_path, kind):
    records = rtp_records(30)
    if kind == "csv.gz":
        path = write_csv(tmp_path / "c.csv.gz", records, gzip.open)
    elif kind == "parquet":
        path = write_parquet(tmp_path / "c.parquet", records)
    else:
        path = tmp_path / "c.txt"
        path.write_text("".join(r["text"] + "\n" for r in records), encoding="utf-8")
    out = run_scan(ScanConfig(inputs=[str(path)], scorers=[SVM], out=str(tmp_path / "scan")))
    r = filter_scan(out, T, out=tmp_path / "f")
    kept = tmp_path / "f" / "kept" / path.name
    if kind == "csv.gz":
        with gzip.open(kept, "rt", encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert rows and list(rows[0]) == list(records[0])
    elif kind == "parquet":
        import pyarrow.parquet as pq

        t = pq.read_table(kept)
        rows = t.to_pylist()
        assert t.schema.names == list(records[0])
    else:
        rows = read_text_file(kept).texts
    assert len(rows) == r["kept"]["docs"] and 0 < len(rows) < 30


def test_refusals(scanned, tmp_path):
    _, out = scanned
    with pytest.raises(DetoxkitError, match="did not score"):
        filter_scan(out, T, scorer="detoxkit-minilm")
    with pytest.raises(DetoxkitError, match="not a corpus scan"):
        filter_scan(tmp_path, T)


def test_dapt_trains_on_the_filtered_corpus(scanned, tmp_path, tiny_model_dir, capsys):
    _, out = scanned
    assert main(["corpus", "filter", str(out), "--max-toxicity", str(T), "--out",
                 str(tmp_path / "f")]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("train on it:"))
    data = line.split("--data ")[1].strip()
    assert Path(data) == tmp_path / "f" / "kept" / "c.jsonl"
    assert main(["train", "dapt", "--model", str(tiny_model_dir), "--data", data, "--steps", "2",
                 "--seq-len", "16", "--batch", "2", "--threads", "1",
                 "--out", str(tmp_path / "dapt")]) == 0
    meta = json.loads(next((tmp_path / "dapt").glob("detoxkit.json")).read_text())
    assert meta["data"]["source"] == str(Path(data).resolve())
