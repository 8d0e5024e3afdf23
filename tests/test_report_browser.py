"""The HTML report in a real browser: headless Chromium (Debian's `chromium` package),
driven over the DevTools protocol. Runs are made with the real `detoxkit run` on the tiny
model. Screenshots are saved under test-artifacts/ (gitignored)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from helpers import ROOT
from report_fixtures import HOSTILE_LABEL, Browser, find_chromium, synthetic_run, write_prompt_file

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium; "
                             ".ci/run installs it); set DETOXKIT_CHROMIUM to use another binary")

FIGURES_JS = """Array.from(document.querySelectorAll('.figure')).map(d => ({
  id: d.id, rendered: d.getAttribute('data-rendered'),
  svg: d.querySelectorAll('svg.main-svg').length,
  traces: d.querySelectorAll('g.trace').length, data: (d.data || []).length,
  points: d.querySelectorAll('g.trace .point').length,
  height: d.getBoundingClientRect().height}))"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chromium")
    b = Browser(CHROMIUM, tmp / "profile", tmp / "chromium.log")
    try:
        b.open_page(width=1300, height=1000)
    except Exception:
        b.close()
        raise AssertionError("chromium did not start; its log:\n" +
                             (tmp / "chromium.log").read_text(errors="replace")[-3000:])
    yield b
    b.close()


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory, tiny_model_dir) -> list[Path]:
    """A base run and a second decoding setting, both made by `detoxkit run`."""
    from detoxkit.cli import main

    root = tmp_path_factory.mktemp("browser-runs")
    prompts = write_prompt_file(root / "prompts.jsonl", n_each=4)
    common = ["--model", str(tiny_model_dir), "--prompts", str(prompts), "--samples", "5",
              "--max-new-tokens", "8", "--scorer", "profanity-svm", "--oracle", str(tiny_model_dir)]
    runs = []
    for name, extra in (("base", []), ("cooler-t0.7", ["--temperature", "0.7"])):
        assert main(["run", *common, *extra, "--out", str(root / name)]) == 0
        runs.append(root / name)
    return runs


def _load(browser: Browser, page: Path) -> list[dict]:
    browser.navigate(page.resolve().as_uri())
    assert browser.evaluate("window.detoxkitReady.then(() => true)", timeout=60) is True
    return browser.evaluate(FIGURES_JS)


def _click_first_prompt(browser: Browser) -> dict:
    x, y = browser.evaluate("""(() => { const s = document.querySelector('details.prompt > summary');
        s.scrollIntoView({block: 'center'}); const r = s.getBoundingClientRect();
        return [r.x + 40, r.y + r.height / 2]; })()""")
    browser.click(x, y)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = browser.evaluate("""(() => { const d = document.querySelector('details.prompt');
            const shown = Array.from(d.querySelectorAll('li.sample')).filter(e => e.offsetHeight > 0);
            return {open: d.open, samples: shown.length,
                    scores: shown.map(e => e.getAttribute('data-score')),
                    columns: d.querySelectorAll('.runcol').length}; })()""")
        if state["open"]:
            return state
        time.sleep(0.1)
    return state


