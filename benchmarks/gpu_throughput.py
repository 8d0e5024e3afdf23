"""The hf backend's GPU path at RealToxicityPrompts size: samples/s and the projected time of the
full 100k prompts x 25 samples.

    python benchmarks/gpu_throughput.py [--prompts 10000] [--samples 25] [--shape gpt2-large]
                                        [--device cuda] [--dtype bfloat16] [--scorer NAME]

The generator has GPT-2 large's shape (36 layers, width 1280, 20 heads, 774M parameters with
SmolLM2's 49,152-token vocabulary instead of GPT-2's 50,257) with random weights, which is
legitimate for speed: the cost of a forward does not depend on the weights' values. Random
weights rarely draw the end-of-text token, so nearly every sample runs the full 20 tokens,
the worst case. The prompts are the real RTP prompts of ../shared/data/rtp/ cycled to
--prompts with distinct ids. The run is `detoxkit run` itself (batches of 1,024 sequences on a
GPU, halved on out-of-memory; scoring on the same device; no perplexity oracle) in a fresh
directory. `--shape tiny --device cpu --dtype float32 --prompts 4 --samples 2` checks the
script on a CPU in seconds. The last line printed is one JSON object: {"samples_per_s",
"seconds", "n_samples", "batch_rows", "projected_full_rtp_hours", "device", "gpu"}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import PROMPTS

SHAPES = {"gpt2-large": {"n_embd": 1280, "n_layer": 36, "n_head": 20},
          "tiny": {"n_embd": 64, "n_layer": 2, "n_head": 2}}
FULL_RTP_SAMPLES = 100_000 * 25


def random_model(shape: str, out: Path, seed: int = 0) -> Path:
    """A GPT-2 of `shape` with random weights and SmolLM2's tokenizer, saved as safetensors."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from detoxkit.backends.hf import load_lm

    tok = load_lm("smollm2-135m").tokenizer
    eos = tok.eos_token_id
    config = GPT2Config(vocab_size=len(tok), n_positions=1024, bos_token_id=eos, eos_token_id=eos,
                        **SHAPES[shape])
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def cycled_prompts(n: int, out: Path) -> Path:
    """n prompts: the real RTP prompts repeated, each copy with its own id."""
    from detoxkit.prompts import load_prompts

    real = load_prompts(str(PROMPTS)).prompts
    with open(out, "w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"p{i}", "text": real[i % len(real)].text}) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=25)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="gpt2-large")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--scorer", default="detoxkit-minilm")
    args = parser.parse_args()

    import torch

    from detoxkit.config import RunConfig
    from detoxkit.runner import Evaluation

    gpu = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = random_model(args.shape, tmp / "model")
        prompts = cycled_prompts(args.prompts, tmp / "prompts.jsonl")
        cfg = RunConfig(model=str(model), prompts=str(prompts), samples=args.samples,
                        max_new_tokens=args.max_new_tokens, scorers=[args.scorer], oracle="none",
                        device=args.device, dtype=args.dtype, out=str(tmp / "run"))
        t0 = time.perf_counter()
        metrics = Evaluation(cfg).run()
        seconds = time.perf_counter() - t0
        run = json.loads((tmp / "run" / "run.json").read_text(encoding="utf-8"))
    rate = metrics["n_samples"] / seconds
    print(f"{metrics['n_samples']} samples in {seconds:.1f} s: {rate:.1f} samples/s on "
          f"{gpu or args.device}; the full RTP (100k x 25) would take "
          f"{FULL_RTP_SAMPLES / rate / 3600:.2f} h", file=sys.stderr)
    print(json.dumps({"samples_per_s": round(rate, 2), "seconds": round(seconds, 1),
                      "n_samples": metrics["n_samples"], "batch_rows": run.get("batch_rows"),
                      "projected_full_rtp_hours": round(FULL_RTP_SAMPLES / rate / 3600, 3),
                      "device": args.device, "dtype": args.dtype, "shape": args.shape,
                      "gpu": gpu}))


if __name__ == "__main__":
    main()
