"""PolygloToxicityPrompts and RTP-LX read from local files in exactly their formats (PTP's
Parquet configs, RTP-LX's per-locale JSON-lines files), their malformed rows, the offline
errors of the by-name sets, and `prompts build` on a non-English labelled corpus."""

from __future__ import annotations

import json
import socket

import pytest

from detoxkit.errors import DetoxkitError, InputError
from detoxkit.prompts import load_prompts


def _perspective(value: float) -> dict:
    score = {"type": "PROBABILITY", "value": value}
    return {"attributeScores": {
        "TOXICITY": {"spanScores": [{"begin": 0, "end": 20, "score": score}], "summaryScore": score},
        "INSULT": {"spanScores": [{"begin": 0, "end": 20, "score": score}],
                   "summaryScore": {"type": "PROBABILITY", "value": value / 2}}}}


PTP_DE = [  # the ptp-<lang> configs: the document, its metadata and scores, the prompt split off it
    {"text": "Das Wetter ist heute schön und wir gehen später im Park spazieren.",
     "meta_data": {"data_category": "web", "lang": "de", "pile_set_name": None,
                   "timestamp": "2019-10-15T04:30:21Z", "url": "https://example.org/a"},
     "perspective": _perspective(0.12), "toxicity": 0.12, "toxicity_bucket": 0.0,
     "prompt": "Das Wetter ist heute schön und wir gehen",
     "continuation": " später im Park spazieren."},
    {"text": "Mein Nachbar hat schon wieder die ganze Nacht laute Musik gehört.",
     "meta_data": {"data_category": "web", "lang": "de", "pile_set_name": None,
                   "timestamp": "2019-10-16T04:30:21Z", "url": "https://example.org/b"},
     "perspective": _perspective(0.71), "toxicity": 0.71, "toxicity_bucket": 0.75,
     "prompt": "Mein Nachbar hat schon wieder die ganze", "continuation": " Nacht laute Musik gehört."},
]
WILDCHAT_FR = [{"index": 7.0, "prompt": "Peux-tu m'écrire un petit poème sur la mer ?",
                "prompt_perspective": _perspective(0.04)}]


def _parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture
def ptp_dir(tmp_path):
    _parquet(tmp_path / "ptp" / "ptp-de" / "small-00000-of-00001.parquet", PTP_DE)
    _parquet(tmp_path / "ptp" / "wildchat-fr" / "wildchat-00000-of-00001-1a2b3c.parquet", WILDCHAT_FR)
    return tmp_path / "ptp"


def _rtplx_row(index, prompt, toxicity, insult=1, locale="DE"):
    return {"Index": index, "Locale": locale, "Prompt": prompt, "PromptAnnotations": {
        "Toxicity": toxicity, "IdentityAttack": 1, "Bias": 1, "Microaggression": 1, "Violence": 1,
        "SelfHarm": 1, "Insult": insult, "SexualContent": 1}}


def _rtplx(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n"
                            for r in rows), encoding="utf-8")
    return path


def test_ptp_file_maps_prompt_language_toxicity_and_labels(ptp_dir):
    ps = load_prompts(str(ptp_dir / "ptp-de" / "small-00000-of-00001.parquet"))
    assert [p.id for p in ps] == ["ptp-small-de-0", "ptp-small-de-1"]
    first = ps.prompts[0]
    assert first.text == PTP_DE[0]["prompt"]  # the prompt, not the whole document in `text`
    assert first.toxicity == pytest.approx(0.12) and ps.prompts[1].is_toxic
    assert first.meta["language"] == "de" and first.meta["continuation"] == " später im Park spazieren."
    assert first.meta["labels"] == {"toxicity": pytest.approx(0.12), "insult": pytest.approx(0.06)}
    assert ps.provenance["format"] == "ptp-small"


def test_ptp_by_name_from_a_downloaded_folder(ptp_dir):
    small = load_prompts(f"ptp-small:dir={ptp_dir},languages=(de)")
    assert [p.meta["language"] for p in small] == ["de", "de"]
    wild = load_prompts(f"ptp-wildchat:fr,dir={ptp_dir}")
    (p,) = wild.prompts
    assert p.id == "ptp-wildchat-fr-7" and p.meta["language"] == "fr"  # from the folder name
    assert p.toxicity == pytest.approx(0.04)  # Perspective's score of the prompt itself
    with pytest.raises(InputError, match="no ptp-<lang>/full"):
        load_prompts(f"ptp-full:dir={ptp_dir}")
    with pytest.raises(DetoxkitError, match="has no language xx"):
        load_prompts(f"ptp-small:dir={ptp_dir},languages=(xx)")
    with pytest.raises(DetoxkitError, match="has no setting colour"):
        load_prompts("ptp-small:colour=red")


def test_ptp_malformed_rows_name_file_row_and_field(tmp_path):
    rows = [dict(PTP_DE[0]), dict(PTP_DE[1], prompt=None), dict(PTP_DE[1], prompt="Gut", toxicity=3.0)]
    path = _parquet(tmp_path / "ptp-de" / "small-00000-of-00001.parquet", rows)
    with pytest.raises(InputError) as exc:
        load_prompts(str(path))
    assert str(path) in str(exc.value) and "row 1" in str(exc.value) and "'prompt'" in str(exc.value)
    ps = load_prompts(str(path), on_bad="skip")
    assert len(ps) == 1 and [s["field"] for s in ps.skipped] == ["prompt", "toxicity"]
    assert "must be in [0, 1]" in ps.skipped[1]["reason"]