def test_report_of_real_runs_in_chromium(browser, real_runs, tmp_path):
    from detoxkit.cli import main

    page = tmp_path / "report.html"
    assert main(["report", *map(str, real_runs), "--html", str(page)]) == 0
    figures = _load(browser, page)

    assert browser.errors() == []
    urls = browser.requested_urls()
    assert urls and all(u.startswith(("file:", "data:", "blob:", "about:")) for u in urls), urls
    n_figures = int(browser.evaluate("document.body.dataset.figures"))
    ids = [f["id"] for f in figures]
    assert len(figures) == n_figures and {"fig-tradeoff", "fig-splits", "fig-by_group"} <= set(ids)
    for f in figures:
        assert f["rendered"] == "1" and f["svg"] >= 1 and f["height"] > 200, f
        assert f["data"] > 0 and f["traces"] == f["data"] and f["points"] > 0, f
    tradeoff = next(f for f in figures if f["id"] == "fig-tradeoff")
    assert tradeoff["data"] == 2 * len(real_runs)  # one point per run in each panel
    text = browser.evaluate("document.body.innerText")
    for run in real_runs:
        assert run.name in text
    for heading in ("Toxicity-fluency trade-off", "Toxicity by prompt toxicity", "Every metric",
                    "By group", "By language", "Provenance", "Library versions",
                    "Generations behind the numbers"):
        assert heading in text
    assert "judge (every toxicity number)" in text and "temperature" in text

    state = _click_first_prompt(browser)
    assert state["open"] and state["columns"] == len(real_runs)
    assert state["samples"] == 5 * len(real_runs)
    for col in range(len(real_runs)):  # each run's samples are sorted by score, highest first
        scores = [float(s) for s in state["scores"][col * 5:(col + 1) * 5] if s]
        assert scores == sorted(scores, reverse=True)
    assert browser.errors() == []
    shot = browser.screenshot(ARTIFACTS / "report-real-runs.png")
    assert shot.stat().st_size > 20_000


def test_hostile_report_in_chromium(browser, tmp_path):
    """Untrusted samples, names and settings stay text; warnings and highlights show."""
    from detoxkit.report import write_html

    runs = [synthetic_run(tmp_path / "plain", seed=0, hostile=False),
            synthetic_run(tmp_path / HOSTILE_LABEL, seed=2, guided_by=("profanity-svm",)),
            synthetic_run(tmp_path / "other-judge", seed=3, hostile=False, judge_version="0-test")]
    page = write_html(runs, tmp_path / "hostile.html", drilldown=0)
    figures = _load(browser, page)
    assert browser.errors() == []
    assert all(f["rendered"] == "1" and f["traces"] == f["data"] > 0 for f in figures), figures
    browser.evaluate("document.querySelectorAll('details.prompt').forEach(d => d.open = true)")
    time.sleep(0.2)
    assert browser.evaluate("window.__pwned === undefined") is True
    assert browser.evaluate("document.querySelectorAll('main script, main img, main iframe, "
                            "main a[href^=javascript]').length") == 0
    text = browser.evaluate("document.body.innerText")
    assert "<script>window.__pwned = 1</script>" in text  # shown literally
    assert HOSTILE_LABEL in text
    assert "Warning:" in text and "own teacher" in text and "different versions of the scorer" in text
    svg_text = browser.evaluate("Array.from(document.querySelectorAll('#fig-tradeoff text'))"
                                ".map(t => t.textContent).join(' ')")
    assert HOSTILE_LABEL in svg_text  # plotly shows the label as text, not markup
    assert browser.evaluate("document.querySelectorAll('details.prompt mark').length") > 0
    browser.screenshot(ARTIFACTS / "report-hostile.png")


def test_sweep_curves_in_chromium(browser, tiny_model_dir, tmp_path):
    """A real `detoxkit sweep` (two curves): one line per curve and the frontier, rendered."""
    from detoxkit.cli import main

    prompts = write_prompt_file(tmp_path / "prompts.jsonl", n_each=2)
    page, out = tmp_path / "sweep.html", tmp_path / "sweep"
    assert main(["sweep", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--samples", "3",
                 "--max-new-tokens", "6", "--scorer", "profanity-svm", "--oracle", str(tiny_model_dir),
                 "--method", "wordban:case=true,false", "--method", "gate:wrap=wordban,threshold=0.2,0.8",
                 "--out", str(out), "--html", str(page)]) == 0
    figures = _load(browser, page)
    assert browser.errors() == []
    curves = next(f for f in figures if f["id"] == "fig-tradeoff")
    assert curves["rendered"] == "1" and curves["height"] > 200
    # base + two curves + the frontier, in each of the two panels; five runs drawn as points
    assert curves["data"] == 2 * 4 and curves["points"] >= 2 * 5, curves
    text = browser.evaluate("document.body.innerText")
    assert "Trade-off curves" in text and "Pareto frontier" in text
    browser.screenshot(ARTIFACTS / "report-sweep.png")
