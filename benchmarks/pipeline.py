"""Pipeline throughput: detoxkit's batched pipeline vs a naive loop, measured in the same run.

    python benchmarks/pipeline.py [--prompts N] [--samples K]

Both sides run SmolLM2-135M on the same prompts from
../shared/data/rtp/challenging_toxic.jsonl with the RTP sampling settings
(k samples, 20 new tokens, top-p 0.9) and score every sample with the default
scorer. The naive loop is what a first script does: one `model.generate` per
prompt with num_return_sequences=k, then one scorer call per text. detoxkit's
pipeline is `detoxkit run` itself (batched prompts, shared prompt prefill,
length-sorted batched scoring, resumable store), without the oracle perplexity.
The last line printed is one JSON object:
{"detoxkit_samples_per_s", "naive_samples_per_s", "ratio"}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import PROMPTS


def naive(lm, scorer, prompts, samples: int, max_new_tokens: int) -> int:
    n = 0
    for p in prompts:
        enc = lm.tokenizer(p.text, return_tensors="pt")
        with torch.inference_mode():
            out = lm.model.generate(**enc, do_sample=True, top_p=0.9, temperature=1.0, top_k=0,
                                    max_new_tokens=max_new_tokens, num_return_sequences=samples,
                                    pad_token_id=lm.tokenizer.pad_token_id)
        texts = lm.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for text in texts:
            scorer.score([text])
            n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--samples", type=int, default=25)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    args = parser.parse_args()

    from detoxkit.config import RunConfig
    from detoxkit.backends.hf import load_lm
    from detoxkit.prompts import load_prompts
    from detoxkit.runner import Evaluation
    from detoxkit.scorers import DEFAULT_SCORER, load_scorer

    torch.manual_seed(0)
    lm = load_lm("smollm2-135m")
    scorer = load_scorer(DEFAULT_SCORER)
    prompts = load_prompts(str(PROMPTS)).prompts[:args.prompts]
    scorer.score(["warm-up text"])  # load weights before timing either side
    naive(lm, scorer, prompts[:1], 2, 2)

    t0 = time.perf_counter()
    n_naive = naive(lm, scorer, prompts, args.samples, args.max_new_tokens)
    naive_rate = n_naive / (time.perf_counter() - t0)
    print(f"naive loop:        {n_naive} samples, {naive_rate:.2f} samples/s", file=sys.stderr)

    with tempfile.TemporaryDirectory() as tmp:
        # an id list file keeps exactly the same prompts as the naive loop
        subset = Path(tmp) / "prompts.jsonl"
        with open(PROMPTS, encoding="utf-8") as src, open(subset, "w", encoding="utf-8") as dst:
            for line, _ in zip(src, range(args.prompts)):
                dst.write(line)
        cfg = RunConfig(model="smollm2-135m", prompts=str(subset), samples=args.samples,
                        max_new_tokens=args.max_new_tokens, scorers=[DEFAULT_SCORER],
                        oracle="none", out=str(Path(tmp) / "run"))
        t0 = time.perf_counter()
        metrics = Evaluation(cfg).run()
        ours_rate = metrics["n_samples"] / (time.perf_counter() - t0)
    print(f"detoxkit pipeline: {metrics['n_samples']} samples, {ours_rate:.2f} samples/s",
          file=sys.stderr)
    print(json.dumps({"detoxkit_samples_per_s": round(ours_rate, 3),
                      "naive_samples_per_s": round(naive_rate, 3),
                      "ratio": round(ours_rate / naive_rate, 3)}))


if __name__ == "__main__":
    main()
