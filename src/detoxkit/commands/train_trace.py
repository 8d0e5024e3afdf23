"""`detoxkit train hmm|trace-classifier`: TRACE's HMM and its token-factorised attribute classifiers.

The HMM is distilled from the generator (samples cached, EM resumable); a
classifier is trained in seconds from the corpus's training pool, one per
attribute. Outputs go to the cache (`$DETOXKIT_HOME/methods/`), where TRACE looks
first; --out overrides.
"""

from __future__ import annotations

from pathlib import Path


def register(targets) -> None:
    from .train_methods import _model_arg

    p = targets.add_parser("hmm", help="TRACE's HMM distilled from the generator (sampling + EM)")
    _model_arg(p)
    p.add_argument("--hidden", type=int, default=128, help="hidden states H")
    p.add_argument("--sequences", type=int, default=8000, help="sampled training sequences")
    p.add_argument("--epochs", type=int, default=30, help="EM epochs (resumes from the last checkpoint)")
    p.add_argument("--batch", type=int, default=100, help="rows per sampling batch (one cached chunk)")
    p.add_argument("--max-new-tokens", type=int, default=20, help="tokens sampled per sequence")
    p.add_argument("--prefix-tokens", type=int, default=8,
                   help="max tokens of the corpus prefix each sample continues")
    p.add_argument("--min-count", type=int, default=3,
                   help="tokens seen fewer times share the rare emission column")
    p.add_argument("--max-tokens", type=int, default=8192, help="max token columns of the emissions")
    p.add_argument("--top-p", type=float, default=0.9, help="nucleus p of the distillation samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None,
                   help="where samples and EM checkpoints are cached (default: the cache dir)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--out", default=None)
    p.set_defaults(func=_hmm)

    from ..methods.trace import ATTRIBUTES

    p = targets.add_parser("trace-classifier",
                           help="TRACE's token-factorised attribute classifier (seconds, from the corpus)")
    _model_arg(p)
    p.add_argument("--attribute", default="nontoxic", choices=sorted(ATTRIBUTES),
                   help="attribute whose probability TRACE raises")
    p.add_argument("--rows", type=int, default=60000, help="class-balanced corpus rows")
    p.add_argument("--steps", type=int, default=300, help="full-batch optimiser steps")
    p.add_argument("--l1", type=float, default=1e-4, help="L1 strength on the token weights")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens per row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.set_defaults(func=_classifier)


def _tokenizer_lm(args):
    from .train_methods import _load

    return _load(args)


def _hmm(args) -> int:
    import torch

    from ..methods.hmm import train_hmm

    if args.threads:
        torch.set_num_threads(args.threads)
    lm = _tokenizer_lm(args)
    out = train_hmm(lm, Path(args.out) if args.out else None, hidden=args.hidden,
                    sequences=args.sequences, epochs=args.epochs, batch=args.batch,
                    max_new_tokens=args.max_new_tokens, prefix_tokens=args.prefix_tokens,
                    min_count=args.min_count, max_tokens=args.max_tokens, top_p=args.top_p,
                    seed=args.seed, workdir=Path(args.workdir) if args.workdir else None,
                    report=print)
    print(out)
    return 0


def _classifier(args) -> int:
    from ..methods.trace import train_classifier

    lm = _tokenizer_lm(args)
    out = train_classifier(lm.tokenizer, args.attribute, Path(args.out) if args.out else None,
                           rows=args.rows, steps=args.steps, l1=args.l1, max_tokens=args.max_tokens,
                           seed=args.seed, model_name=lm.name, report=print)
    print(out)
    return 0
