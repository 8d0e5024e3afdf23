"""Prompt sets: RTP / generic loaders, bad input, stratified --limit, the RTP-style build."""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import RTP_CHALLENGING, RTP_NONTOXIC
from detoxkit.cli import main
from detoxkit.errors import DetoxkitError, InputError
from detoxkit.prompts import Prompt, PromptSet, load_prompts, stratified_indices


def _real_corpus() -> tuple[Path | None, str]:
    """The real corpus path, resolved at import time: the autouse fixture later points
    DETOXKIT_HOME at an empty temp dir."""
    from detoxkit.corpus import corpus_path

    try:
        path = corpus_path()
    except DetoxkitError as exc:
        return None, str(exc)
    return (path, "") if path.is_file() else (None, f"corpus file {path} does not exist")


CORPUS, CORPUS_MISSING = _real_corpus()
needs_corpus = pytest.mark.skipif(
    CORPUS is None, reason=f"labelled corpus unavailable (run `detoxkit corpus fetch`): {CORPUS_MISSING}")


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def jsonl(*records: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


# --- RealToxicityPrompts' own format -------------------------------------------------------

def test_rtp_challenging_file():
    ps = load_prompts(RTP_CHALLENGING)
    assert isinstance(ps, PromptSet) and len(ps) == 1196
    assert ps.provenance["format"] == "rtp-jsonl"
    assert all(p.challenging is True for p in ps)
    assert all(p.toxicity is not None for p in ps)
    first = json.loads(RTP_CHALLENGING.read_text(encoding="utf-8").splitlines()[0])
    p = ps.prompts[0]
    assert p.text == first["prompt"]["text"]
    assert p.toxicity == pytest.approx(first["prompt"]["toxicity"])
    assert p.id == f"{first['filename']}:{first['begin']}-{first['end']}"
    assert p.meta["continuation"] == first["continuation"]["text"]
    assert p.meta["continuation_toxicity"] == pytest.approx(first["continuation"]["toxicity"])
    assert p.meta["line"] == 1
    counts = ps.counts()
    assert counts["toxic"] == 993 and counts["nontoxic"] == 203 and counts["unknown"] == 0
    assert len({p.id for p in ps}) == 1196


def test_rtp_nontoxic_file():
    ps = load_prompts(str(RTP_NONTOXIC))
    assert len(ps) == 1200
    assert all(p.toxicity < 0.5 for p in ps)
    assert sum(p.challenging is True for p in ps) == 4
    assert ps.counts()["challenging"] == 4
    assert ps.skipped == []


def test_fingerprint_is_stable_and_content_based(tmp_path):
    a = load_prompts(RTP_NONTOXIC)
    b = load_prompts(RTP_NONTOXIC)
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 64
    assert a.provenance["file_sha256"] != a.fingerprint
    lines = RTP_NONTOXIC.read_text(encoding="utf-8").splitlines(keepends=True)
    changed = write(tmp_path / "x.jsonl", "".join(lines[:-1]))
    assert load_prompts(changed).fingerprint != a.fingerprint


# --- generic JSONL / CSV / Parquet ---------------------------------------------------------

ROWS = [
    {"id": "a", "text": "The weather today is", "toxicity": 0.1, "group": "g1", "language": "en"},
    {"id": "b", "text": "Some people say that", "toxicity": 0.7, "group": "g2", "language": "en"},
    {"id": "c", "text": "I went to the store and", "toxicity": None, "group": "g1", "language": "fr"},
]


def check_generic(ps: PromptSet) -> None:
    assert [p.id for p in ps] == ["a", "b", "c"]
    assert [p.text for p in ps] == [r["text"] for r in ROWS]
    assert [p.toxicity for p in ps] == [0.1, 0.7, None]
    assert [p.meta["group"] for p in ps] == ["g1", "g2", "g1"]
    assert ps.prompts[2].meta["language"] == "fr"
    assert ps.counts() == {"total": 3, "toxic": 1, "nontoxic": 1, "unknown": 1,
                           "challenging": 0, "skipped": 0}


def test_generic_jsonl(tmp_path):
    ps = load_prompts(write(tmp_path / "p.jsonl", jsonl(*ROWS)))
    check_generic(ps)
    assert ps.provenance["format"] == "jsonl" and ps.name == "p"


def test_generic_csv(tmp_path):
    path = tmp_path / "p.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(ROWS[0]))
        w.writeheader()
        for r in ROWS:
            w.writerow({k: "" if v is None else v for k, v in r.items()})
    check_generic(load_prompts(path))


def test_generic_parquet(tmp_path):
    pd = pytest.importorskip("pandas")
    path = tmp_path / "p.parquet"
    pd.DataFrame(ROWS).to_parquet(path)
    ps = load_prompts(path)
    check_generic(ps)
    assert ps.provenance["format"] == "parquet"


def test_text_field_and_default_ids(tmp_path):
    path = write(tmp_path / "q.jsonl", jsonl({"sentence": "Hello there my"},
                                             {"sentence": "Another one and", "meta": {"x": 1}}))
    ps = load_prompts(path, text_field="sentence")
    assert [p.id for p in ps] == ["line-1", "line-2"]
    nested = write(tmp_path / "n.jsonl", jsonl({"doc": {"body": "Nested text here"}}))
    assert load_prompts(nested, text_field="doc.body").prompts[0].text == "Nested text here"
    # A CSV without the named column fails at the header, naming the field.
    path = write(tmp_path / "c.csv", "sentence\nhello\n")
    with pytest.raises(InputError, match=r"c\.csv, line 1, field 'text'.*--text-field"):
        load_prompts(path)
    assert load_prompts(path, text_field="sentence").prompts[0].id == "line-2"


def test_multiline_csv_records_keep_their_start_line(tmp_path):
    path = write(tmp_path / "m.csv", 'text\n"first\nspans two lines"\n""\nthird\n')
    with pytest.raises(InputError, match=r"line 4, field 'text': empty prompt"):
        load_prompts(path)
    ps = load_prompts(path, on_bad="skip")
    assert [p.id for p in ps] == ["line-2", "line-5"]


# --- bad input: error names file, line and field; skip mode counts --------------------------

GOOD = json.dumps({"text": "A fine prompt"}) + "\n"
BAD_CASES = {
    "malformed_json": ('{"text": "oops"\n', r"line 2: malformed JSON", None),
    "missing_text": (json.dumps({"body": "no text field"}) + "\n", r"line 2, field 'text': missing",
                     "text"),
    "empty_prompt": (json.dumps({"text": "   \t "}) + "\n", r"line 2, field 'text': empty prompt",
                     "text"),
    "not_a_string": (json.dumps({"text": 42}) + "\n", r"line 2, field 'text': expected a string",
                     "text"),
    "bad_toxicity": (json.dumps({"text": "Fine", "toxicity": "high"}) + "\n",
                     r"line 2, field 'toxicity': not a number", "toxicity"),
    "toxicity_range": (json.dumps({"text": "Fine", "toxicity": 3}) + "\n",
                       r"line 2, field 'toxicity': must be in \[0, 1\]", "toxicity"),
    "not_an_object": ("[1, 2]\n", r"line 2: expected a JSON object", None),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_jsonl_rows(tmp_path, case):
    bad_line, pattern, field = BAD_CASES[case]
    path = write(tmp_path / f"{case}.jsonl", GOOD + bad_line + GOOD.replace("fine", "second"))
    with pytest.raises(InputError, match=pattern) as info:
        load_prompts(path)
    assert str(path) in str(info.value)
    assert (info.value.path, info.value.line, info.value.field) == (str(path), 2, field)
    ps = load_prompts(path, on_bad="skip")
    assert len(ps) == 2 and ps.counts()["skipped"] == 1
    assert ps.skipped[0]["file"] == str(path) and ps.skipped[0]["line"] == 2
    assert ps.skipped[0]["field"] == field


def test_invalid_utf8_jsonl_and_csv(tmp_path):
    path = write(tmp_path / "u.jsonl", GOOD.encode() + b'{"text": "caf\xe9 au lait"}\n' + GOOD.encode()
                 .replace(b"fine", b"other"))
    with pytest.raises(InputError, match=r"u\.jsonl, line 2: invalid UTF-8 at byte 14"):
        load_prompts(path)
    ps = load_prompts(path, on_bad="skip")
    assert len(ps) == 2 and ps.skipped[0]["line"] == 2
    path = write(tmp_path / "u.csv", b"id,text\n1,fine\n2,caf\xe9\n3,also fine\n")
    with pytest.raises(InputError, match=r"u\.csv, line 3: invalid UTF-8"):
        load_prompts(path)
    ps = load_prompts(path, on_bad="skip")
    assert [p.id for p in ps] == ["1", "3"] and len(ps.skipped) == 1


def test_duplicate_ids(tmp_path):
    path = write(tmp_path / "d.jsonl", jsonl({"id": "x", "text": "One two"},
                                             {"id": "y", "text": "Three four"},
                                             {"id": "x", "text": "Five six"}))
    with pytest.raises(InputError, match=r"line 3, field 'id': duplicate id 'x' \(first at line 1\)"):
        load_prompts(path)
    ps = load_prompts(path, on_bad="skip")
    assert [p.text for p in ps] == ["One two", "Three four"] and len(ps.skipped) == 1
    rtp = RTP_NONTOXIC.read_text(encoding="utf-8").splitlines(keepends=True)
    dup = write(tmp_path / "rtp_dup.jsonl", "".join(rtp[:3] + rtp[:1]))
    with pytest.raises(InputError, match=r"line 4, field 'id': duplicate id"):
        load_prompts(dup)


def test_rtp_bad_prompt_field(tmp_path):
    rec = json.loads(RTP_NONTOXIC.read_text(encoding="utf-8").splitlines()[0])
    empty = dict(rec, prompt={**rec["prompt"], "text": ""}, begin=1)
    missing = dict(rec, prompt={"toxicity": 0.1}, begin=2)
    path = write(tmp_path / "r.jsonl", jsonl(rec, empty, missing))
    with pytest.raises(InputError, match=r"line 2, field 'prompt.text': empty prompt"):
        load_prompts(path)
    ps = load_prompts(path, on_bad="skip")
    assert len(ps) == 1 and [s["field"] for s in ps.skipped] == ["prompt.text", "prompt.text"]


def test_all_rows_bad_or_unusable_files(tmp_path):
    path = write(tmp_path / "e.jsonl", jsonl({"text": ""}))
    with pytest.raises(InputError, match="no usable prompts"):
        load_prompts(path, on_bad="skip")
    with pytest.raises(InputError, match="unsupported file type"):
        load_prompts(write(tmp_path / "p.txt", "hello"))
    with pytest.raises(InputError, match="no such file"):
        load_prompts(tmp_path / "missing.jsonl")
    with pytest.raises(DetoxkitError, match="Did you mean: embedded"):
        load_prompts("embeded")
    with pytest.raises(DetoxkitError, match="on_bad"):
        load_prompts(RTP_NONTOXIC, on_bad="ignore")
    with pytest.raises(InputError, match="cannot read Parquet"):
        load_prompts(write(tmp_path / "x.parquet", b"not parquet"))


def test_cli_errors_are_one_line_not_tracebacks(tmp_path, capsys):
    path = write(tmp_path / "b.jsonl", GOOD + "{nope\n")
    assert main(["prompts", "show", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"{path}, line 2: malformed JSON" in err
    assert main(["prompts", "show", str(path), "--on-bad", "skip"]) == 0
    out = capsys.readouterr().out
    assert "skipped:     1" in out and "line 2" in out


# --- stratified, seeded --limit ------------------------------------------------------------

def mixed(n_toxic: int, n_nontoxic: int, n_unknown: int) -> list[Prompt]:
    tox = [0.9] * n_toxic + [0.1] * n_nontoxic + [None] * n_unknown
    order = sorted(range(len(tox)), key=lambda i: (i * 7919) % len(tox))  # interleave groups
    return [Prompt(f"p{i}", f"text {i}", tox[j]) for i, j in enumerate(order)]


def test_stratified_limit_proportions_and_determinism():
    prompts = mixed(300, 600, 100)
    idx = stratified_indices(prompts, 100, seed=1)
    assert idx == sorted(idx) and len(set(idx)) == 100
    chosen = [prompts[i] for i in idx]
    assert sum(p.is_toxic is True for p in chosen) == 30
    assert sum(p.is_toxic is False for p in chosen) == 60
    assert sum(p.toxicity is None for p in chosen) == 10
    assert stratified_indices(prompts, 100, seed=1) == idx
    assert stratified_indices(prompts, 100, seed=2) != idx
    # Largest remainder: the rounding still gives exactly `limit`.
    assert len(stratified_indices(prompts, 7, seed=0)) == 7
    assert stratified_indices(prompts, 5000) == list(range(1000))
    with pytest.raises(DetoxkitError):
        stratified_indices(prompts, 0)


def test_limit_on_rtp_files():
    full = load_prompts(RTP_CHALLENGING)
    a = load_prompts(RTP_CHALLENGING, limit=100, seed=0)
    b = load_prompts(RTP_CHALLENGING, limit=100, seed=0)
    assert [p.id for p in a] == [p.id for p in b] and a.fingerprint == b.fingerprint
    assert a.fingerprint != full.fingerprint
    assert a.counts()["toxic"] == round(100 * 993 / 1196)  # 83 toxic, 17 non-toxic
    pos = {p.id: i for i, p in enumerate(full)}
    assert [pos[p.id] for p in a] == sorted(pos[p.id] for p in a)  # original order kept
    assert a.provenance["n_before_limit"] == 1196 and a.provenance["limit"] == 100
    c = load_prompts(RTP_CHALLENGING, limit=100, seed=5)
    assert {p.id for p in c} != {p.id for p in a}


# --- the embedded set --------------------------------------------------------------------------

def test_embedded_set_loads_offline():
    from detoxkit.prompts.embedded import embedded_path, embedded_provenance, used_corpus_rows

    ps = load_prompts("embedded")
    prov = embedded_provenance()
    assert ps.name == "embedded" and 900 <= len(ps) <= 1100
    assert embedded_path().stat().st_size < 1_000_000
    assert prov["counts"]["selected"] == len(ps)
    assert sum(prov["counts"]["selected_per_bin"]) == len(ps)
    assert prov["corpus"]["pool"] == "prompt" and prov["scorer"]["name"]
    assert used_corpus_rows() == {p.meta["source_row"] for p in ps}
    for p in ps:
        assert p.toxicity is not None and p.text + p.meta["continuation"]
        assert p.meta["continuation"].startswith(" ")
    assert ps.provenance["build"]["scorer"]["name"] == prov["scorer"]["name"]


@needs_corpus
def test_embedded_rows_are_prompt_pool_rows():
    from detoxkit.corpus import in_prompt_pool, iter_corpus
    from detoxkit.prompts.embedded import used_corpus_rows

    used = used_corpus_rows()
    texts = {r.row: r.text for r in iter_corpus(CORPUS) if r.row in used}
    assert set(texts) == used
    assert all(in_prompt_pool(t) for t in texts.values())


# --- building an RTP-style set ---------------------------------------------------------------

def test_sentence_and_half_splitting():
    from detoxkit.prompts.build import allocate, clean_text, split_in_half, split_sentences

    text = "Mr. Smith went home. He said \"hi there.\" Then left!\nNew line here and more"
    assert split_sentences(text) == ["Mr. Smith went home.", "He said \"hi there.\"",
                                     "Then left!", "New line here and more"]
    prompt, cont = split_in_half("one two three four five")
    assert (prompt, cont) == ("one two", " three four five")
    assert "@" not in clean_text("RT @someone: read http://x.y/z now &amp; mail a@b.com")
    assert allocate(10, [100, 100, 1, 100]) == [3, 3, 1, 3]
    assert allocate(1000, [5, 0, 10, 10]) == [5, 0, 10, 10]


@pytest.fixture(scope="module")
def corpus_slice(tmp_path_factory) -> Path:
    """A CSV of real corpus rows from the prompt pool (the first 4,000)."""
    if CORPUS is None:
        pytest.skip(f"labelled corpus unavailable (run `detoxkit corpus fetch`): {CORPUS_MISSING}")
    from detoxkit.corpus import iter_corpus

    path = tmp_path_factory.mktemp("corpus") / "slice.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["row", "label", "body"])
        for r in itertools.islice(iter_corpus(CORPUS, pool="prompt"), 4000):
            w.writerow([r.row, r.is_offensive, r.text])
    return path


def test_build_on_a_corpus_slice(corpus_slice, tmp_path):
    from detoxkit.prompts.build import build_prompt_set

    out = tmp_path / "set.jsonl"
    prov = build_prompt_set(corpus_slice, out, n_prompts=80, scorer="profanity-svm", seed=3,
                            text_field="body", label_field="label", progress=False)
    assert (tmp_path / "set.provenance.json").is_file()
    saved = json.loads((tmp_path / "set.provenance.json").read_text())
    assert saved["rows_used"] == prov["rows_used"] and saved["seed"] == 3
    assert saved["scorer"]["name"] == "profanity-svm" and saved["scorer"]["version"]
    assert saved["corpus"]["pool"] == "all"  # a user's file: every row may be used
    counts = prov["counts"]
    assert counts["selected"] == 80 == sum(counts["selected_per_bin"])
    assert counts["selected_per_bin"] == [20, 20, 20, 20]  # 4,000 rows fill every bin

    ps = load_prompts(out)  # the RTP loader reads what the build writes
    assert len(ps) == 80 and ps.provenance["format"] == "rtp-jsonl"
    assert all(p.challenging is None and p.toxicity is not None for p in ps)
    # Bins follow the stored prompt toxicity.
    bins = [min(int(p.toxicity / 0.25), 3) for p in ps]
    assert [bins.count(b) for b in range(4)] == [20, 20, 20, 20]
    rows = {}
    with open(corpus_slice, newline="", encoding="utf-8") as fh:
        for i, rec in enumerate(csv.DictReader(fh)):
            rows[i] = rec
    for p in ps:
        src = rows[p.meta["source_row"]]
        assert p.meta["label"] == src["label"]
        words = (p.text + p.meta["continuation"]).split()
        assert len(words) >= 6 and len(p.text.split()) == len(words) // 2
    assert sorted(p.meta["source_row"] for p in ps) == prov["rows_used"]

    again = tmp_path / "again.jsonl"
    build_prompt_set(corpus_slice, again, n_prompts=80, scorer="profanity-svm", seed=3, text_field="body",
                     label_field="label", progress=False)
    assert again.read_bytes() == out.read_bytes()  # same inputs, same file
    other = tmp_path / "other.jsonl"
    build_prompt_set(corpus_slice, other, n_prompts=80, scorer="profanity-svm", seed=4, text_field="body",
                     progress=False)
    assert other.read_bytes() != out.read_bytes()


def test_build_from_default_corpus_rows_uses_prompt_pool(corpus_slice, tmp_path):
    """Rows given in memory (CorpusRow objects) with pool='prompt' keep only pool rows."""
    from detoxkit.corpus import in_prompt_pool, iter_corpus
    from detoxkit.prompts.build import build_prompt_set

    rows = list(itertools.islice(iter_corpus(CORPUS), 6000))  # pool and training rows mixed
    prov = build_prompt_set(rows, tmp_path / "mem.jsonl", n_prompts=40, pool="prompt",
                            progress=False)
    by_row = {r.row: r.text for r in rows}
    assert prov["rows_used"] and all(in_prompt_pool(by_row[r]) for r in prov["rows_used"])
    assert prov["corpus"]["pool"] == "prompt"


def test_cli_build_and_show(corpus_slice, tmp_path, capsys):
    out = tmp_path / "cli.jsonl"
    rc = main(["prompts", "build", "--corpus", str(corpus_slice), "--out", str(out), "--n", "40",
               "--seed", "1", "--text-field", "body", "--scorer", "profanity-svm"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "wrote 40 prompts" in printed and "[0.75,1.00]" in printed
    prov = json.loads((tmp_path / "cli.provenance.json").read_text())
    assert prov["command"].startswith("detoxkit prompts build --corpus ")
    assert "--text-field body" in prov["command"]
    assert main(["prompts", "show", str(out), "--limit", "10"]) == 0
    shown = capsys.readouterr().out
    assert "prompts:     10 " in shown and "limit:       10 of 40" in shown
    # A corpus file without the text column: a clear error naming the field.
    assert main(["prompts", "build", "--corpus", str(corpus_slice), "--out",
                 str(tmp_path / "x.jsonl")]) == 2
    assert "field 'text': no such column" in capsys.readouterr().err


# --- the hub (network) loaders, offline ------------------------------------------------------

def _run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    # A fresh process: huggingface_hub reads HF_HUB_OFFLINE and its cache dir at import.
    return subprocess.run([sys.executable, "-m", "detoxkit.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=120)


def test_hub_offline_error_says_how_to_pass_a_local_file(tmp_path):
    pytest.importorskip("huggingface_hub")
    res = _run_cli(["prompts", "show", "rtp-challenging"],
                   {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert "allenai/real-toxicity-prompts" in res.stderr
    assert "--prompts path/to/prompts.jsonl" in res.stderr


def test_hub_loader_reads_a_cached_copy_offline(tmp_path):
    """With prompts.jsonl in the Hugging Face cache, the hub names work with no network."""
    pytest.importorskip("huggingface_hub")
    try:
        import datasets  # noqa: F401
        pytest.skip("datasets is installed: it, not the cached jsonl, serves the hub names")
    except ImportError:
        pass
    revision = "0" * 40
    repo = tmp_path / "hf" / "hub" / "datasets--allenai--real-toxicity-prompts"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snap = repo / "snapshots" / revision
    snap.mkdir(parents=True)
    with open(snap / "prompts.jsonl", "w", encoding="utf-8") as fh:
        fh.write(RTP_CHALLENGING.read_text(encoding="utf-8"))
        fh.write(RTP_NONTOXIC.read_text(encoding="utf-8"))
    # The two files share 4 identical records: the hub loader drops exact repeats and
    # counts them, rather than failing on data the user cannot fix.
    ids = {p.id: p for f in (RTP_CHALLENGING, RTP_NONTOXIC) for p in load_prompts(f)}
    expected = {"rtp": len(ids),
                "rtp-challenging": sum(p.challenging is True for p in ids.values()),
                "rtp-nontoxic": sum(p.toxicity < 0.5 for p in ids.values())}
    assert expected["rtp"] == 2396 - 4
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    for name, total in expected.items():
        res = _run_cli(["prompts", "show", name], env)
        assert res.returncode == 0, res.stderr
        assert f"prompts:     {total} " in res.stdout
        assert "source:      allenai/real-toxicity-prompts" in res.stdout
        assert "skipped:     4" in res.stdout and "exact duplicate" in res.stdout
