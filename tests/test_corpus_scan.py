"""`detoxkit corpus scan`: every input format (compressed too), malformed input, unit splitting,
document scores from unit scores, resume after kill -9, damaged shards, the summary and the
report of a scan. Real scorers (profanity-svm; detoxkit-minilm for the agreement)."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from corpus_fixtures import rtp_records, write_all_formats, write_csv, write_jsonl, write_parquet
from detoxkit.cli import main
from detoxkit.corpus_scan.readers import Reader, detect
from detoxkit.corpus_scan.scan import ScanConfig, run_scan
from detoxkit.corpus_scan.shards import SHARDS, load_table, read_manifest
from detoxkit.corpus_scan.units import count_tokens, split_units
from detoxkit.errors import DetoxkitError, InputError

SVM = "profanity-svm"


def scan(inputs, out, **kw) -> Path:
    kw.setdefault("scorers", [SVM])
    return run_scan(ScanConfig(inputs=[str(p) for p in inputs], out=str(out), **kw))


def by_file(table, manifest) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for fi, v in zip(table.column("file").to_pylist(), table.column(f"{SVM}.max").to_pylist()):
        out.setdefault(Path(manifest["files"][fi]["path"]).name, []).append(v)
    return out


# ---- formats ------------------------------------------------------------------------------

def test_every_format_and_compression_gives_the_same_scores(tmp_path):
    records = rtp_records(30)
    write_all_formats(tmp_path / "corpus", records)
    out = scan([tmp_path / "corpus"], tmp_path / "scan", shard_docs=8)  # a directory
    manifest = read_manifest(out)
    scores = by_file(load_table(out), manifest)
    assert sorted(scores) == sorted(["c.jsonl", "c.jsonl.gz", "c.jsonl.zst", "c.csv", "c.csv.gz",
                                     "c.parquet", "c.txt", "c.txt.zst"])
    reference = np.array(scores["c.jsonl"])
    assert len(reference) == 30 and np.nanmax(reference) > 0.5 > np.nanmin(reference)
    for name, values in scores.items():
        np.testing.assert_allclose(values, reference, rtol=1e-12, err_msg=name)
    # a glob picks the same files, sorted; the compressed formats were recognised
    assert [f["compression"] for f in manifest["files"]].count("zstd") == 2
    globbed = scan([tmp_path / "corpus" / "c.*.gz"], tmp_path / "glob")
    assert [Path(f["path"]).name for f in read_manifest(globbed)["files"]] == ["c.csv.gz", "c.jsonl.gz"]


def test_pointers_lead_back_to_the_document(tmp_path):
    records = rtp_records(10)
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": "   "}] + records)  # a blank text is line 1
    out = scan([path], tmp_path / "scan")
    table = load_table(out)
    raw = path.read_bytes()
    for line, offset in zip(table.column("line").to_pylist(), table.column("offset").to_pylist()):
        record = json.loads(raw[offset:raw.index(b"\n", offset)])
        assert record == ([{"text": "   "}] + records)[line - 1]
    assert table.column("n_units").to_pylist()[0] == 0  # no units: no score, not 0
    assert table.column(f"{SVM}.max").to_pylist()[0] is None


def test_nested_text_field_and_metadata(tmp_path):
    rows = [{"prompt": {"text": r["text"]}, "domain": r["source"], "url": r["url"]}
            for r in rtp_records(12)]
    path = write_jsonl(tmp_path / "n.jsonl", rows)
    docs = list(Reader(detect(path), "prompt.text"))
    assert [d.text for d in docs] == [r["prompt"]["text"] for r in rows]
    assert {d.meta["url_host"] for d in docs} == {"news.example.org", "forum.example.com"}
    assert "prompt" not in docs[0].meta and docs[0].meta["domain"] == "challenging"


# ---- malformed input ----------------------------------------------------------------------

def _error(path, text_field="text") -> InputError:
    with pytest.raises(InputError) as info:
        list(Reader(detect(path), text_field))
    return info.value


def test_malformed_records_name_file_line_and_field(tmp_path):
    good = [json.dumps({"text": "fine"})] * 2
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text("\n".join(good + ['{"text": "torn'] + good) + "\n")
    e = _error(bad_json)
    assert (e.path, e.line, e.field) == (str(bad_json), 3, None) and "not valid JSON" in str(e)

    missing = tmp_path / "missing.jsonl.gz"
    with gzip.open(missing, "wt") as fh:
        fh.write('{"text": "a"}\n{"body": "b"}\n')
    e = _error(missing)
    assert (e.line, e.field) == (2, "text") and "missing" in str(e) and "missing.jsonl.gz" in str(e)

    wrong_type = tmp_path / "num.jsonl"
    wrong_type.write_text('{"text": 3}\n')
    assert "must be a string" in str(_error(wrong_type))

    ragged = write_csv(tmp_path / "r.csv", [{"id": "1", "text": "ok"}])
    ragged.write_text(ragged.read_text() + "2,too,many\n")
    e = _error(ragged)
    assert e.line == 3 and "3 cells, the header 2" in str(e)
    e = _error(ragged, "body")
    assert e.field == "body" and "no such column" in str(e)

    nulls = write_parquet(tmp_path / "n.parquet", [{"text": "a"}, {"text": None}])
    e = _error(nulls)
    assert e.field == "text" and "row 2" in str(e)

    truncated = tmp_path / "t.jsonl.gz"
    data = gzip.compress("".join(json.dumps({"text": r["text"]}) + "\n" for r in rtp_records(40)).encode())
    truncated.write_bytes(data[: len(data) // 2])
    assert "damaged" in str(_error(truncated))
    not_zstd = tmp_path / "x.txt.zst"
    not_zstd.write_bytes(b"plain text, not zstd\n")
    assert "x.txt.zst" in str(_error(not_zstd))
    with pytest.raises(InputError, match="unknown file type"):
        detect(tmp_path / "c.docx")


def test_skip_counts_malformed_records(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "one"}\nnot json\n{"other": 1}\n{"text": "two"}\n')
    with pytest.raises(DetoxkitError, match="line 2"):
        scan([path], tmp_path / "strict")
    out = scan([path], tmp_path / "lenient", on_bad="skip")
    assert load_table(out).column("line").to_pylist() == [1, 4]
    assert read_manifest(out)["files"][0]["bad_records"] == 2
    assert json.loads((out / "summary.json").read_text())["bad_records"] == 2


# ---- units --------------------------------------------------------------------------------

def units(text, mode="sentences", size=64):
    return [text[a:b] for a, b in split_units(text, mode, size)]


def test_sentence_units_on_hand_cases():
    assert units("Hello there. How are you? Fine!") == ["Hello there.", "How are you?", "Fine!"]
    assert units('He said "stop." Then left...  Done') == ['He said "stop."', "Then left...", "Done"]
    assert units("no end mark\nnext line\n\n  third ") == ["no end mark", "next line", "third"]
    assert units("3.14 is pi. e.g.x") == ["3.14 is pi.", "e.g.x"]  # no break without a space
    assert units("   \n ") == [] and units("") == []
    long = " ".join(f"w{i}" for i in range(10)) + ". Short."
    assert units(long, size=4) == ["w0 w1 w2 w3", "w4 w5 w6 w7", "w8 w9.", "Short."]


def test_token_window_and_doc_units():
    text = "a b  c\td e f g"
    assert units(text, "tokens", 3) == ["a b  c", "d e f", "g"]
    assert units(text, "tokens", 7) == [text]
    assert units(" one. two. ", "doc") == ["one. two."]
    assert count_tokens(text) == 7
    with pytest.raises(ValueError):
        split_units("x", "paragraphs")


def test_document_score_is_the_max_and_mean_of_its_units(tmp_path):
    from detoxkit.scorers import load_scorer

    records = rtp_records(20)
    path = write_jsonl(tmp_path / "c.jsonl", records)
    out = scan([path], tmp_path / "scan", units="tokens", unit_size=6)
    table = load_table(out)
    scorer = load_scorer(SVM)
    multi = 0
    for i, r in enumerate(records):
        parts = units(r["text"], "tokens", 6)
        expected = scorer.score(parts)["toxicity"]
        assert table.column(f"{SVM}.max")[i].as_py() == pytest.approx(expected.max(), rel=1e-9)
        assert table.column(f"{SVM}.mean")[i].as_py() == pytest.approx(expected.mean(), rel=1e-9)
        multi += expected.max() - expected.min() > 0.05
    assert multi >= 3  # max and mean differ for documents of mixed units


# ---- resume, damage, settings -------------------------------------------------------------

def _corpus(tmp_path, copies: int) -> Path:
    records = rtp_records(400)
    return write_jsonl(tmp_path / "big.jsonl", [{**r, "copy": c} for c in range(copies) for r in records])


def test_resume_after_kill_scores_nothing_twice_and_loses_nothing(tmp_path):
    corpus = _corpus(tmp_path, 12)  # 4800 documents, 96 shards
    args = [sys.executable, "-m", "detoxkit.cli", "corpus", "scan", str(corpus), "--scorer", SVM,
            "--shard-docs", "50", "--quiet", "--out"]
    out = tmp_path / "killed"
    proc = subprocess.Popen(args + [str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_at, deadline = None, time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            listed = json.loads((out / "manifest.json").read_text())["shards"]
        except (OSError, ValueError):
            listed = {}
        if len(listed) >= 5:
            proc.send_signal(signal.SIGKILL)
            killed_at = dict(listed)
            break
        time.sleep(0.02)
    proc.wait()
    assert killed_at is not None, "the scan finished before it could be killed"
    before = read_manifest(out)
    assert before["status"] == "running" and len(before["shards"]) < 96
    mtimes = {n: (out / SHARDS / n).stat().st_mtime_ns for n in before["shards"]}
    assert subprocess.run(args + [str(out)], capture_output=True).returncode == 0
    after = read_manifest(out)
    assert after["status"] == "finished" and len(after["shards"]) == 96
    for name, t in mtimes.items():  # what was listed was not scored again
        assert (out / SHARDS / name).stat().st_mtime_ns == t
        assert after["shards"][name] == before["shards"][name]
    table = load_table(out)
    assert table.num_rows == 4800 and len(set(table.column("line").to_pylist())) == 4800
    clean = scan([corpus], tmp_path / "clean", shard_docs=50)
    assert table.equals(load_table(clean))


def test_a_damaged_shard_is_redone_and_the_others_kept(tmp_path):
    corpus = _corpus(tmp_path, 1)
    out = scan([corpus], tmp_path / "scan", shard_docs=100)
    reference = load_table(out)
    names = sorted(read_manifest(out)["shards"])
    mtimes = {n: (out / SHARDS / n).stat().st_mtime_ns for n in names}
    victim = out / SHARDS / names[1]
    victim.write_bytes(victim.read_bytes()[:-40] + b"\0" * 40)
    with pytest.raises(DetoxkitError, match=f"{names[1]}.*SHA-256"):
        load_table(out)
    (out / SHARDS / names[2]).unlink()
    scan([corpus], tmp_path / "scan", shard_docs=100)
    assert load_table(out).equals(reference)
    for n in names:
        changed = (out / SHARDS / n).stat().st_mtime_ns != mtimes.get(n)
        assert changed == (n in names[1:3]), n


def test_other_settings_or_a_changed_input_are_refused(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", rtp_records(10))
    scan([path], tmp_path / "scan")
    with pytest.raises(DetoxkitError, match="units"):
        scan([path], tmp_path / "scan", units="doc")
    write_jsonl(path, rtp_records(12))
    with pytest.raises(DetoxkitError, match="inputs"):
        scan([path], tmp_path / "scan")


# ---- summary and report -------------------------------------------------------------------

@pytest.mark.slow
def test_summary_breakdowns_agreement_and_report(tmp_path, capsys):
    path = write_jsonl(tmp_path / "c.jsonl", rtp_records(60))
    out = tmp_path / "scan"
    assert main(["corpus", "scan", str(path), "--scorer", SVM, "--scorer", "detoxkit-minilm",
                 "--out", str(out), "--shard-docs", "16"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["n_docs"] == 60
    tox = s["by_field"]["source"]
    for key in (SVM, "detoxkit-minilm"):
        assert tox["challenging"][key]["toxic_fraction"] > tox["nontoxic"][key]["toxic_fraction"] + 0.3
        lo, hi = s["by_scorer"][key]["toxic_fraction_ci"]
        assert lo < s["by_scorer"][key]["toxic_fraction"] < hi
        assert sum(s["by_scorer"][key]["histogram"]["doc_max"]) == 60
    assert set(s["by_field"]["url_host"]) == {"news.example.org", "forum.example.com"}
    langs = load_table(out).column("language").to_pylist()  # detoxkit.lang (py3langid, offline)
    assert langs.count("en") >= 55 and "detoxkit.lang" in s["language_breakdown"]
    (pair,) = s["agreement"]
    assert pair["spearman"] > 0.4 and pair["auc_b_on_a_labels"] > 0.75
    top = s["most_toxic"][SVM][0]
    assert top["score"] == max(v for v in load_table(out).column(f"{SVM}.max").to_pylist())
    capsys.readouterr()

    assert main(["report", str(out), "--markdown"]) == 0
    md = capsys.readouterr().out
    assert "agreement of the scorers" in md and "c.jsonl:line" in md
    text = rtp_records(60)[top["line"] - 1]["text"]
    worst = text[top["unit"][0]:top["unit"][1]]
    assert worst[:30] not in md  # pointers only outside the HTML page
    assert main(["report", str(out), "--html", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    from detoxkit.report.escaping import esc

    assert esc(" ".join(worst.split())[:30]) in html and "Content-Security-Policy" in html
    assert "by source" in capsys.readouterr().out


def test_the_local_scan_does_not_import_ray(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", rtp_records(6))
    code = ("import sys; from detoxkit.cli import main; "
            f"assert main(['corpus', 'scan', {str(path)!r}, '--scorer', 'profanity-svm', '--quiet', "
            f"'--out', {str(tmp_path / 's')!r}]) == 0; print('ray' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
