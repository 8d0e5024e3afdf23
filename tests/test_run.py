"""End-to-end `detoxkit run` / `score` / `report` on a tiny local model and real RTP prompts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import RTP_CHALLENGING, RTP_NONTOXIC
from detoxkit.cli import main
from detoxkit.store import read_jsonl

FAST = ["--samples", "4", "--max-new-tokens", "6", "--scorer", "profanity-svm", "--oracle", "none"]


def run_cli(*args) -> int:
    return main(["run", *map(str, args)])


def lines(path: Path) -> list[dict]:
    return read_jsonl(path)


def mixed_prompts(tmp_path: Path, n: int = 6) -> Path:
    """A few toxic and non-toxic RTP prompts in RTP's own format."""
    out = tmp_path / "mixed.jsonl"
    with open(out, "w", encoding="utf-8") as dst:
        for src in (RTP_CHALLENGING, RTP_NONTOXIC):
            with open(src, encoding="utf-8") as fh:
                for line, _ in zip(fh, range(n // 2)):
                    dst.write(line)
    return out


def test_run_writes_the_store_and_every_metric(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("--model", tiny_model_dir, "--prompts", mixed_prompts(tmp_path), *FAST,
                   "--oracle", tiny_model_dir, "--out", out) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("expected_max_toxicity", "expected_max_toxicity_std", "toxicity_probability",
                "toxicity_probability_at_5", "toxic_fraction", "perplexity", "distinct_1",
                "distinct_2", "distinct_3", "n_prompts", "n_samples", "n_failed", "model", "method",
                "scorer", "seed", "versions", "expected_max_toxicity_ci", "toxicity_probability_ci"):
        assert key in metrics, key
    assert metrics["n_prompts"] == 6 and metrics["n_samples"] == 24 and metrics["n_failed"] == 0
    assert set(metrics["by_prompt_toxicity"]) == {"toxic", "nontoxic"}
    assert metrics["by_prompt_toxicity"]["toxic"]["n_prompts"] == 3
    assert metrics["scorer"]["name"] == "profanity-svm" and metrics["scorer"]["version"]
    assert metrics["perplexity"] > 1
    rows = lines(out / "generations.jsonl")
    assert len(rows) == 24
    assert len({(r["prompt_id"], r["sample_index"]) for r in rows}) == 24
    for r in rows:
        assert {"prompt_id", "sample_index", "seed", "prompt", "text", "n_tokens", "scores"} <= set(r)
        assert 0.0 <= r["scores"]["profanity-svm"]["toxicity"] <= 1.0
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["status"] == "complete" and len(run_json["config_hash"]) == 16
    assert "Expected" not in capsys.readouterr().err  # the table goes to stdout


def test_same_samples_whatever_the_batch_size(tiny_model_dir, tmp_path):
    # a float32 property: in bfloat16 a batch's padding and row count move the logits enough
    # to change samples (measured by benchmarks/batch_layout.py, docs/reliability.md)
    prompts = mixed_prompts(tmp_path)
    fp32 = ["--dtype", "float32"]
    run_cli("--model", tiny_model_dir, "--prompts", prompts, *FAST, *fp32, "--out", tmp_path / "a")
    run_cli("--model", tiny_model_dir, "--prompts", prompts, *FAST, *fp32, "--batch-size", "3",
            "--out", tmp_path / "b")
    key = lambda r: (r["prompt_id"], r["sample_index"], r["text"])  # noqa: E731
    a, b = lines(tmp_path / "a" / "generations.jsonl"), lines(tmp_path / "b" / "generations.jsonl")
    assert sorted(map(key, a)) == sorted(map(key, b))


def test_resume_after_kill_loses_and_duplicates_nothing(tiny_model_dir, tmp_path):
    prompts = tmp_path / "many.jsonl"
    with open(RTP_NONTOXIC, encoding="utf-8") as src, open(prompts, "w") as dst:
        for line, _ in zip(src, range(60)):
            dst.write(line)
    args = ["--model", str(tiny_model_dir), "--prompts", str(prompts), "--samples", "5",
            "--max-new-tokens", "12", "--scorer", "profanity-svm", "--oracle", "none",
            "--batch-size", "10"]
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "detoxkit.cli", "run", *args, "--out", str(killed)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gen = killed / "generations.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if gen.exists() and gen.stat().st_size > 0 and len(read_jsonl(gen)) >= 20:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(read_jsonl(gen))
    assert 0 < partial < 300
    with open(gen, "a") as fh:  # also simulate a line torn mid-write
        fh.write('{"prompt_id": "x", "sample_in')
    assert run_cli(*args, "--out", killed) == 0

    whole = tmp_path / "whole"
    assert run_cli(*args, "--out", whole) == 0
    resumed = lines(gen)
    assert len(resumed) == 300
    assert len({(r["prompt_id"], r["sample_index"]) for r in resumed}) == 300
    key = lambda r: (r["prompt_id"], r["sample_index"], r["text"])  # noqa: E731
    assert sorted(map(key, resumed)) == sorted(map(key, lines(whole / "generations.jsonl")))


def test_resume_with_a_different_config_is_refused(tiny_model_dir, tmp_path, capsys):
    prompts = mixed_prompts(tmp_path)
    out = tmp_path / "run"
    assert run_cli("--model", tiny_model_dir, "--prompts", prompts, *FAST, "--out", out) == 0
    before = (out / "generations.jsonl").read_bytes()
    assert run_cli("--model", tiny_model_dir, "--prompts", prompts, *FAST, "--seed", "5",
                   "--out", out) == 2
    err = capsys.readouterr().err
    assert "different config" in err and "seed: 0 -> 5" in err
    assert (out / "generations.jsonl").read_bytes() == before


def test_score_adds_a_scorer_and_report_compares(tiny_model_dir, tmp_path, capsys):
    prompts = mixed_prompts(tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    run_cli("--model", tiny_model_dir, "--prompts", prompts, *FAST, "--out", a)
    run_cli("--model", tiny_model_dir, "--prompts", prompts, *FAST, "--temperature", "0.7", "--out", b)
    # a second scorer added to an existing run; here the generator itself is not a scorer, so
    # use the same lexical scorer under its registry name to check the bookkeeping
    assert main(["score", str(a), "--scorer", "profanity-svm"]) == 0
    assert main(["report", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "EMT" in out and "a" in out and "b" in out


def test_bad_yaml_config_names_file_line_and_key(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: smollm2-135m\nsampels: 5\n")
    assert main(["run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}, line 2, field 'sampels'" in err and "did you mean 'samples'" in err


def test_prompt_longer_than_context_is_an_error_or_a_counted_skip(tiny_model_dir, tmp_path, capsys):
    prompts = tmp_path / "long.jsonl"
    rows = [{"id": "short", "text": "A short prompt that"},
            {"id": "long", "text": " ".join(["word"] * 400)}]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    assert run_cli("--model", tiny_model_dir, "--prompts", prompts, *FAST, "--out", out) == 2
    err = capsys.readouterr().err
    assert f"{prompts}, line 2, field 'text'" in err and "context" in err
    assert not (out / "generations.jsonl").exists()
    assert run_cli("--model", tiny_model_dir, "--prompts", prompts, *FAST, "--on-bad", "skip",
                   "--out", tmp_path / "skip") == 0
    metrics = json.loads((tmp_path / "skip" / "metrics.json").read_text())
    assert metrics["n_prompts"] == 1 and metrics["n_skipped_prompts"] == 1


def test_malformed_prompt_file_is_a_clear_error(tiny_model_dir, tmp_path, capsys):
    prompts = tmp_path / "bad.jsonl"
    prompts.write_bytes(b'{"text": "fine"}\n{"text": "broken\n')
    assert run_cli("--model", tiny_model_dir, "--prompts", prompts, *FAST, "--out", tmp_path / "r") == 2
    err = capsys.readouterr().err
    assert str(prompts) in err and "line 2" in err and "Traceback" not in err


@pytest.mark.slow
def test_real_embedded_model_on_rtp_prompts(tmp_path):
    """SmolLM2-135M (converted from its GGUF), default scorer, on real RTP prompts."""
    out = tmp_path / "smol"
    assert run_cli("--prompts", mixed_prompts(tmp_path, 4), "--samples", "3", "--max-new-tokens",
                   "10", "--oracle", "smollm2-135m", "--out", out) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"]["name"] == "smollm2-135m" and metrics["n_samples"] == 12
    assert metrics["n_failed"] == 0 and 1 < metrics["perplexity"] < 1000
    texts = [r["text"] for r in lines(out / "generations.jsonl")]
    assert sum(any(c.isalpha() for c in t) for t in texts) >= 10  # real words, not noise


def test_scorer_specs_with_settings_in_run_and_score(tiny_model_dir, tmp_path):
    """`--scorer NAME:key=value` works in `run` and `score`; scores are keyed by the scorer's name."""
    out = tmp_path / "run"
    assert run_cli("--model", tiny_model_dir, "--prompts", mixed_prompts(tmp_path, 4), "--samples", "3",
                   "--max-new-tokens", "5", "--oracle", "none", "--scorer", "profanity-svm:batch_size=5",
                   "--out", out) == 0
    assert json.loads((out / "run.json").read_text())["config"]["scorers"] == ["profanity-svm:batch_size=5"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["scorer"]["name"] == "profanity-svm" and metrics["n_failed"] == 0
    assert main(["score", str(out), "--scorer", "jigsaw-bilstm:batch_size=16", "--judge"]) == 0
    rows = lines(out / "generations.jsonl")
    assert all(set(r["scores"]) == {"profanity-svm", "jigsaw-bilstm"} for r in rows)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["scorer"]["name"] == "jigsaw-bilstm" and metrics["n_failed"] == 0


def test_a_resumed_run_keeps_its_precision(tiny_model_dir, tmp_path, monkeypatch):
    """`--dtype auto` may resolve otherwise on another CPU: a resume keeps the run's dtype,
    so its samples are drawn as the first ones were."""
    monkeypatch.setenv("DETOXKIT_CPU_BF16", "0")  # auto = float32 when the run starts
    prompts, out = mixed_prompts(tmp_path), tmp_path / "run"
    assert run_cli("--model", tiny_model_dir, "--prompts", prompts, *FAST, "--out", out) == 0
    whole = lines(out / "generations.jsonl")
    gen = out / "generations.jsonl"
    gen.write_text("\n".join(gen.read_text(encoding="utf-8").split("\n")[:10]) + "\n",
                   encoding="utf-8")  # keep 10 of the 24 samples
    (out / "metrics.json").unlink()
    monkeypatch.setenv("DETOXKIT_CPU_BF16", "1")  # now auto would be bfloat16
    assert run_cli("--model", tiny_model_dir, "--prompts", prompts, *FAST, "--out", out) == 0
    assert json.loads((out / "run.json").read_text())["model"]["dtype"] == "float32"
    key = lambda r: (r["prompt_id"], r["sample_index"], r["text"])  # noqa: E731
    assert sorted(map(key, lines(gen))) == sorted(map(key, whole))
