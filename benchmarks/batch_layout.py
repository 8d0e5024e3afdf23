"""How many samples change with the batch size (same seeds, same prompts).

    python benchmarks/batch_layout.py [--prompts 20] [--samples 5] [--tokens 20]
                                      [--batch-sizes 1 2 5 13] [--out benchmarks/runs/layout]
                                      [--dtype float32|bfloat16|auto]

One `detoxkit run` per batch size on the first N prompts of
../shared/data/rtp/challenging_toxic.jsonl (plain sampling, seed 3, no oracle), compared
sample by sample with the run at the default batch size. Set MKL_CBWR in the environment
to measure MKL's reproducibility modes too (docs/reliability.md). The last line is one JSON
object {batch size: differing samples}.
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
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 5, 13])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "runs" / "layout")
    ap.add_argument("--dtype", default="float32", help="generator precision (detoxkit run --dtype)")
    args = ap.parse_args(argv)

    from detoxkit.cli import main as cli
    from detoxkit.store import read_jsonl

    texts, seconds = {}, {}
    for size in [0, *args.batch_sizes]:
        out = args.out / args.dtype / f"batch{size}"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        rc = cli(["run", "--model", args.model, "--prompts", str(PROMPTS), "--limit", str(args.prompts),
                  "--samples", str(args.samples), "--max-new-tokens", str(args.tokens), "--seed", "3",
                  "--oracle", "none", "--scorer", "profanity-svm", "--batch-size", str(size),
                  "--dtype", args.dtype, "--out", str(out)])
        if rc:
            return rc
        seconds[size] = time.perf_counter() - t0
        rows = read_jsonl(out / "generations.jsonl")
        texts[size] = {(r["prompt_id"], r["sample_index"]): r["text"] for r in rows}
    ref = texts[0]
    diff = {size: sum(texts[size][k] != ref[k] for k in ref) for size in args.batch_sizes}
    print(f"\n{args.prompts} prompts x {args.samples} samples x {args.tokens} tokens, model {args.model}, "
          f"{args.dtype}")
    print(f"{'batch size':>10s} {'differ':>8s} {'seconds':>8s}")
    print(f"{'default':>10s} {'-':>8s} {seconds[0]:8.1f}")
    for size in args.batch_sizes:
        print(f"{size:>10d} {diff[size]:>4d}/{len(ref):<3d} {seconds[size]:8.1f}")
    print(json.dumps(diff))
    return 0


if __name__ == "__main__":
    sys.exit(main())
