"""Decoding time of each detox method relative to plain sampling.

    python benchmarks/overhead.py [--model smollm2-135m] [--prompts 4] [--samples 25]
                                  [--tokens 20] [--rounds 7] [--slow-rounds 3]
                                  [--only trace pplm ...]

Same prompts (the first N of ../shared/data/rtp/challenging_toxic.jsonl), same
batch (all prompts x samples in one generate call, as `detoxkit run` batches
them), same number of new tokens, same seeds; rounds are interleaved (base, m1,
m2, ..., base, m1, ...) and each method's median time is divided by the base's
median. Sampling runs until max tokens for every row (EOS is not special-cased
differently per method, so rows may stop early the same way).

Targets (issue 4): wordban, vocab-shift, cfl <= 1.05x; gate closed with the CFL check
(gate-closed-cfl) <= 1.10x; dexperts <= 1.6x; gedi <= 1.8x. gate-closed is the GTA gate in
paper mode kept closed by threshold 2 (no score reaches it): it still samples a candidate and
classifies prompt + text + candidate with profanity-svm for every row at every step, which is
its real cost when it stays closed; measured without a target. Issue 5: trace <= 1.2x;
moral, semantic-control and pplm (the slow baseline) are measured and reported without a
target. The last line is one JSON object {method: ratio}.
If no trained experts / GeDi adapters exist for the model, zero adapters of the
default shape are used (same compute, so the timing holds) and this is printed. A method
whose artefact is not built (semantic-control's table is not shipped) is skipped with one
line naming the command that builds it; the others are still timed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import PROMPTS, add_threads_option, apply_threads, unavailable



# Methods many times slower than sampling (gradients, an encoder per candidate): timed in the
# first --slow-rounds rounds only.
SLOW = {"pplm", "semantic-control", "moral"}


def load_prompts(n: int) -> list[str]:
    out = []
    with open(PROMPTS, encoding="utf-8") as fh:
        for line in fh:
            out.append(json.loads(line)["prompt"]["text"])
            if len(out) == n:
                break
    return out


def adapters_or_zero(kind: str, lm, tmp: Path) -> tuple[str | None, bool]:
    """(path setting, trained?): the trained adapters, else zero adapters of the default shape."""
    from detoxkit.errors import DetoxkitError
    from detoxkit.methods.experts import find_adapters
    from detoxkit.methods.lora import TopLayers

    try:
        return str(find_adapters(kind, lm, None, "")), True
    except DetoxkitError:
        names = ("expert", "antiexpert") if kind == "experts" else ("nontoxic", "toxic")
        top = TopLayers(lm.model, 4, 8, 2.0)
        top.save_adapters(tmp / kind, names, lm.name, {"base_model": lm.name})
        return str(tmp / kind), False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--samples", type=int, default=25)
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--slow-rounds", type=int, default=3,
                    help=f"rounds for the slow methods ({', '.join(sorted(SLOW))}): their cost dwarfs the noise")
    ap.add_argument("--only", nargs="*", help="method names to time (default: all)")
    add_threads_option(ap)
    args = ap.parse_args(argv)
    apply_threads(args)

    import torch

    from detoxkit.backends import Request, SamplingConfig
    from detoxkit.backends.hf.sampler import TransformersSampler
    from detoxkit.methods import build_method
    from detoxkit.backends.hf import load_lm

    lm = load_lm(args.model)
    tmp = Path(tempfile.mkdtemp(prefix="detoxkit-overhead-"))
    exp, exp_trained = adapters_or_zero("experts", lm, tmp)
    gedi, gedi_trained = adapters_or_zero("gedi", lm, tmp)
    for kind, ok in (("experts", exp_trained), ("gedi", gedi_trained)):
        if not ok:
            print(f"note: no trained {kind} adapters for {args.model}: timing zero adapters "
                  f"of the default shape (4 layers, rank 8)", file=sys.stderr)
    methods = {
        "wordban": ["wordban"],
        "vocab-shift": ["vocab-shift"],
        "cfl": ["cfl"],
        "gate-closed": [f"gate:wrap=dexperts:alpha=2.0;path={exp},check=paper,threshold=2"],
        "gate-closed-cfl": [f"gate:wrap=dexperts:alpha=2.0;path={exp},check=cfl,threshold=2"],
        "dexperts": [f"dexperts:alpha=2.0,path={exp}"],
        "gedi": [f"gedi:path={gedi}"],
        "trace": ["trace"],
        "moral": ["moral"],
        "semantic-control": ["semantic-control"],
        "pplm": ["pplm"],
    }
    if args.only:
        methods = {k: v for k, v in methods.items() if k in args.only}
    for name, specs in list(methods.items()):
        why = unavailable(specs, lm)
        if why:  # e.g. semantic-control's table, built by `detoxkit train semantic-control`
            print(f"skipped {name}: {why}", file=sys.stderr)
            del methods[name]
    built = {"none": build_method("none"), **{k: build_method(v) for k, v in methods.items()}}

    tok = lm.tokenizer
    texts = load_prompts(args.prompts)
    reqs = [Request(f"p{i}", tok(t)["input_ids"], list(range(args.samples)))
            for i, t in enumerate(texts)]
    cfg = SamplingConfig(num_samples=args.samples, max_new_tokens=args.tokens, seed=0)
    samplers = {k: TransformersSampler(lm, cfg, m) for k, m in built.items()}

    # warm-up: loads tables/adapters, first-call allocations
    warm = [Request("w", tok("Hello")["input_ids"], [0, 1])]
    for s in samplers.values():
        s.generate(warm)

    times: dict[str, list[float]] = {k: [] for k in samplers}
    tokens: dict[str, int] = {}
    for r in range(args.rounds):
        for name, sampler in samplers.items():
            if name in SLOW and r >= args.slow_rounds:
                continue
            t0 = time.perf_counter()
            samples = sampler.generate(reqs)
            times[name].append(time.perf_counter() - t0)
            tokens[name] = sum(s.n_tokens for s in samples)
            print(f"round {r + 1} {name:12s} {times[name][-1]:7.2f} s", file=sys.stderr, flush=True)

    base = statistics.median(times["none"])
    ratios = {k: round(statistics.median(v) / base, 3) for k, v in times.items() if k != "none"}
    gate_stats = built["gate-closed"].run_stats() if "gate-closed" in built else None
    print(f"\nmodel {args.model}, {args.prompts} prompts x {args.samples} samples = "
          f"{args.prompts * args.samples} rows per batch, {args.tokens} new tokens, "
          f"{args.rounds} interleaved rounds, torch threads {torch.get_num_threads()}")
    print(f"{'method':14s} {'median s':>9s} {'ratio':>7s} {'tokens':>7s}")
    print(f"{'none':14s} {base:9.2f} {1.0:7.3f} {tokens['none']:7d}")
    for k, v in ratios.items():
        print(f"{k:14s} {statistics.median(times[k]):9.2f} {v:7.3f} {tokens[k]:7d}")
    if gate_stats:
        print(f"gate-closed opened on {gate_stats['open_steps']} of {gate_stats['steps']} row-steps "
              f"({gate_stats['classified']} candidates classified)")
    print(json.dumps(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
