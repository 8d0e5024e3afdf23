"""Documents per second of `detoxkit corpus scan` against a naive loop (one scorer call per
document), for the lexical scorer and the default one, in the same process on the same corpus;
then the Ray Data path with 1 and 2 workers against the local path.

    python benchmarks/corpus.py [--docs 2396] [--minilm-docs 600] [--threads 1] [--workers 1 2]

The corpus: the RealToxicityPrompts texts of the shared data folder (prompt + continuation, one
document each, both files; read from ../shared/data/rtp, written to a temporary JSONL file). The
labelled corpus the scorers were trained on is not used: its rows are the scorers' training
data (docs/corpus.md). Every figure is one timed pass after a warm-up (scorer loaded, first batch
run); a scan's time includes reading, unit splitting, writing the shards and the summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PROMPTS, add_threads_option, apply_threads  # noqa: E402

NONTOXIC = PROMPTS.parent / "nontoxic_sample.jsonl"


def write_corpus(path: Path, n: int) -> Path:
    texts = []
    for src in (PROMPTS, NONTOXIC):
        with open(src, encoding="utf-8") as fh:
            texts += [(json.loads(x)["prompt"]["text"] + json.loads(x)["continuation"]["text"], src.stem)
                      for x in fh]
    texts = (texts * (n // len(texts) + 1))[:n] if n > len(texts) else texts[::max(1, len(texts) // n)][:n]
    with open(path, "w", encoding="utf-8") as fh:
        for i, (t, source) in enumerate(texts):
            fh.write(json.dumps({"id": i, "source": source, "text": t}) + "\n")
    return path


def naive(path: Path, spec: str, units: str) -> float:
    """One scorer call per document (its units together): the loop a script would write."""
    from detoxkit.corpus_scan.readers import Reader, detect
    from detoxkit.corpus_scan.units import split_units
    from detoxkit.scorers import load_scorer

    scorer = load_scorer(spec)
    t0, n = time.perf_counter(), 0
    for doc in Reader(detect(path)):
        parts = [doc.text[a:b] for a, b in split_units(doc.text, units)]
        if parts:
            scorer.score(parts)
        n += 1
    return n / (time.perf_counter() - t0)


def scan(path: Path, spec: str, out: Path, units: str, **kw) -> float:
    from detoxkit.corpus_scan.scan import ScanConfig, run_scan
    from detoxkit.corpus_scan.shards import read_manifest

    t0 = time.perf_counter()
    run_scan(ScanConfig(inputs=[str(path)], scorers=[spec], out=str(out), units=units, **kw))
    dt = time.perf_counter() - t0
    return sum(e["rows"] for e in read_manifest(out)["shards"].values()) / dt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=2396, help="documents for profanity-svm")
    parser.add_argument("--minilm-docs", type=int, default=1200, help="documents for detoxkit-minilm")
    parser.add_argument("--units", default="sentences")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2],
                        help="Ray worker counts to measure (none: skip Ray)")
    parser.add_argument("--ray-scorer", default="detoxkit-minilm")
    add_threads_option(parser)
    args = parser.parse_args()
    apply_threads(args)
    from detoxkit.scorers import load_scorer

    results = {"threads": args.threads, "units": args.units}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for spec, n in (("profanity-svm", args.docs), ("detoxkit-minilm", args.minilm_docs)):
            path = write_corpus(tmp / f"{spec}.jsonl", n)
            load_scorer(spec).score(["warm up", "a second text"])
            naive_rate = naive(path, spec, args.units)
            # the naive loop detects no language: the like-for-like scan does not either
            scan_rate = scan(path, spec, tmp / f"scan-{spec}", args.units, language=False)
            lang_rate = scan(path, spec, tmp / f"scan-lang-{spec}", args.units)
            results[spec] = {"docs": n, "scan_docs_per_s": round(scan_rate, 1),
                             "naive_docs_per_s": round(naive_rate, 1),
                             "ratio": round(scan_rate / naive_rate, 2),
                             "scan_with_language_docs_per_s": round(lang_rate, 1)}
            print(f"{spec:16} {n:5d} docs: scan {scan_rate:8.1f} docs/s, naive loop "
                  f"{naive_rate:8.1f} docs/s, scan / naive = {scan_rate / naive_rate:.2f}x; "
                  f"with language detection {lang_rate:.1f} docs/s", flush=True)
        if args.workers:
            import ray

            spec, n = args.ray_scorer, args.minilm_docs if args.ray_scorer == "detoxkit-minilm" else args.docs
            path = tmp / f"{spec}.jsonl"
            shard = max(1, n // 8)  # shards for the actors to share
            local = scan(path, spec, tmp / "local-sharded", args.units, shard_docs=shard)
            results["ray"] = {"scorer": spec, "docs": n, "shard_docs": shard,
                              "local_docs_per_s": round(local, 1)}
            for w in args.workers:
                t0 = time.perf_counter()
                # one CPU per actor: with --threads 1 every actor, like the local scan, runs one thread
                ray.init(num_cpus=w, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
                start = time.perf_counter() - t0
                rate = scan(path, spec, tmp / f"ray-{w}", args.units, shard_docs=shard,
                            executor="ray", workers=w)
                ray.shutdown()
                results["ray"][f"workers_{w}"] = {"docs_per_s": round(rate, 1),
                                                  "vs_local": round(rate / local, 2),
                                                  "cluster_start_s": round(start, 1)}
                print(f"ray {w} worker(s) {spec}: {rate:.1f} docs/s (local {local:.1f}: "
                      f"{rate / local:.2f}x; actors' start-up and scorer loading included; "
                      f"cluster start {start:.1f} s not included)", flush=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
