"""The Ray executor's overhead and scaling against a local run, measured in the same run.

    python benchmarks/ray_executor.py [--prompts 16] [--samples 10] [--tokens 20] [--batch-size 20]

Three `detoxkit run`s of the embedded SmolLM2 on the first N prompts of
../shared/data/rtp/challenging_toxic.jsonl (no oracle, profanity-svm): local, Ray with 1
worker, Ray with 2 workers (a local Ray cluster, started and stopped by each run). Prints
the wall times and ratios to the local run (target for 1 worker: <= 1.15x); the last line
is one JSON object. On a 2-core machine two workers compete for the same cores, so the
2-worker figure shows the executor's cost more than its scaling.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from common import PROMPTS, ROOT


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=20)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "runs" / "ray")
    args = ap.parse_args(argv)

    from detoxkit.cli import main as cli

    common = ["run", "--model", args.model, "--prompts", str(PROMPTS), "--limit", str(args.prompts),
              "--samples", str(args.samples), "--max-new-tokens", str(args.tokens), "--oracle", "none",
              "--scorer", "profanity-svm", "--batch-size", str(args.batch_size)]
    seconds, texts = {}, {}
    for name, extra in (("local", []), ("ray-1", ["--executor", "ray", "--workers", "1"]),
                        ("ray-2", ["--executor", "ray", "--workers", "2"])):
        out = args.out / name
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        if cli([*common, *extra, "--out", str(out)]):
            return 1
        seconds[name] = time.perf_counter() - t0
        rows = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
        texts[name] = sorted((r["prompt_id"], r["sample_index"], r["text"]) for r in rows)
    same = all(texts[k] == texts["local"] for k in texts)
    print(f"\n{args.prompts} prompts x {args.samples} samples x {args.tokens} tokens, "
          f"batches of {args.batch_size}; samples identical across executors: {same}")
    for name, s in seconds.items():
        print(f"{name:8s} {s:7.1f} s  {s / seconds['local']:5.2f}x local")
    print(json.dumps({k: round(v, 1) for k, v in seconds.items()} | {"identical": same}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
