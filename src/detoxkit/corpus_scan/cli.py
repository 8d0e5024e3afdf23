"""The flags and handlers of `detoxkit corpus scan` and `detoxkit corpus filter` (registered by
commands/corpus.py)."""

from __future__ import annotations

import sys


def register(action) -> None:
    scan = action.add_parser(
        "scan", help="score every document of a corpus (JSONL, Parquet, CSV, text; .gz/.zst)",
        description="Stream documents from files, globs or directories, split them into units, "
                    "score the units with each --scorer and write per-document scores as Parquet "
                    "shards with a manifest into --out. Run the same command again to resume. "
                    "See docs/corpus.md.")
    scan.add_argument("paths", nargs="+", metavar="PATH", help="files, globs or directories")
    scan.add_argument("--scorer", action="append", metavar="SPEC",
                      help="scorer spec (repeat for several; default detoxkit-minilm). The first "
                           "is the one the filter uses unless told otherwise")
    scan.add_argument("--out", required=True, metavar="DIR", help="the scan directory")
    scan.add_argument("--text-field", default="text",
                      help="JSONL key (a.b for nested), CSV or Parquet column holding the text")
    scan.add_argument("--format", choices=("jsonl", "parquet", "csv", "text"),
                      help="input format (default: from each file's suffix)")
    scan.add_argument("--units", default="sentences", choices=("sentences", "tokens", "doc"),
                      help="what is scored: sentences (cut at --unit-size tokens), windows of "
                           "--unit-size tokens, or the whole document")
    scan.add_argument("--unit-size", type=int, default=64, metavar="N",
                      help="tokens (whitespace words) per unit at most (default 64)")
    scan.add_argument("--shard-docs", type=int, default=1000, metavar="N",
                      help="documents per shard, the unit of resuming (default 1000)")
    scan.add_argument("--on-bad", choices=("error", "skip"), default="error",
                      help="a malformed record: stop with its file, line and field (error), or "
                           "count it and go on (skip)")
    scan.add_argument("--no-language", dest="language", action="store_false",
                      help="do not detect each document's language (detoxkit.lang, about 0.6 ms a "
                           "document) for the breakdown by language")
    scan.add_argument("--batch-size", type=int, help="scorer batch size (default: the scorer's)")
    scan.add_argument("--device", default="cpu")
    scan.add_argument("--threads", type=int, default=0,
                      help="torch CPU threads for scoring, here or in each Ray actor (0: torch's "
                           "default; Ray's: the actor's CPUs). A neural scorer's last digits depend "
                           "on it: give the same value to compare a local and a Ray scan bit by bit")
    scan.add_argument("--threshold", type=float, default=0.5,
                      help="a document is toxic when its maximum unit score is >= this")
    scan.add_argument("--executor", choices=("local", "ray"), default="local",
                      help="ray: score shards on Ray Data actors (see docs/corpus.md)")
    scan.add_argument("--workers", type=int, default=1, help="Ray actors")
    scan.add_argument("--ray-address", help="an existing Ray cluster (default: start a local one)")
    scan.add_argument("--quiet", action="store_true", help="no summary table at the end")
    scan.set_defaults(func=run_scan_command)

    filt = action.add_parser(
        "filter", help="write a scanned corpus without (and separately, only) its toxic part",
        description="Keep the documents (or, --by unit, the units) of a scan whose score is at "
                    "most --max-toxicity; write the kept and the removed parts in the input's "
                    "format (or --format jsonl|txt: one merged file each, as `detoxkit train dapt "
                    "--data` reads) with counts of documents and tokens.")
    filt.add_argument("scan_dir", metavar="SCAN_DIR")
    filt.add_argument("--max-toxicity", type=float, required=True, metavar="T")
    filt.add_argument("--by", choices=("doc", "unit"), default="doc",
                      help="doc: drop a document whose maximum unit score is above T; unit: drop "
                           "only the units above T (a document with none left is dropped)")
    filt.add_argument("--scorer", metavar="SPEC", help="whose scores decide (default: the first)")
    filt.add_argument("--format", choices=("same", "jsonl", "txt"), default="same",
                      help="same: each input file in its own format; jsonl / txt: one merged "
                           "kept.* and removed.* file")
    filt.add_argument("--out", metavar="DIR", help="default: SCAN_DIR/filtered-<by>-<T>")
    filt.set_defaults(func=run_filter_command)


def run_scan_command(args) -> int:
    from .scan import ScanConfig, run_scan

    config = ScanConfig(inputs=args.paths, scorers=args.scorer or ["detoxkit-minilm"], out=args.out,
                        text_field=args.text_field, format=args.format, units=args.units,
                        unit_size=args.unit_size, shard_docs=args.shard_docs, on_bad=args.on_bad,
                        batch_size=args.batch_size, device=args.device, threads=args.threads,
                        executor=args.executor,
                        workers=args.workers, ray_address=args.ray_address,
                        threshold=args.threshold, language=args.language)
    out = run_scan(config)
    if not args.quiet:
        from .report import terminal_report

        print(terminal_report(out))
    print(f"scan directory: {out} (detoxkit report {out} [--html FILE]; "
          f"detoxkit corpus filter {out} --max-toxicity T)", file=sys.stderr)
    return 0


def run_filter_command(args) -> int:
    from .filter import filter_scan

    result = filter_scan(args.scan_dir, args.max_toxicity, by=args.by, scorer=args.scorer,
                         out=args.out, fmt=args.format)
    for line in result["lines"]:
        print(line)
    return 0
