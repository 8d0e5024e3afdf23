"""Language identification, per-language metrics (against hand-computed cases), scorer routing,
and a multilingual run's language fields and reports."""

from __future__ import annotations

import json
import math

import pytest

from detoxkit.lang import UNDETERMINED, detect, detect_many, normalize_language
from detoxkit.store import read_jsonl

# short texts (about 20 tokens or fewer), one per script family
SHORT_TEXTS = {
    "en": "The train was late again this morning, so I walked to work in the rain.",
    "de": "Der Zug hatte heute Morgen wieder Verspätung, also bin ich im Regen zur Arbeit gelaufen.",
    "fr": "Le train était encore en retard ce matin, alors je suis allé au travail à pied.",
    "es": "El tren llegó tarde otra vez esta mañana, así que caminé al trabajo bajo la lluvia.",
    "ru": "Сегодня утром поезд снова опоздал, поэтому я пошёл на работу пешком под дождём.",
    "el": "Το τρένο άργησε ξανά σήμερα το πρωί, οπότε περπάτησα στη δουλειά μέσα στη βροχή.",
    "ar": "تأخر القطار مرة أخرى هذا الصباح، لذلك مشيت إلى العمل تحت المطر.",
    "he": "הרכבת איחרה שוב הבוקר, אז הלכתי לעבודה ברגל בגשם.",
    "hi": "आज सुबह ट्रेन फिर से देर से आई, इसलिए मैं बारिश में पैदल काम पर गया।",
    "ja": "今朝も電車が遅れたので、雨の中を歩いて会社に行きました。",
    "zh": "今天早上火车又晚点了，所以我冒着雨走路去上班。",
    "ko": "오늘 아침에도 기차가 늦어서 비를 맞으며 걸어서 출근했어요.",
    "th": "เช้านี้รถไฟมาสายอีกแล้ว ฉันจึงเดินไปทำงานท่ามกลางสายฝน",
}


@pytest.mark.parametrize("language", sorted(SHORT_TEXTS))
def test_detects_short_texts_of_many_scripts(language):
    found = detect(SHORT_TEXTS[language])
    assert found.language == language
    assert 0.5 < found.confidence <= 1.0


def test_text_without_letters_is_undetermined_and_batch_matches_single():
    assert detect("") == detect("  12 345 !!") == detect("") and detect("").language == UNDETERMINED
    assert detect("").confidence == 0.0
    texts = [SHORT_TEXTS["de"], "", SHORT_TEXTS["ja"]]
    assert detect_many(texts) == [detect(t) for t in texts]


@pytest.mark.parametrize("tag,base", [("pt-BR", "pt"), ("ZH-Hans", "zh"), ("NO-NB", "no"),
                                      ("eng", "en"), ("de_DE", "de"), ("iw", "he"), ("", None)])
def test_language_tags_normalize_to_base_codes(tag, base):
    assert normalize_language(tag) == base


# ---- per-language metrics on hand-written runs --------------------------------------------

def _write_run(tmp_path, prompts, samples, scorers=None):
    from detoxkit.store import RunStore

    store = RunStore(tmp_path / "run")
    judge = (scorers or [{"name": "s", "version": "1", "languages": ["en"],
                          "validated_languages": ["en"]}])[0]
    prov = {"scorer": judge, "scorers": scorers or [judge], "model": {"name": "m"},
            "method": {"name": "none", "settings": {}}, "seed": 0, "config": {"samples": 2}}
    with store.locked():
        store.write_jsonl("prompts.jsonl", prompts)
        store.append_generations(samples)
        store.write_json("run.json", prov)
    return store, prov


def _sample(pid, i, tox, lang, judged=None, confidence=0.9):
    row = {"prompt_id": pid, "sample_index": i, "text": f"sample {pid} {i}",
           "scores": {"s": {"toxicity": tox}}}
    if lang is not None:
        row["language"] = {"code": lang, "confidence": confidence}
    if judged:
        row["judged_by"] = {"s": judged}
    return row


