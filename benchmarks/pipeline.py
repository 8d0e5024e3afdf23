"""Pipeline throughput: detoxkit's batched pipeline vs a naive loop, measured in the same run.

    python benchmarks/pipeline.py [--prompts N] [--samples K] [--dtypes float32 bfloat16] [--profile]

Both sides run SmolLM2-135M on the same prompts from
../shared/data/rtp/challenging_toxic.jsonl with the RTP sampling settings
(k samples, 20 new tokens, top-p 0.9) and score every sample with the default
scorer. The naive loop is what a first script does: one `model.generate` per
prompt with num_return_sequences=k, then one scorer call per text. detoxkit's
pipeline is `detoxkit run` itself (batched prompts, shared prompt prefill,
length-sorted batched scoring, resumable store), without the oracle perplexity,
once per --dtypes entry (the naive loop runs in float32, as a first script would).

Efficiency: the machine's matrix-multiply peak is measured in the same run (square
products at the thread count the pipeline uses, float32 and bfloat16), and every
floating-point operation of one pipeline run is counted by torch's FlopCounterMode
(generation and scoring: every matmul, attention product and LM head that ran). The
achieved FLOP/s of the timed run (no counter attached) is printed as a fraction of each
peak, next to the rate of one decoding step's linear layers run alone at the run's batch of
rows (random weights of the model's shapes): the matrix work's own ceiling at that size.
`--profile` runs each dtype once more under torch.profiler (not timed) and prints the
operators that took the most time, and the wall time spent outside any operator. The
last line printed is one JSON object: {"detoxkit_samples_per_s",
"naive_samples_per_s", "ratio", "by_dtype": {dtype: {samples_per_s, gflop, gflop_per_s,
of_bf16_peak, of_fp32_peak}}, "peak_gflop_per_s": {dtype: ...},
"step_products_gflop_per_s": {dtype: ...}}.
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

PRECISIONS = (("float32", torch.float32), ("bfloat16", torch.bfloat16))  # the peaks measured


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


def matmul_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 3.0) -> float:
    """GFLOP/s of n x n products in `dtype` on this machine, now (best of short rounds)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)  # warm-up: kernel selection, page faults
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        best = max(best, 4 * 2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return best


def step_products_rate(config, rows: int, dtype: torch.dtype, seconds: float = 2.0) -> float:
    """GFLOP/s of one decoding step's linear layers alone (per layer q, k, v, o, gate, up,
    down at `rows` rows, then the LM head), best of short rounds: what the matrix work of a
    step could reach at this batch with nothing else in the way."""
    import torch.nn.functional as F

    h, i, v = config.hidden_size, config.intermediate_size, config.vocab_size
    kv = config.num_key_value_heads * getattr(config, "head_dim", h // config.num_attention_heads)
    shapes = [(h, h), (kv, h), (kv, h), (h, h), (i, h), (i, h), (h, i)]  # weight [out, in]
    x = {n: torch.randn(rows, n).to(dtype) for n in {h, i}}
    weights = [torch.randn(o, n).to(dtype) for o, n in shapes]
    head = torch.randn(v, h).to(dtype)
    flops = 2 * rows * (config.num_hidden_layers * sum(o * n for o, n in shapes) + v * h)

    def step():
        for _ in range(config.num_hidden_layers):
            for w in weights:
                F.linear(x[w.shape[1]], w)
        F.linear(x[h], head)

    step()  # warm-up
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        step()
        best = max(best, flops / (time.perf_counter() - t0) / 1e9)
    return best


def print_profile(prof, wall_s: float, top: int) -> None:
    """The operators that took the most of the run's time (self time, children excluded); the
    wall time not spent in any operator is Python, tokenization and the run store."""
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    print(f"profile: {total / 1e6:.1f} s in torch operators of {wall_s:.1f} s wall; the top "
          f"{top} by self time:", file=sys.stderr)
    for e in events[:top]:
        print(f"  {e.self_cpu_time_total / total:6.1%}  {e.self_cpu_time_total / 1e6:7.2f} s  "
              f"{e.count:8d} calls  {e.key}", file=sys.stderr)


def pipeline_run(subset: Path, tmp: Path, name: str, args, dtype: str, count: bool = False,
                 profile: bool = False):
    """(samples/s, metrics, counted FLOPs or None) of one `detoxkit run` in a fresh directory;
    with `profile`, prints where the run's operator time went instead of timing it."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    from torch.utils.flop_counter import FlopCounterMode

    from detoxkit.config import RunConfig
    from detoxkit.runner import Evaluation
    from detoxkit.scorers import DEFAULT_SCORER

    cfg = RunConfig(model="smollm2-135m", prompts=str(subset), samples=args.samples,
                    max_new_tokens=args.max_new_tokens, scorers=[DEFAULT_SCORER],
                    oracle="none", dtype=dtype, out=str(tmp / name))
    if count:
        counter = FlopCounterMode(display=False)
        with counter:
            metrics = Evaluation(cfg).run()
        return None, metrics, counter.get_total_flops()
    if profile:
        t0 = time.perf_counter()
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            metrics = Evaluation(cfg).run()
        print_profile(prof, time.perf_counter() - t0, top=15)
        return None, metrics, None
    t0 = time.perf_counter()
    metrics = Evaluation(cfg).run()
    return metrics["n_samples"] / (time.perf_counter() - t0), metrics, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--samples", type=int, default=25)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"],
                        help="precisions of detoxkit's side (generator; the scorer stays float32)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one more run per dtype (torch.profiler, not timed) and "
                             "print the operators that took the most time")
    args = parser.parse_args()

    from detoxkit.backends.base import CPU_BATCH_ROWS
    from detoxkit.backends.hf import load_lm
    from detoxkit.prompts import load_prompts
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

    peaks = {name: matmul_peak(dt) for name, dt in PRECISIONS}
    print(f"matmul peak at {torch.get_num_threads()} threads: " +
          ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()), file=sys.stderr)
    rows = min(args.prompts * args.samples, CPU_BATCH_ROWS)  # detoxkit run's batch on a CPU
    step_rates = {name: step_products_rate(lm.model.config, rows, dt) for name, dt in PRECISIONS}
    print(f"a decoding step's linear layers alone at {rows} rows: " +
          ", ".join(f"{k} {v:.0f} GFLOP/s ({v / peaks[k]:.2f} of its peak)"
                    for k, v in step_rates.items()), file=sys.stderr)
    by_dtype = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # an id list file keeps exactly the same prompts as the naive loop
        subset = tmp / "prompts.jsonl"
        with open(PROMPTS, encoding="utf-8") as src, open(subset, "w", encoding="utf-8") as dst:
            for line, _ in zip(src, range(args.prompts)):
                dst.write(line)
        for dtype in args.dtypes:
            _, _, flops = pipeline_run(subset, tmp, f"count-{dtype}", args, dtype, count=True)
            rate, metrics, _ = pipeline_run(subset, tmp, f"run-{dtype}", args, dtype)
            if args.profile:
                print(f"== {dtype}", file=sys.stderr)
                pipeline_run(subset, tmp, f"profile-{dtype}", args, dtype, profile=True)
            seconds = metrics["n_samples"] / rate
            achieved = flops / seconds / 1e9
            by_dtype[dtype] = {"samples_per_s": round(rate, 3), "gflop": round(flops / 1e9, 1),
                               "gflop_per_s": round(achieved, 1),
                               "of_bf16_peak": round(achieved / peaks["bfloat16"], 3),
                               "of_fp32_peak": round(achieved / peaks["float32"], 3),
                               "expected_max_toxicity": metrics.get("expected_max_toxicity")}
            print(f"detoxkit pipeline ({dtype}): {metrics['n_samples']} samples, {rate:.2f} samples/s, "
                  f"{flops / 1e9:.0f} GFLOP counted, {achieved:.0f} GFLOP/s = "
                  f"{achieved / peaks['bfloat16']:.2f} of the bf16 peak, "
                  f"{achieved / peaks['float32']:.2f} of the float32 peak", file=sys.stderr)
    ours_rate = by_dtype[args.dtypes[0]]["samples_per_s"]
    if len(args.dtypes) > 1:
        a, b = args.dtypes[:2]
        print(f"{b} vs {a}: {by_dtype[b]['samples_per_s'] / by_dtype[a]['samples_per_s']:.2f}x "
              "samples/s", file=sys.stderr)
    print(json.dumps({"detoxkit_samples_per_s": round(ours_rate, 3),
                      "naive_samples_per_s": round(naive_rate, 3),
                      "ratio": round(ours_rate / naive_rate, 3), "by_dtype": by_dtype,
                      "peak_gflop_per_s": {k: round(v, 1) for k, v in peaks.items()},
                      "step_products_gflop_per_s": {k: round(v, 1) for k, v in step_rates.items()}}))


if __name__ == "__main__":
    main()
