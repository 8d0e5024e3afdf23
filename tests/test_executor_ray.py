"""The Ray executor on a real local Ray cluster: the same samples as a local run, and a worker
killed mid-run loses and duplicates nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from detoxkit.cli import main
from helpers import RTP_NONTOXIC
from detoxkit.store import read_jsonl

pytestmark = [pytest.mark.requires_ray, pytest.mark.slow]


def prompts(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "p.jsonl"
    path.write_text("".join(line for line, _ in zip(open(RTP_NONTOXIC, encoding="utf-8"), range(n))))
    return path


def args(model, prompt_file, out, *extra) -> list[str]:
    return ["run", "--model", str(model), "--prompts", str(prompt_file), "--samples", "3",
            "--max-new-tokens", "6", "--scorer", "profanity-svm", "--oracle", "none",
            "--batch-size", "3", *map(str, extra), "--out", str(out)]


def texts(run_dir: Path) -> list[tuple]:
    rows = read_jsonl((run_dir / "generations.jsonl"))
    return sorted((r["prompt_id"], r["sample_index"], r["text"]) for r in rows)


def ray_workers() -> list[int]:
    """Pids of the actors' processes (Ray names them after the actor class)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"ray::BatchWorker" in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_ray_run_equals_the_local_run(tiny_model_dir, tmp_path):
    """The same samples, and the method's counters (which only the actors' copies of it
    accumulate) added up over the actors to the local run's."""
    p = prompts(tmp_path, 6)
    gate = ["--method", "gate:wrap=(wordban),threshold=0.3"]
    assert main(args(tiny_model_dir, p, tmp_path / "local", *gate)) == 0
    assert main(args(tiny_model_dir, p, tmp_path / "ray", *gate, "--executor", "ray",
                     "--workers", "2")) == 0
    assert texts(tmp_path / "ray") == texts(tmp_path / "local")
    assert len(texts(tmp_path / "ray")) == 18
    stats = [json.loads((tmp_path / d / "metrics.json").read_text())["method_stats"]
             for d in ("local", "ray")]
    assert stats[0]["samples"] == 18 and stats[0]["steps"] > 0
    assert stats[1] == stats[0]


def test_a_killed_worker_loses_and_duplicates_nothing(tiny_model_dir, tmp_path):
    p = prompts(tmp_path, 24)
    assert main(args(tiny_model_dir, p, tmp_path / "local")) == 0
    out = tmp_path / "ray"
    proc = subprocess.Popen([sys.executable, "-m", "detoxkit.cli",
                             *args(tiny_model_dir, p, out, "--executor", "ray", "--workers", "2")],
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    gen = out / "generations.jsonl"
    deadline = time.monotonic() + 300
    killed = None
    while time.monotonic() < deadline and proc.poll() is None:
        if gen.exists() and len(read_jsonl(gen)) >= 6 and ray_workers():
            killed = ray_workers()[0]
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.1)
    assert killed is not None, "the run ended before a worker could be killed"
    assert proc.wait(timeout=600) == 0, proc.stderr.read()[-3000:]
    rows = read_jsonl(gen)
    assert len(rows) == 72 and len({(r["prompt_id"], r["sample_index"]) for r in rows}) == 72
    assert texts(out) == texts(tmp_path / "local")
