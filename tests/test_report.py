"""Reports without a browser: Markdown, the compare leaderboard, comparability warnings,
attribution, and the HTML page's self-containment and escaping."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from report_fixtures import HOSTILE, HOSTILE_LABEL, synthetic_run


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report-runs")
    synthetic_run(root / "alpha", seed=0, hostile=False)
    synthetic_run(root / "beta", seed=1, hostile=False,
                  extra_metrics={"overhead": {"tokens_per_s": 123.4, "relative_time": 1.7},
                                 "method_stats": {"steps": 80, "open_rate": 0.25,
                                                  "open_by_step": {"1": 3, "2": 5}}})
    synthetic_run(root / HOSTILE_LABEL, seed=2, guided_by=("profanity-svm",))
    synthetic_run(root / "other-judge", seed=3, hostile=False, judge_version="0-test")
    return root


def test_public_names_still_import():
    from detoxkit.report import comparison_rows, method_label, print_summary, table  # noqa: F401


def test_compare_sorts_by_metric(runs_dir, capsys):
    from detoxkit.cli import main
    from detoxkit.report import leaderboard, load_runs

    runs = load_runs([runs_dir / "alpha", runs_dir / "beta"])
    header, rows, key = leaderboard(runs, "ppl")
    assert key == "perplexity"
    ppl = {r.label: r.metrics["perplexity"] for r in runs}
    assert [row[1] for row in rows] == sorted(ppl, key=ppl.get)  # lower is better: ascending
    _, rows, key = leaderboard(runs, "dist-2")
    d2 = {r.label: r.metrics["distinct_2"] for r in runs}
    assert key == "distinct_2"
    assert [row[1] for row in rows] == sorted(d2, key=d2.get, reverse=True)  # higher first
    _, rows, _ = leaderboard(runs, "emt", descending=True)
    emt = {r.label: r.metrics["expected_max_toxicity"] for r in runs}
    assert [row[1] for row in rows] == sorted(emt, key=emt.get, reverse=True)
    _, rows, key = leaderboard(runs, "overhead.tokens_per_s")  # a key a method records
    assert key == "overhead.tokens_per_s" and rows[0][1] == "beta"
    _, rows, _ = leaderboard(runs, "tp", split="toxic")
    assert len(rows) == 2

    assert main(["compare", str(runs_dir / "alpha"), str(runs_dir / "beta"), "--sort", "ppl"]) == 0
    out = capsys.readouterr().out
    assert "PPL (sorted)" in out and out.index("alpha") > 0


def test_compare_rejects_unknown_metric_with_choices(runs_dir, capsys):
    from detoxkit.cli import main

    rc = main(["compare", str(runs_dir / "alpha"), "--sort", "toxicty_probability"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "unknown metric 'toxicty_probability'" in err
    assert "did you mean 'toxicity_probability'" in err
    assert "expected_max_toxicity" in err and "perplexity" in err and "distinct_2" in err


def test_missing_metrics_is_a_clear_error(tmp_path, capsys):
    from detoxkit.cli import main

    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "run.json").write_text(json.dumps({"status": "running"}))
    assert main(["report", str(tmp_path / "unfinished")]) == 2
    err = capsys.readouterr().err
    assert "no metrics.json (status: running)" in err and "detoxkit run" in err


def test_labels_are_unique(tmp_path, runs_dir):
    import shutil

    from detoxkit.report import load_runs

    for parent in ("a", "b"):
        shutil.copytree(runs_dir / "alpha", tmp_path / parent / "run")
    runs = load_runs([tmp_path / "a" / "run", tmp_path / "b" / "run"])
    assert [r.label for r in runs] == ["a/run", "b/run"]


def test_notices_name_judges_and_overlap(runs_dir):
    from detoxkit.report import comparability_notices, load_runs

    runs = load_runs([runs_dir / "alpha", runs_dir / HOSTILE_LABEL, runs_dir / "other-judge"])
    warnings = [n.message for n in comparability_notices(runs) if n.level == "warning"]
    assert any("different versions of the scorer" in w and "0-test" in w for w in warnings)
    assert any("graded by its own teacher" in w and HOSTILE_LABEL in w for w in warnings)
    same = load_runs([runs_dir / "alpha", runs_dir / "beta"])
    assert not [n for n in comparability_notices(same) if n.level == "warning"]


def test_markdown_report(runs_dir, capsys):
    from detoxkit.cli import main

    rc = main(["report", str(runs_dir / "alpha"), str(runs_dir / "beta"),
               str(runs_dir / HOSTILE_LABEL), "--markdown"])
    md = capsys.readouterr().out
    assert rc == 0
    assert md.startswith("## detoxkit report")
    table_lines = [line for line in md.splitlines() if line.startswith("|")]
    # every table row has as many unescaped cell separators as its header
    for line in table_lines:
        assert len(re.findall(r"(?<!\\)\|", line)) >= 3
    assert "### By prompt toxicity" in md and "### By group" in md and "### By language" in md
    assert "### Provenance" in md and "Library versions" in md
    assert "> **Warning:**" in md and "own teacher" in md
    assert "<img" not in md and "<script" not in md  # hostile names and settings are escaped
    assert "tokens per s" in md or "overhead.tokens_per_s" in md.replace("\\_", "_")
    out = runs_dir / "report.md"
    assert main(["report", str(runs_dir / "alpha"), "--markdown", str(out)]) == 0
    assert out.read_text().startswith("## detoxkit report")


def test_occlusion_attribution_finds_the_word_that_scores():
    from detoxkit.attribution import OcclusionAttribution, TokenTableAttribution, top_spans

    class OneWordScorer:
        name, version = "fake", "1"

        def score(self, texts):
            import numpy as np
            return {"toxicity": np.array([0.9 if "zap" in t else 0.1 for t in texts])}

    attr = OcclusionAttribution(OneWordScorer())
    text = "well zap that thing"
    (spans,) = attr([text])
    best = top_spans(spans, 1, attr.min_effect)
    assert [(text[s:e], round(eff, 3)) for s, e, eff in best] == [("zap", 0.8)]
    assert attr([""]) == [[]]
    table = TokenTableAttribution({"ĠZap": 2.0, "▁thing": 0.5, "other": 1.0})
    spans = table(["Well, zap! that thing."])[0]
    assert sorted((round(e, 1)) for *_, e in spans) == [0.5, 2.0]


def test_html_is_self_contained_and_escaped(runs_dir, tmp_path):
    from detoxkit.cli import main

    out = tmp_path / "r" / "report.html"
    assert main(["report", str(runs_dir / "alpha"), str(runs_dir / "beta"),
                 str(runs_dir / HOSTILE_LABEL), str(runs_dir / "other-judge"),
                 "--html", str(out), "--drilldown", "0"]) == 0
    page = out.read_text(encoding="utf-8")
    # nothing is fetched: no external scripts, styles, images, frames or imports
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)\s*=\s*[\"']?(https?:)?//", page, re.I)
    assert not re.search(r"@import|url\(\s*[\"']?(https?:)?//", page, re.I)
    assert 'http-equiv="Content-Security-Policy"' in page and "default-src 'none'" in page
    assert page.count("<script>") == 2  # plotly.js and the page's own script, both inline
    # untrusted text never appears as markup
    for payload in HOSTILE[:4]:
        assert payload not in page
    assert HOSTILE_LABEL not in page
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page
    assert '<span class="ctrl" title="invisible character U+202E">\\u202e</span>' in page
    # figure data holds no raw angle brackets
    for blob in re.findall(r'<script type="application/json" data-figure="[^"]+">(.*?)</script>', page, re.S):
        assert "<" not in blob and ">" not in blob
        json.loads(blob)
    # the sections the issue asks for
    for sid in ("tradeoff", "splits", "metrics", "by-group", "by-language", "provenance", "generations"):
        assert f'<section id="{sid}">' in page
    assert "overhead.tokens_per_s" in page  # decoding overhead recorded by a method is shown
    assert "method_stats.open_rate" in page and "method_stats.open_by_step" not in page
    assert "&quot;open_by_step&quot;" in page  # the whole record is in the provenance
    assert "different versions of the scorer" in page and "own teacher" in page
    assert "leave-one-word-out occlusion with profanity-svm" in page
    assert "<mark " in page  # the most toxic words are highlighted
    assert "(empty continuation)" in page and ">n/a</span>" in page  # empty and failed samples


def test_html_without_perplexity_or_attribution(tmp_path, runs_dir):
    from detoxkit.report import build_html, load_runs

    (run,) = load_runs([runs_dir / "alpha"])
    for key in ("perplexity", "perplexity_ci"):
        run.metrics.pop(key, None)
    run.metrics["oracle"] = None
    run.info["oracle"] = None
    page = build_html([run], attribution="none")
    assert "no trade-off to plot" in page and 'id="fig-tradeoff"' not in page
    assert "<mark " not in page and "No token attribution was requested" in page
    with pytest.raises(Exception, match="unknown attribution"):
        build_html([run], attribution="magic")


def test_cfl_table_attribution(runs_dir, monkeypatch):
    """--attribution cfl: each run's model tokenizer and the CFL table of the methods package."""
    tables = pytest.importorskip("detoxkit.methods.tables")
    import transformers

    from detoxkit.report import build_html, drilldown, load_runs

    monkeypatch.setattr(drilldown, "ATTRIBUTE_MIN_SCORE", 0.0)  # attribute every top sample
    calls = []
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        lambda where, *a, **k: calls.append(where) or object())
    monkeypatch.setattr(tables, "token_effects", lambda tok, path=None: {"Ġthe": 0.3, "Ġa": 0.001})
    runs = load_runs([runs_dir / "alpha", runs_dir / "beta"])
    page = build_html(runs, attribution="cfl", drilldown=2)
    assert calls == ["rtp-continuations"]  # one tokenizer load for runs of one model
    assert "CFL token table of rtp-continuations" in page
    marks = re.findall(r"<mark [^>]*>([^<]*)</mark>", page)
    assert marks and {m.lower() for m in marks} == {"the"}  # effects under 0.05 are not shown


def test_method_label_shows_a_wrapped_method_as_the_spec_grammar_nests_it():
    from detoxkit.methods import build_method
    from detoxkit.report import method_label

    gate = build_method("gate:wrap=(wordban),threshold=0.3")
    label = method_label({"method": gate.describe()})
    assert label.startswith("gate:wrap=(wordban") and "threshold=0.3" in label
    inner = label[len("gate:wrap=("):label.index(")")]
    assert inner.split(":")[0] == "wordban"  # the wrapped method's own label, not dropped
