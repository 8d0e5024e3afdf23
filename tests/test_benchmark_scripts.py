"""The benchmark scripts that cannot be measured here still run (on CPU, at toy sizes)."""

import json
import os
import subprocess
import sys
from pathlib import Path

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