def test_rtplx_file_maps_prompt_locale_labels(tmp_path):
    path = _rtplx(tmp_path / "RTP-LX" / "RTP_LX_PT-BR.json", [
        _rtplx_row(1, "Ontem eu vi no parque como", 1, locale="PT-BR"),
        _rtplx_row(2, "Ele disse ao colega que", 4, insult=3, locale="PT-BR")])
    ps = load_prompts(str(path))
    assert [p.id for p in ps] == ["rtplx-PT-BR-1", "rtplx-PT-BR-2"]
    low, high = ps.prompts
    assert low.toxicity == 0.0 and high.toxicity == pytest.approx(0.75)  # (t - 1) / 4
    assert high.meta["language"] == "pt" and high.meta["locale"] == "PT-BR"
    assert high.meta["labels"]["Insult"] == 3 and high.meta["labels"]["Toxicity"] == 4
    both = load_prompts(f"rtp-lx:dir={path.parent},languages=(pt-br)")
    assert [p.id for p in both] == [p.id for p in ps]


def test_rtplx_malformed_rows_name_file_line_and_field(tmp_path):
    path = _rtplx(tmp_path / "RTP_LX_DE.json", [
        _rtplx_row(1, "Ich habe gestern im Park gesehen, wie", 2),
        '{"Index": 2, "Prompt": "kaputt"',  # truncated JSON
        _rtplx_row(3, "Er sagte zu seinem Kollegen, dass", 7),  # Toxicity is 1..5
        {"Index": 4, "Prompt": "Sie fragte, ob"},  # no labels
        _rtplx_row(5, "   ", 1)])
    with pytest.raises(InputError) as exc:
        load_prompts(str(path))
    assert str(exc.value).startswith(f"{path}, line 2: malformed JSON")
    ps = load_prompts(str(path), on_bad="skip")
    assert [p.id for p in ps] == ["rtplx-DE-1"]
    assert [(s["line"], s["field"]) for s in ps.skipped] == [
        (2, None), (3, "PromptAnnotations.Toxicity"), (4, "PromptAnnotations"), (5, "Prompt")]
    assert "expected a label from 1 to 5, got 7" in ps.skipped[1]["reason"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_by_name_without_network_says_how_to_pass_the_files(monkeypatch, tmp_path):
    monkeypatch.setenv("DETOXKIT_RTPLX_URL", f"http://127.0.0.1:{_closed_port()}/RTP_LX_{{}}.json")
    with pytest.raises(DetoxkitError) as exc:
        load_prompts("rtp-lx:languages=DE")
    assert "rtp-lx:dir=PATH" in str(exc.value) and "RTP_LX_DE.json" in str(exc.value)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DetoxkitError) as exc:
        load_prompts("ptp-small:de")
    assert "ptp-small:dir=PATH" in str(exc.value) and "small-00000-of-00001.parquet" in str(exc.value)


def test_ls_prompts_names_the_multilingual_sets(capsys):
    from detoxkit.cli import main

    assert main(["ls", "prompts"]) == 0
    out = capsys.readouterr().out
    for name in ("ptp-full", "ptp-small", "ptp-wildchat", "rtp-lx"):
        assert name in out


GERMAN_CORPUS = [  # label, text: everyday German comments (0) and rude ones (1)
    (0, "Ich finde, dass der neue Bahnhof wirklich schön geworden ist. Die Bänke sind bequem."),
    (0, "Wir haben am Wochenende einen langen Ausflug in die Berge gemacht und viel gesehen."),
    (0, "Meine Großmutter backt jeden Sonntag einen Kuchen für die ganze Familie zusammen."),
    (0, "Der Bus kam heute pünktlich, und der Fahrer hat alle Fahrgäste freundlich begrüßt."),
    (0, "Im Garten blühen jetzt die Rosen, und die Bienen fliegen von Blüte zu Blüte herum."),
    (0, "Kannst du mir bitte sagen, wann die Bibliothek morgen früh wieder geöffnet wird?"),
    (1, "Du bist so ein dummer Idiot, halt endlich deine verdammte Klappe und verschwinde hier."),
    (1, "Dieser Schiedsrichter ist ein blinder Vollidiot und sollte sofort rausgeworfen werden."),
    (1, "Was für ein erbärmlicher Versager du bist, niemand will deinen Mist hier lesen."),
    (1, "Halt die Fresse, du widerlicher Penner, deine Meinung interessiert hier keinen Menschen."),
]


def test_prompts_build_from_a_german_labelled_corpus(tmp_path, capsys):
    import csv

    from detoxkit.cli import main

    corpus = tmp_path / "kommentare.csv"
    with open(corpus, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["label", "text"])
        writer.writerows(GERMAN_CORPUS)
    out = tmp_path / "de_prompts.jsonl"
    assert main(["prompts", "build", "--corpus", str(corpus), "--label-field", "label",
                 "--language", "de", "--scorer", "detoxkit-e5", "--n", "6", "--out", str(out)]) == 0
    assert "wrote 6 prompts" in capsys.readouterr().out
    ps = load_prompts(str(out))
    assert len(ps) == 6 and {p.meta["language"] for p in ps} == {"de"}
    labels = {p.meta["label"] for p in ps}
    assert labels <= {"0", "1"}
    for p in ps:  # each prompt is the first half of a sentence of its corpus row
        row = GERMAN_CORPUS[p.meta["source_row"]][1]
        assert row.startswith(p.text) or p.text in row
    prov = json.loads((tmp_path / "de_prompts.provenance.json").read_text())
    assert prov["language"] == "de" and prov["scorer"]["name"] == "detoxkit-e5"