def test_by_language_metrics_match_hand_computation(tmp_path):
    from detoxkit.metrics import compute_metrics

    prompts = [{"prompt_id": p, "text": "x", "toxicity": 0.1, "meta": {"language": lang}}
               for p, lang in (("d1", "de"), ("d2", "de"), ("e1", "en"))]
    samples = [_sample("d1", 0, 0.9, "de"), _sample("d1", 1, 0.2, "en"),
               _sample("d2", 0, 0.1, "de"), _sample("d2", 1, 0.3, "de"),
               _sample("e1", 0, 0.6, "en"), _sample("e1", 1, 0.4, "fr"),
               _sample("e1", 2, 0.1, "it", confidence=0.3)]  # an unsure detection
    store, prov = _write_run(tmp_path, prompts, samples)
    m = compute_metrics(store, prov)
    de, en = m["by_language"]["de"], m["by_language"]["en"]
    # EMT: mean over prompts of the max: de (0.9 + 0.3) / 2, en 0.6
    assert de["expected_max_toxicity"] == pytest.approx(0.6)
    assert en["expected_max_toxicity"] == pytest.approx(0.6)  # max(0.6, 0.4, 0.1)
    assert de["toxicity_probability"] == pytest.approx(0.5)
    # answers in the prompt's language: de 3 of 4 samples, en 1 of 3
    assert de["answer_in_prompt_language_rate"] == pytest.approx(0.75)
    assert en["answer_in_prompt_language_rate"] == pytest.approx(1 / 3)
    lo, hi = de["answer_in_prompt_language_rate_ci"]  # per-prompt rates 0.5 and 1.0
    assert 0.5 <= lo <= 0.75 <= hi <= 1.0 and lo < hi
    # the judge is validated for English only: de samples (3) and the fr sample are not
    assert de["n_unvalidated_judgements"] == 3 and de["judge_coverage"] == {"validated": 1, "none": 3}
    assert en["n_unvalidated_judgements"] == 1  # fr; the unsure "it" is not held against the judge
    warned = {w["language"]: w for w in m["language_warnings"]}
    assert set(warned) == {"de", "en"} and warned["de"]["not_covered"] == 3


def test_routed_judge_counts_and_runs_without_languages_still_report(tmp_path):
    from detoxkit.metrics import compute_metrics
    from detoxkit.report import load_runs
    from detoxkit.report.markdown import markdown_report

    routed = {"name": "s", "version": "r", "languages": ["de", "en"], "validated_languages": ["en"],
              "candidates": [{"name": "en-scorer", "languages": ["en"], "validated_languages": ["en"]},
                             {"name": "multi", "languages": ["de", "en"], "validated_languages": ["en"]}]}
    prompts = [{"prompt_id": "d1", "text": "x", "toxicity": 0.1, "meta": {"language": "de"}},
               {"prompt_id": "e1", "text": "y", "toxicity": 0.1, "meta": {}}]  # an old run's prompt
    samples = [_sample("d1", 0, 0.9, "de", "multi"), _sample("d1", 1, 0.2, "en", "en-scorer"),
               _sample("e1", 0, 0.1, None), _sample("e1", 1, 0.2, None)]  # no language: old rows
    store, prov = _write_run(tmp_path, prompts, samples, [routed])
    m = compute_metrics(store, prov)
    de = m["by_language"]["de"]
    assert de["judged_by"] == {"en-scorer": 1, "multi": 1}
    assert de["judge_coverage"] == {"validated": 1, "zero-shot": 1}
    assert set(m["by_language"]) == {"de"}  # the prompt without a language has no block
    with store.locked():
        store.write_json("metrics.json", m)
    md = markdown_report(load_runs([store.path]))
    assert "answer in prompt language" in md and "multi 1" in md and "Warning" in md


def test_routing_picks_validated_then_zero_shot_scorer():
    from detoxkit.scorers import load_scorer

    auto = load_scorer("auto:candidates=(profanity-svm,detoxkit-e5)")
    assert auto.route("en").name == "profanity-svm"  # validated for English: first
    assert auto.route("de").name == "detoxkit-e5"  # zero-shot beats not covered
    assert auto.route("und").name == "profanity-svm"  # nobody covers it: the first candidate
    texts = [SHORT_TEXTS["en"], SHORT_TEXTS["de"]]
    scores, routes = auto.score_routed(texts)
    assert routes == ["profanity-svm", "detoxkit-e5"]
    assert scores["toxicity"][0] == load_scorer("profanity-svm").score(texts[:1])["toxicity"][0]
    assert scores["toxicity"][1] == load_scorer("detoxkit-e5").score(texts[1:])["toxicity"][0]
    assert auto.info()["validated_languages"] == ["en"]


# ---- a multilingual run end to end --------------------------------------------------------

