"""bfloat16 against float32: the default scorer's scores, and two finished runs side by side.

    python benchmarks/dtype.py [--threads 1] [--runs FP32_RUN BF16_RUN]

Scorer: detoxkit-minilm in float32 and with `dtype=bfloat16` on every scored text of
../shared/data/rtp (4,765 after deduplication), both timed in this run (texts/s, model
loading excluded, after a warm-up): agreement of each with the stored Perspective
scores (AUC, Spearman), and of the two with each other (Spearman, largest absolute
difference, share of texts whose decision at 0.5 flips).

Runs: two `detoxkit run` directories of the same config in the two dtypes (e.g. the
100 x 25 runs of docs/benchmarks.md): every headline metric side by side with its
interval, and the paired differences (prompts resampled jointly) with a note where a
difference is distinguishable from zero. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from common import PROMPTS, add_threads_option, apply_threads

RTP_FILES = [PROMPTS, PROMPTS.parent / "nontoxic_sample.jsonl"]


def timed_scores(scorer, texts: list[str]) -> tuple[np.ndarray, float]:
    scorer.score(texts[:16])  # warm-up
    t0 = time.perf_counter()
    scores = np.asarray(scorer.score(texts)["toxicity"], dtype=np.float64)
    return scores, len(texts) / (time.perf_counter() - t0)


def scorer_agreement() -> dict:
    from scipy.stats import spearmanr

    from detoxkit.scorers import load_scorer
    from detoxkit.scorers.validate import agreement, load_reference

    ref = load_reference(RTP_FILES)
    out = {}
    scores = {}
    for spec in ("detoxkit-minilm", "detoxkit-minilm:dtype=bfloat16"):
        scores[spec], rate = timed_scores(load_scorer(spec), ref.texts)
        out[spec] = {**agreement(scores[spec], ref.scores), "texts_per_s": round(rate, 1)}
    a, b = scores.values()
    out["fp32_vs_bf16"] = {"spearman": float(spearmanr(a, b).statistic),
                           "max_abs_diff": float(np.abs(a - b).max()),
                           "mean_abs_diff": float(np.abs(a - b).mean()),
                           "decisions_flipped": int(((a >= 0.5) != (b >= 0.5)).sum()), "n": len(a)}
    return out


def run_comparison(fp32_dir: str, bf16_dir: str) -> dict:
    from detoxkit.report import load_runs, paired_against
    from detoxkit.report.compare import format_difference
    from detoxkit.report.metric_defs import format_metric

    runs = load_runs([fp32_dir, bf16_dir])
    for r in runs:
        print(f"{r.label}: model dtype {r.model.get('dtype')}, oracle dtype "
              f"{(r.oracle or {}).get('dtype')}, {r.metrics.get('elapsed_s')} s", file=sys.stderr)
    keys = ("expected_max_toxicity", "toxicity_probability", "toxicity_probability_at_5",
            "toxic_fraction", "perplexity", "perplexity_published", "distinct_2")
    for k in keys:
        print(f"{k:28s} " + "  ".join(f"{format_metric(r.metrics, k):>26s}" for r in runs), file=sys.stderr)
    _, diffs, notes = paired_against(runs, runs[0])
    paired = diffs.get(runs[1].label, {})
    for k, d in paired.items():
        print(f"paired {k:21s} {format_difference(d, 2 if k == 'perplexity' else 3)}", file=sys.stderr)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    return {"metrics": {r.label: {k: r.metrics.get(k) for k in keys} for r in runs},
            "paired": {k: d.as_dict() for k, d in paired.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs=2, metavar=("FP32_RUN", "BF16_RUN"))
    add_threads_option(ap)
    args = ap.parse_args()
    apply_threads(args)
    result = {"scorer": scorer_agreement()}
    for spec, r in result["scorer"].items():
        print(f"{spec:34s} {json.dumps(r)}", file=sys.stderr)
    if args.runs:
        result["runs"] = run_comparison(*args.runs)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
