"""`detoxkit sweep`: curve grammar, one resumable run per point, the frontier in the reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import RTP_CHALLENGING
from detoxkit.cli import main
from detoxkit.errors import DetoxkitError
from detoxkit.report import Run, front_marks, load_runs
from detoxkit.store import read_jsonl
from detoxkit.sweep import expand_curve, plan

FAST = ["--samples", "2", "--max-new-tokens", "4", "--scorer", "profanity-svm", "--oracle", "none"]


def test_a_curve_is_the_grid_of_its_multi_valued_settings():
    points = expand_curve("dexperts:alpha=0.5,1,2,mode=paper")
    assert [p.methods for p in points] == [("dexperts:alpha=0.5,mode=paper",),
                                           ("dexperts:alpha=1,mode=paper",),
                                           ("dexperts:alpha=2,mode=paper",)]
    assert [p.values for p in points] == [(("alpha", 0.5),), (("alpha", 1),), (("alpha", 2),)]
    chain = expand_curve("cfl:strength=20,40+dexperts:alpha=0.5,1")
    assert len(chain) == 4 and chain[3].methods == ("cfl:strength=40", "dexperts:alpha=1")
    assert chain[3].label == "cfl.strength=40,dexperts.alpha=1"
    gated = expand_curve("gate:wrap=(dexperts:alpha=1,mode=paper),threshold=0.3,0.5")
    assert [p.methods[0] for p in gated] == ["gate:wrap=(dexperts:alpha=1,mode=paper),threshold=0.3",
                                             "gate:wrap=(dexperts:alpha=1,mode=paper),threshold=0.5"]
    assert expand_curve("cfl")[0].values == () and expand_curve("cfl")[0].label == "cfl"


def test_bad_curves_are_refused_with_the_reason():
    with pytest.raises(DetoxkitError, match="given twice"):
        expand_curve("cfl:strength=1,strength=2")
    with pytest.raises(DetoxkitError, match="key=value"):
        expand_curve("cfl:1,2")
    with pytest.raises(DetoxkitError, match="nothing to compare"):
        plan([], include_base=True)


def test_plan_runs_the_base_first_and_a_shared_point_once():
    points = plan(["wordban:case=true,false", "wordban:case=true"])
    assert [p.methods for p in points] == [("none",), ("wordban:case=true",), ("wordban:case=false",)]


def _run(metrics: dict, label: str) -> Run:
    return Run(Path(label), label, metrics)


def test_front_marks_name_the_fronts_each_run_is_on():
    runs = [_run({"expected_max_toxicity": 0.8, "toxicity_probability": 0.9, "perplexity": 50.0}, "base"),
            _run({"expected_max_toxicity": 0.5, "toxicity_probability": 0.6, "perplexity": 51.0}, "a"),
            _run({"expected_max_toxicity": 0.4, "toxicity_probability": 0.7, "perplexity": 52.0}, "b"),
            _run({"expected_max_toxicity": 0.6, "toxicity_probability": 0.8, "perplexity": 60.0}, "worse")]
    marks = front_marks(runs)
    assert marks == {"base": "EMT, TP", "a": "EMT, TP", "b": "EMT"}


def _prompts(tmp_path: Path, n: int = 3) -> Path:
    out = tmp_path / "prompts.jsonl"
    out.write_text("".join(RTP_CHALLENGING.read_text(encoding="utf-8").splitlines(True)[:n]),
                   encoding="utf-8")
    return out


def _generated(run_dir: Path) -> int:
    return len(read_jsonl(run_dir / "generations.jsonl"))


def test_sweep_runs_each_point_resumes_and_reports_the_curves(tiny_model_dir, tmp_path, capsys):
    prompts, out = _prompts(tmp_path), tmp_path / "sweep"
    common = ["sweep", "--model", str(tiny_model_dir), "--prompts", str(prompts), *FAST,
              "--oracle", str(tiny_model_dir), "--out", str(out)]
    assert main(common + ["--method", "wordban:case=true,false"]) == 0
    index = json.loads((out / "sweep.json").read_text())
    assert [p["methods"] for p in index["points"]] == [["none"], ["wordban:case=true"],
                                                       ["wordban:case=false"]]
    runs = load_runs([out])
    assert [r.label for r in runs] == ["none", "wordban case=True", "wordban case=False"]
    fingerprints = {r.info["prompts"]["fingerprint"] for r in runs}
    assert len(fingerprints) == 1 and {r.info["seed"] for r in runs} == {0}
    assert [r.method.get("name") for r in runs] == ["none", "wordban", "wordban"]
    printed = capsys.readouterr().out
    assert "Pareto frontier (TP vs perplexity): " in printed and "Paired differences vs none" in printed
    frontier = next(x for x in printed.splitlines() if x.startswith("Pareto frontier (TP"))
    assert frontier.split(": ", 1)[1] != "-"  # three runs with perplexities: someone is on it

    before = {r.label: _generated(r.path) for r in runs}
    html = tmp_path / "sweep.html"
    # the same command again resumes (nothing generated twice); one more curve adds its points
    assert main(common + ["--method", "wordban:case=true,false",
                          "--method", "gate:wrap=wordban,threshold=0.2,0.8", "--html", str(html)]) == 0
    runs = load_runs([out])
    assert len(runs) == 5 and {r.label: _generated(r.path) for r in runs[:3]} == before
    page = html.read_text(encoding="utf-8")
    assert "Trade-off curves" in page and "Pareto frontier" in page and "gate threshold=0.8" in page

    # a sweep's curves are comparable only on the same prompts, samples and seed
    changed = [a if a != "2" else "3" for a in common]
    assert main(changed + ["--method", "wordban:case=true,false"]) == 2
    assert "samples" in capsys.readouterr().err
    assert main(["report", str(out), "--markdown"]) == 0
    assert "(pareto: " in capsys.readouterr().out


def test_run_sweep_skips_points_measured_before_and_reports_each_finished_one(tiny_model_dir, tmp_path):
    from detoxkit.config import RunConfig
    from detoxkit.sweep import run_sweep

    cfg = RunConfig(model=str(tiny_model_dir), prompts=str(_prompts(tmp_path, 2)), samples=2,
                    max_new_tokens=3, scorers=["profanity-svm"], oracle="none")
    finished = []
    dirs = run_sweep(cfg, ["wordban:case=true,false"], tmp_path / "sweep",
                     skip=lambda p: p.methods == ("wordban:case=true",),
                     on_finished=lambda p, run_dir: finished.append((p.methods, run_dir.name)))
    assert finished == [(("none",), "none"), (("wordban:case=false",), "wordban_case=false")]
    assert [d.name for d in dirs] == ["none", "wordban_case=false"]
    assert not (tmp_path / "sweep" / "wordban_case=true,false" / "wordban_case=true").exists()


def test_a_curve_given_more_values_reuses_its_finished_points(tiny_model_dir, tmp_path):
    prompts, out = _prompts(tmp_path, 2), tmp_path / "sweep"
    common = ["sweep", "--model", str(tiny_model_dir), "--prompts", str(prompts), *FAST, "--out", str(out)]
    assert main(common + ["--method", "gate:wrap=wordban,threshold=0.8"]) == 0
    first = json.loads((out / "sweep.json").read_text())["points"][1]
    done = out / first["run"] / "generations.jsonl"
    before = done.read_bytes()
    assert main(common + ["--method", "gate:wrap=wordban,threshold=0.8,0.2"]) == 0
    points = json.loads((out / "sweep.json").read_text())["points"]
    assert [p["methods"] for p in points] == [["none"], ["gate:wrap=wordban,threshold=0.8"],
                                              ["gate:wrap=wordban,threshold=0.2"]]
    # one curve now, named by the latest command; the finished point kept its directory and samples
    assert {p["curve"] for p in points[1:]} == {"gate:wrap=wordban,threshold=0.8,0.2"}
    assert points[1]["run"] == first["run"] and done.read_bytes() == before
    runs = load_runs([out])
    assert {r.sweep["curve"] for r in runs[1:]} == {"gate:wrap=wordban,threshold=0.8,0.2"}