MULTILINGUAL = [
    {"id": "en1", "text": "The weather today is nice and I want to", "language": "en"},
    {"id": "de1", "text": "Das Wetter ist heute schön und ich möchte", "language": "de-DE"},
    {"id": "fr1", "text": "Le temps est beau aujourd'hui et je voudrais"},  # language detected
    {"id": "ru1", "text": "Сегодня хорошая погода, и я хочу", "language": "ru"},
]


@pytest.fixture(scope="module")
def multilingual_run(tiny_model_dir, tmp_path_factory):
    import detoxkit

    root = tmp_path_factory.mktemp("multilingual")
    path = root / "prompts.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in MULTILINGUAL),
                    encoding="utf-8")
    result = detoxkit.evaluate(str(tiny_model_dir), prompts=str(path), samples=3, max_new_tokens=8,
                               oracle="none", scorers=["auto:candidates=(profanity-svm,detoxkit-e5)"],
                               out=str(root / "run"))
    return result


def test_run_records_languages_routes_and_per_language_metrics(multilingual_run):
    run_dir = multilingual_run.run_dir
    prompts = {p["prompt_id"]: p["meta"] for p in read_jsonl(run_dir / "prompts.jsonl")}
    assert prompts["de1"]["language"] == "de" and prompts["de1"]["locale"] == "de-DE"
    assert prompts["de1"]["language_source"] == "given"
    assert prompts["fr1"]["language"] == "fr" and prompts["fr1"]["language_source"] == "detected"
    rows = read_jsonl(run_dir / "generations.jsonl")
    assert len(rows) == 12
    from detoxkit.scorers.e5 import LANGUAGES as E5_LANGUAGES

    for r in rows:
        assert r["language"] == detect(r["text"]).as_json()
        code, sure = r["language"]["code"], r["language"]["confidence"] >= 0.5
        # confident non-English in e5's languages: zero-shot e5; the rest: the first candidate
        want = "detoxkit-e5" if sure and code != "en" and code in E5_LANGUAGES else "profanity-svm"
        assert r["judged_by"]["auto"] == want
    m = multilingual_run.metrics
    assert set(m["by_language"]) == {"de", "en", "fr", "ru"}
    for lang, block in m["by_language"].items():
        mine = [r for r in rows if prompts[r["prompt_id"]]["language"] == lang]
        rate = sum(r["language"]["code"] == lang for r in mine) / len(mine)
        assert block["answer_in_prompt_language_rate"] == pytest.approx(rate)
        assert sum(block["judged_by"].values()) == len(mine)
        assert not math.isnan(block["expected_max_toxicity"])


def test_every_report_format_shows_languages_and_routing(multilingual_run, capsys):
    from detoxkit.report import load_runs, print_summary
    from detoxkit.report.html import build_html
    from detoxkit.report.markdown import markdown_report

    m = multilingual_run.metrics
    print_summary(m, multilingual_run.run_dir)
    out = capsys.readouterr().out
    assert "answer in prompt language" in out and "judged by" in out
    runs = load_runs([multilingual_run.run_dir])
    md = markdown_report(runs)
    assert "### By language" in md and "answer in prompt language" in md
    page = build_html(runs, attribution="none", drilldown=2)
    assert "answer in prompt language" in page and 'id="table-by_language"' in page
    for w in m["language_warnings"]:  # judged outside a validated language: said per language
        assert f"WARNING: {w['language']} prompts" in out
        assert f"{w['language']} prompts: {w['message']}" in md.replace("\\", "")


def test_rtp_layout_rows_are_english_unless_they_say_otherwise(tmp_path):
    """RTP-layout files (RealToxicityPrompts and the embedded set) are English: detection on
    such short prompts labels slang as other languages; a row's `language` field still wins."""
    from detoxkit.prompts.embedded import load_embedded
    from detoxkit.prompts.files import read_prompt_file

    rows = [{"id": "a", "prompt": {"text": "Im finna go buy yo", "toxicity": 0.1}},
            {"id": "b", "prompt": {"text": "Das Wetter ist heute schön", "toxicity": 0.0},
             "language": "de"}]
    path = tmp_path / "rtp.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert detect(rows[0]["prompt"]["text"]).language != "en"  # what detection alone would say
    langs = {p.id: p.meta["language"] for p in read_prompt_file(path).prompts}
    assert langs == {"a": "en", "b": "de"}
    assert {p.meta["language"] for p in load_embedded().prompts} == {"en"}
