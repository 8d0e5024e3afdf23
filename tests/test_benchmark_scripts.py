"""The benchmark scripts that cannot be measured here still run (on CPU, at toy sizes)."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_throughput_script_runs_on_cpu_at_a_toy_size():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_throughput.py"), "--shape", "tiny",
         "--device", "cpu", "--dtype", "float32", "--prompts", "3", "--samples", "2",
         "--scorer", "profanity-svm"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["n_samples"] == 6 and result["samples_per_s"] > 0
    assert result["projected_full_rtp_hours"] > 0 and result["batch_rows"] > 0


def test_tradeoff_ranking_agreement_reads_both_judges_rankings():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from tradeoff import ranking_agreement
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))

    def row(tp, emt, tp_other, emt_other):
        return {"toxicity_probability": tp, "expected_max_toxicity": emt,
                "other:toxicity_probability": tp_other, "other:expected_max_toxicity": emt_other}

    # TP: the other judge orders the three methods the same way; EMT: exactly reversed
    results = {"base": row(0.9, 0.8, 0.7, 0.1), "a": row(0.5, 0.5, 0.4, 0.5),
               "b": row(0.2, 0.3, 0.1, 0.6), "unscored": {"toxicity_probability": 0.3}}
    line = ranking_agreement(results, "judge", "other")
    assert "TP Kendall tau +1.000" in line and "EMT Kendall tau -1.000" in line
    assert "3 methods" in line  # the method the other judge did not score is left out
    assert "fewer than 3" in ranking_agreement({"base": row(1, 1, 1, 1)}, "judge", "other")


def test_tradeoff_results_file_keeps_finished_methods_and_is_not_run_again(tmp_path):
    results = tmp_path / "results.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "tradeoff.py"), "--prompts", "2",
           "--samples", "2", "--tokens", "3", "--judge", "jigsaw-bilstm", "--oracle", "none",
           "--only", "base", "wordban", "--out", str(tmp_path / "runs"), "--results", str(results),
           "--threads", "1"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    kept = json.loads(results.read_text())
    assert len(kept) == 2
    (key,) = [k for k in kept if k.endswith("--method none")]
    assert str(ROOT) not in key
    # per prompt, the numbers a paired difference needs: max toxicity, any toxic, ... tokens
    per_prompt = kept[key]["per_prompt"]["jigsaw-bilstm"]
    assert len(per_prompt) == 2 and all(len(v) == 6 and v[3] == 2 for v in per_prompt.values())
    assert "text" not in json.dumps(kept)  # numbers only: no prompt or sample text
    run_dir = tmp_path / "runs" / "2x2-none" / "base"
    assert (run_dir / "generations.jsonl").exists()

    # the run directories are gone (as in a fresh checkout): the kept metrics are used, not a new run
    import shutil
    shutil.rmtree(tmp_path / "runs")
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "from " in second.stderr and not run_dir.exists()
    again = json.loads(second.stdout.strip().splitlines()[-1])["base"]
    assert again["toxicity_probability"] == kept[key]["toxicity_probability"]
    # wordban's row still carries its paired TP change against base, from the kept stats
    (row,) = [line for line in second.stdout.splitlines() if line.startswith("wordban ")]
    assert row.count("[") == 1 and "n/a" in row  # TP paired; no oracle, so no paired perplexity


def test_sweep_map_keeps_each_point_and_reports_the_map_without_the_run_directories(
        tiny_model_dir, tmp_path, capsys):
    import shutil

    from helpers import RTP_CHALLENGING
    from detoxkit.cli import main

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import sweep_map
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    prompts, out, results = tmp_path / "p.jsonl", tmp_path / "sweep", tmp_path / "sweep-results.json"
    prompts.write_text("".join(RTP_CHALLENGING.read_text(encoding="utf-8").splitlines(True)[:3]),
                       encoding="utf-8")
    assert main(["sweep", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--samples", "2",
                 "--max-new-tokens", "4", "--scorer", "profanity-svm", "--oracle", str(tiny_model_dir),
                 "--out", str(out), "--method", "gate:wrap=wordban,threshold=0.8,0.2"]) == 0
    kept = sweep_map.collect(out, results)
    assert set(kept) == {"config", "none", "gate:wrap=wordban,threshold=0.8", "gate:wrap=wordban,threshold=0.2"}
    assert "\"text\":" not in results.read_text()  # numbers only: no prompt or sample text
    (dtype,) = {r["dtype"] for key, r in kept.items() if key != "config"}  # outside the runs' hash
    other_dtype = "float32" if dtype != "float32" else "bfloat16"
    with pytest.raises(SystemExit, match=f"measured in \\['{dtype}'\\], not {other_dtype}"):
        sweep_map.run_map(argparse.Namespace(out=out, prompts_file=prompts, samples=2,
                                             dtype=other_dtype, results=results))
    shutil.rmtree(out)  # a fresh checkout: the map comes from the committed file alone
    capsys.readouterr()
    sweep_map.print_map(sweep_map.read_results(results))
    lines = capsys.readouterr().out.splitlines()
    # the base first, then the curve's points in the order swept (0.8 before 0.2)
    assert [ln.split()[1] for ln in lines[1:4]] == ["none", "threshold=0.8", "threshold=0.2"]
    assert all(ln.count("[") == 2 for ln in lines[2:4])  # paired TP and perplexity vs the base
    assert any(mark in " ".join(lines[1:4]) for mark in ("EMT", "TP"))  # someone is on a front
    assert "judged by profanity-svm" in lines[-1]
    sweep_map.print_map(sweep_map.read_results(results), markdown=True)
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| curve | point |") and len(table) == 2 + 3 + 2
    page = tmp_path / "curves.html"
    sweep_map.write_figure(sweep_map.read_results(results), page)
    assert "Pareto frontier" in page.read_text(encoding="utf-8")
    # a results file of another sweep is not mixed with this one
    other = json.loads(results.read_text())
    other["config"]["config"]["samples"] = 3
    results.write_text(json.dumps(other))
    assert main(["sweep", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--samples", "2",
                 "--max-new-tokens", "4", "--scorer", "profanity-svm", "--oracle", "none",
                 "--out", str(tmp_path / "sweep2"), "--method", "wordban:case=true,false"]) == 0
    with pytest.raises(SystemExit, match="other shared settings"):
        sweep_map.collect(tmp_path / "sweep2", results)
