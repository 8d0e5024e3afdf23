"""What a run guarantees (docs/reliability.md): resumes keep the batch layout, finished runs stay
as they are, interrupted writes leave nothing behind, counters are read after their work,
metrics.json is strict JSON, and scorers leave the process's settings alone."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detoxkit.cli import main
from detoxkit.methods.base import DetoxMethod, LogitsTransform
from detoxkit.registry import METHODS
from helpers import RTP_NONTOXIC, ROOT
from detoxkit.store import read_jsonl

ARGS = ["--samples", "3", "--max-new-tokens", "6", "--scorer", "profanity-svm", "--oracle", "none",
        "--batch-size", "4"]


class _Record(LogitsTransform):
    def __init__(self, sink: list[int]):
        self.sink = sink
        self.first = True

    def __call__(self, input_ids, logits):
        if self.first:  # one entry per generate call: its number of rows
            self.sink.append(int(input_ids.shape[0]))
            self.first = False
        return logits


class RecordLayout(DetoxMethod):
    """Leaves the logits alone and records the rows of every generate call."""

    name = "record-layout"
    calls: list[int] = []

    def bind(self, lm):
        return _Record(RecordLayout.calls)


if "record-layout" not in METHODS:
    METHODS.register("record-layout", f"{__name__}:RecordLayout", "test: records batch layouts")


def prompts_file(tmp_path: Path, n: int = 4) -> Path:
    path = tmp_path / "p.jsonl"
    path.write_text("".join(line for line, _ in zip(open(RTP_NONTOXIC, encoding="utf-8"), range(n))))
    return path


def run(model, prompts, out, *extra) -> int:
    return main(["run", "--model", str(model), "--prompts", str(prompts), *ARGS, *map(str, extra),
                 "--method", "record-layout", "--out", str(out)])


def texts(run_dir: Path) -> list[tuple]:
    rows = read_jsonl((run_dir / "generations.jsonl"))
    return sorted((r["prompt_id"], r["sample_index"], r["text"]) for r in rows)


def files_of(run_dir: Path) -> dict[str, tuple[str, int]]:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(run_dir.iterdir()) if p.is_file() and p.name != ".lock"}


def test_a_resume_draws_the_batches_the_uninterrupted_run_drew(tiny_model_dir, tmp_path):
    prompts = prompts_file(tmp_path)
    whole = tmp_path / "whole"
    RecordLayout.calls.clear()
    assert run(tiny_model_dir, prompts, whole) == 0
    assert RecordLayout.calls == [3, 3, 3, 3]  # 4 rows a call: one prompt's 3 samples each
    # interrupted inside the last batch: two of its three samples were never stored
    cut = tmp_path / "cut"
    assert run(tiny_model_dir, prompts, cut) == 0
    gen = cut / "generations.jsonl"
    gen.write_text("".join(gen.read_text().splitlines(keepends=True)[:-2]))
    info = json.loads((cut / "run.json").read_text())
    (cut / "run.json").write_text(json.dumps({**info, "status": "running"}))
    RecordLayout.calls.clear()
    assert run(tiny_model_dir, prompts, cut, "--batch-size", "1") == 0  # the run's layout is kept
    assert RecordLayout.calls == [3]  # the whole batch again, not its 2 missing rows alone
    assert texts(cut) == texts(whole)


def test_a_finished_run_is_left_as_it_is(tiny_model_dir, tmp_path):
    prompts = prompts_file(tmp_path, 2)
    out = tmp_path / "done"
    assert run(tiny_model_dir, prompts, out) == 0
    before = files_of(out)
    RecordLayout.calls.clear()
    assert run(tiny_model_dir, prompts, out, "--device", "cuda:7") == 0  # nothing to do: no load
    assert RecordLayout.calls == [] and files_of(out) == before


def test_a_failed_resume_changes_nothing(tiny_model_dir, tmp_path):
    prompts = prompts_file(tmp_path, 2)
    out = tmp_path / "part"
    assert run(tiny_model_dir, prompts, out) == 0
    gen = out / "generations.jsonl"
    gen.write_text("".join(gen.read_text().splitlines(keepends=True)[:-1]))
    info = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**info, "status": "running"}))
    before = files_of(out)
    assert run(tiny_model_dir, prompts, out, "--device", "cuda:7") == 2  # no such device here
    assert files_of(out) == before
    assert "cuda" not in (out / "config.yaml").read_text()


def test_stray_temporary_files_are_removed_under_the_lock(tiny_model_dir, tmp_path):
    prompts = prompts_file(tmp_path, 2)
    out = tmp_path / "run"
    assert run(tiny_model_dir, prompts, out) == 0
    stray = out / f".run.json.{os.getpid() + 1}.tmp"
    stray.write_text('{"half": ')
    info = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**info, "status": "running"}))
    assert run(tiny_model_dir, prompts, out) == 0
    assert not stray.exists()


def test_a_failed_new_run_leaves_no_directory(tiny_model_dir, tmp_path):
    out = tmp_path / "never"
    assert run(tiny_model_dir, prompts_file(tmp_path), out, "--oracle", tmp_path / "no-oracle") == 2
    assert not out.exists()


def test_metrics_json_is_strict_json(tiny_model_dir, tmp_path):
    """No bare NaN: perplexity is null without an oracle, and readers take null as missing."""
    out = tmp_path / "run"
    assert run(tiny_model_dir, prompts_file(tmp_path, 2), out) == 0

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    for name in ("metrics.json", "run.json"):
        json.loads((out / name).read_text(), parse_constant=refuse)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["perplexity"] is None
    from detoxkit.report import format_metric, load_run

    assert format_metric(load_run(out).metrics, "perplexity") in ("-", "n/a", "")


def test_scorer_counters_are_read_after_scoring(tiny_model_dir, tmp_path, monkeypatch):
    """Perspective against a dead endpoint: every score fails, and run.json says so."""
    monkeypatch.setenv("PERSPECTIVE_API_KEY", "test-key-never-logged")
    out = tmp_path / "run"
    dead = "perspective:base_url=http://127.0.0.1:9/v1alpha1,max_retries=0,backoff=0.01,cache=false"
    assert main(["run", "--model", str(tiny_model_dir), "--prompts", str(prompts_file(tmp_path, 2)),
                 "--samples", "2", "--max-new-tokens", "4", "--oracle", "none",
                 "--scorer", "profanity-svm", "--scorer", dead, "--out", str(out)]) == 0
    info = json.loads((out / "run.json").read_text())
    stats = next(s for s in info["scorers"] if s["name"] == "perspective")["stats"]
    assert stats["failed"] == 4 and stats["scored"] == 0
    rows = read_jsonl((out / "generations.jsonl"))
    assert all(r["scores"]["perspective"]["toxicity"] is None for r in rows)
    assert "test-key-never-logged" not in "".join(p.read_text() for p in out.iterdir() if p.is_file())


def test_loading_a_scorer_leaves_the_hub_setting_alone(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    from detoxkit.scorers.minilm import load_encoder

    load_encoder()
    assert "HF_HUB_OFFLINE" not in os.environ


@pytest.mark.slow
def test_benchmark_skips_a_method_whose_artefact_is_not_built():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # the tests' cache: no semantic-control table
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "overhead.py"), "--only",
                           "semantic-control", "cfl", "--prompts", "1", "--samples", "2", "--tokens",
                           "2", "--rounds", "1", "--slow-rounds", "1"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "skipped semantic-control" in done.stderr and "detoxkit train semantic-control" in done.stderr
    ratios = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(ratios) == {"cfl"} and not math.isnan(ratios["cfl"])


def test_a_resume_whose_method_defaults_changed_is_refused(tiny_model_dir, tmp_path, capsys):
    prompts = prompts_file(tmp_path, 2)
    out = tmp_path / "run"
    assert run(tiny_model_dir, prompts, out) == 0
    info = json.loads((out / "run.json").read_text())
    info["status"] = "running"
    info["method_settings"]["settings"] = {"an_old_default": 1}  # as an older detoxkit resolved it
    (out / "run.json").write_text(json.dumps(info))
    before = files_of(out)
    assert run(tiny_model_dir, prompts, out) == 2
    assert "other method settings" in capsys.readouterr().err
    assert files_of(out) == before
