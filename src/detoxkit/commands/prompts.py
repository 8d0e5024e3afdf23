"""`detoxkit prompts build|show`: build an RTP-style prompt set; describe a prompt set."""

from __future__ import annotations

import shlex


def register(sub) -> None:
    parser = sub.add_parser("prompts", help="build or inspect prompt sets")
    action = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    build = action.add_parser(
        "build", help="build an RTP-style prompt set from a corpus (ours or your own file)",
        description="Split corpus texts into sentences, split each at its middle word into a "
                    "prompt and a held-back continuation, score them, and draw equal numbers "
                    "from four prompt-toxicity bins. Writes RTP-format JSONL plus "
                    "<name>.provenance.json next to it.")
    build.add_argument("--corpus", default="default",
                       help="'default' (detoxkit's corpus, prompt-pool rows only) or a "
                            ".csv/.tsv/.jsonl/.parquet file with a text column")
    build.add_argument("--out", required=True, help="output .jsonl path")
    build.add_argument("--n", type=int, default=1000, help="number of prompts (default 1000)")
    build.add_argument("--scorer", default=None,
                       help="registered scorer used to score prompts and continuations "
                            "(default: the default scorer)")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--text-field", default="text", help="text column of a corpus file")
    build.add_argument("--label-field", default=None,
                       help="optional label column of a corpus file, copied to each record")
    build.add_argument("--pool", choices=("all", "prompt"), default=None,
                       help="'prompt': only rows in detoxkit's prompt pool (default for our "
                            "corpus); 'all': every row (default for other files)")
    build.add_argument("--stratify-by", choices=("prompt", "sentence"), default="prompt",
                       help="bin by the prompt's score (default) or the whole sentence's (as "
                            "the RTP paper did)")
    build.add_argument("--min-words", type=int, default=None, help="shortest sentence (words)")
    build.add_argument("--max-words", type=int, default=None, help="longest sentence (words)")
    build.add_argument("--on-bad", choices=("error", "skip"), default="error",
                       help="a bad corpus row: stop with an error (default) or skip it")
    build.add_argument("--language", default=None,
                       help="the corpus's language (ISO code, e.g. de), written into every record")
    build.set_defaults(func=run_build)

    show = action.add_parser("show", help="counts, fingerprint and example ids of a prompt set")
    show.add_argument("spec", help="registered name (detoxkit ls prompts) or file path")
    show.add_argument("--limit", type=int, default=None, help="stratified seeded subset size")
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("--text-field", default=None, help="text column of a generic file")
    show.add_argument("--on-bad", choices=("error", "skip"), default="error",
                      help="a bad row: stop with an error (default) or skip and count it")
    show.set_defaults(func=run_show)


def run_build(args) -> int:
    from dataclasses import replace

    from ..prompts.build import Bounds, build_prompt_set, provenance_path
    from ..scorers import DEFAULT_SCORER

    bounds = Bounds()
    if args.min_words is not None:
        bounds = replace(bounds, min_words=args.min_words)
    if args.max_words is not None:
        bounds = replace(bounds, max_words=args.max_words)
    label_field = args.label_field
    argv = ["detoxkit", "prompts", "build", "--corpus", args.corpus, "--out", args.out,
            "--n", str(args.n), "--scorer", args.scorer or DEFAULT_SCORER, "--seed", str(args.seed),
            "--stratify-by", args.stratify_by]
    for flag, value in (("--text-field", None if args.text_field == "text" else args.text_field),
                        ("--label-field", label_field), ("--pool", args.pool),
                        ("--language", args.language),
                        ("--min-words", args.min_words), ("--max-words", args.max_words)):
        if value is not None:
            argv += [flag, str(value)]
    command = shlex.join(argv)  # recorded so the set can be rebuilt with the same settings
    prov = build_prompt_set(args.corpus, args.out, n_prompts=args.n, scorer=args.scorer,
                            seed=args.seed, text_field=args.text_field, label_field=label_field,
                            pool=args.pool, stratify_by=args.stratify_by, bounds=bounds,
                            on_bad=args.on_bad, command=command, language=args.language)
    counts = prov["counts"]
    print(f"wrote {counts['selected']} prompts to {args.out} "
          f"(provenance: {provenance_path(args.out)})")
    print(f"corpus: {prov['corpus']['name']} (pool: {prov['corpus']['pool']}, "
          f"{prov['corpus']['rows']} rows read, {prov['corpus']['candidates']} candidate sentences)")
    print(f"scorer: {prov['scorer']['name']} {prov['scorer']['version']}; "
          f"bins by {prov['stratify_by']} toxicity")
    for name, cand, sel in zip(prov["bins"], counts["candidates_per_bin"],
                               counts["selected_per_bin"]):
        print(f"  {name}  selected {sel:>6}  of {cand:>7} candidates")
    if counts["selected"] < args.n:
        print(f"note: only {counts['selected']} of the {args.n} requested prompts were available")
    return 0


def run_show(args) -> int:
    from ..prompts import load_prompts

    pset = load_prompts(args.spec, limit=args.limit, seed=args.seed, text_field=args.text_field,
                        on_bad=args.on_bad)
    c = pset.counts()
    print(f"name:        {pset.name}")
    print(f"source:      {pset.source}")
    print(f"format:      {pset.provenance.get('format', pset.provenance.get('kind', '?'))}")
    print(f"fingerprint: {pset.fingerprint}")
    print(f"prompts:     {c['total']} (toxic {c['toxic']}, non-toxic {c['nontoxic']}, "
          f"unknown toxicity {c['unknown']}; challenging {c['challenging']})")
    if args.limit is not None:
        print(f"limit:       {args.limit} of {pset.provenance.get('n_before_limit')} "
              f"(stratified by prompt toxicity, seed {args.seed})")
    print(f"skipped:     {c['skipped']}")
    for s in pset.skipped[:5]:
        where = ", ".join(x for x in (s["file"], f"line {s['line']}" if s["line"] else None,
                                      f"field '{s['field']}'" if s["field"] else None) if x)
        print(f"  {where}: {s['reason']}")
    if len(pset.skipped) > 5:
        print(f"  ... and {len(pset.skipped) - 5} more")
    print(f"example ids: {', '.join(p.id for p in pset.prompts[:5])}")
    return 0
