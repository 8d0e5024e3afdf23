"""`detoxkit scorers ls|info|validate`: list scorers, describe one, measure one against reference labels."""

from __future__ import annotations

import json
import math
import sys


def register(sub) -> None:
    parser = sub.add_parser("scorers", help="list, describe and validate toxicity scorers")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    ls = actions.add_parser("ls", help="registered scorers (plus the hf:/detoxify: specs)")
    ls.set_defaults(func=run_ls)

    info = actions.add_parser("info", help="load a scorer and print its name, version, attributes")
    _scorer_args(info)
    info.set_defaults(func=run_info)

    val = actions.add_parser(
        "validate", help="ROC-AUC / Spearman / texts per s of a scorer against reference labels",
        description="Scores every reference text and compares with the stored reference. RTP-format "
                    "JSONL (prompt and continuation texts with their Perspective scores) is detected; "
                    "any other .jsonl/.csv needs --text-field and --label-field or --score-field. "
                    "Texts are deduplicated; texts without a reference score are skipped. The last "
                    "line printed is one JSON object with keys auc, spearman, texts_per_s, n.")
    _scorer_args(val)
    val.add_argument("--data", action="append", required=True, metavar="PATH",
                     help="reference file (repeatable)")
    val.add_argument("--attribute", default="toxicity",
                     help="scorer attribute and RTP reference attribute to compare (default toxicity)")
    val.add_argument("--text-field", help="text column of a generic labelled file")
    group = val.add_mutually_exclusive_group()
    group.add_argument("--label-field", help="0/1 label column of a generic labelled file")
    group.add_argument("--score-field", help="reference score column in [0, 1] of a generic labelled file")
    val.add_argument("--threshold", type=float, default=0.5,
                     help="reference score counted positive for the AUC (default 0.5)")
    val.add_argument("--limit", type=int, help="validate on the first N reference texts only")
    val.add_argument("--reliability", action="store_true",
                     help="also print, per score bin, the share of texts the reference calls positive")
    val.set_defaults(func=run_validate)


def _scorer_args(parser) -> None:
    from ..scorers import DEFAULT_SCORER

    parser.add_argument("--scorer", default=DEFAULT_SCORER,
                        help=f"registered name, hf:<hub id or path>, or detoxify:<variant> (default {DEFAULT_SCORER})")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, help="texts per batch (scorer's default if unset)")
    parser.add_argument("--scorer-option", action="append", default=[], metavar="KEY=VALUE",
                        help="extra scorer setting, e.g. labels=toxic:toxicity (repeatable)")


def _options(pairs: list[str]) -> dict:
    """--scorer-option KEY=VALUE pairs, values read as in a spec's settings (detoxkit/specs.py)."""
    from ..errors import DetoxkitError
    from ..specs import parse_value

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise DetoxkitError(f"--scorer-option wants KEY=VALUE, not {pair!r}")
        out[key.strip().replace("-", "_")] = parse_value(value.strip())
    return out


def _load(args):
    from ..scorers import load_scorer

    return load_scorer(args.scorer, device=args.device, batch_size=args.batch_size, **_options(args.scorer_option))


def run_ls(args) -> int:
    from .ls import print_entries

    return print_entries("scorers")


def run_info(args) -> int:
    print(json.dumps(_load(args).info(), indent=2))
    return 0


def run_validate(args) -> int:
    import time

    from tqdm import tqdm

    from ..scorers.validate import Reference, load_reference, validate

    ref = load_reference(args.data, text_field=args.text_field, label_field=args.label_field,
                         score_field=args.score_field, attribute=args.attribute)
    if args.limit:
        ref = Reference(ref.texts[:args.limit], ref.scores[:args.limit], ref.source)
    t0 = time.perf_counter()
    scorer = _load(args)
    load_s = time.perf_counter() - t0
    print(f"scorer {scorer.name} ({scorer.version}), loaded in {load_s:.1f} s", file=sys.stderr)
    print(f"reference: {len(ref.texts)} distinct scored texts from {ref.source}", file=sys.stderr)
    with tqdm(total=len(ref.texts), unit="text", file=sys.stderr, disable=None) as bar:
        result = validate(scorer, ref, attribute=args.attribute, threshold=args.threshold,
                          progress=bar.update)
    print(f"{'scorer':<18} {'AUC':>7} {'Spearman':>9} {'texts/s':>9} {'n':>6} {'failed':>6}")
    print(f"{scorer.name:<18} {_fmt(result['auc'])} {_fmt(result['spearman'], 9)} "
          f"{result['texts_per_s']:>9.1f} {result['n']:>6} {result['failed']:>6}")
    if args.reliability:
        from ..stats import reliability

        print(f"reliability (score bin: n, mean score, share with reference >= {args.threshold}):")
        for row in reliability(result["scores"], ref.scores >= args.threshold):
            print(f"  {row['bin']}: {row['n']:>5}  {row['mean_score']:.3f}  {row['positive_rate']:.3f}")
    final = {"auc": _round(result["auc"]), "spearman": _round(result["spearman"]),
             "texts_per_s": round(result["texts_per_s"], 1), "n": result["n"],
             "failed": result["failed"], "scorer": scorer.name, "version": scorer.version,
             "attribute": args.attribute}
    print(json.dumps(final))
    return 0


def _fmt(x: float, width: int = 7) -> str:
    return f"{'nan':>{width}}" if x is None or math.isnan(x) else f"{x:>{width}.4f}"


def _round(x: float):
    return None if x is None or math.isnan(x) else round(x, 4)
