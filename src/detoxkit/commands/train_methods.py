"""`detoxkit train banlist|vocab-shift|cfl|experts|gedi`: the decoding methods' artefacts.

All recipes read only the corpus's training pool. Outputs go to the cache
(`$DETOXKIT_HOME/methods/...`), where the methods look first; --out overrides.
"""

from __future__ import annotations

from pathlib import Path


def _model_arg(p) -> None:
    p.add_argument("--model", default="smollm2-135m", help="generator (its tokenizer / weights)")
    p.add_argument("--device", default="cpu")


def register(targets) -> None:
    p = targets.add_parser("banlist", help="default word list for `wordban`, from the corpus")
    p.add_argument("--top", type=int, default=300, help="candidate words (before the filter)")
    p.add_argument("--filter-scorer", default="profanity-svm",
                   help="keep words this scorer rates offensive on their own ('none': keep all)")
    p.add_argument("--min-count", type=int, default=25, help="min toxic rows containing the word")
    p.add_argument("--min-ratio", type=float, default=0.9,
                   help="min class-balanced P(toxic | word)")
    p.add_argument("--max-rows", type=int, default=None, help="use only N corpus rows")
    p.add_argument("--out", default=None)
    p.set_defaults(func=_banlist)

    p = targets.add_parser("vocab-shift", help="learned per-token non-toxic bias (vocab shifting)")
    _model_arg(p)
    p.add_argument("--rows", type=int, default=60000, help="balanced corpus rows")
    p.add_argument("--c", type=float, default=0.5, help="inverse L2 strength of the regression")
    p.add_argument("--out", default=None)
    p.set_defaults(func=_vocab_shift)

    p = targets.add_parser("cfl", help="CFL token table: ATE of each token on a scorer")
    _model_arg(p)
    p.add_argument("--scorer", default="profanity-svm", help="scorer whose output is explained")
    p.add_argument("--sentences", type=int, default=4000, help="balanced corpus sentences")
    p.add_argument("--max-tokens", type=int, default=40, help="tokens per sentence")
    p.add_argument("--out", default=None)
    p.add_argument("--export-json", default=None,
                   help="also write the table as {token: effect} JSON (for reports)")
    p.set_defaults(func=_cfl)

    for kind, text in (("experts", "DExperts expert / anti-expert LoRA adapters"),
                       ("gedi", "GeDi class-conditional LM (one LoRA adapter per control code)")):
        p = targets.add_parser(kind, help=text)
        _model_arg(p)
        p.add_argument("--rows", type=int, default=4000, help="balanced corpus rows")
        p.add_argument("--steps", type=int, default=150)
        p.add_argument("--batch", type=int, default=16)
        p.add_argument("--max-len", type=int, default=48, help="tokens per row")
        p.add_argument("--layers", type=int, default=4, help="top layers carrying the adapters")
        p.add_argument("--rank", type=int, default=8)
        p.add_argument("--lr", type=float, default=1e-3)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", default=None)
        p.set_defaults(func=_adapters, kind=kind)


def _load(args):
    from ..models import load_lm

    return load_lm(args.model, device=args.device, dtype="float32")


def _banlist(args) -> int:
    from ..methods.training import train_banlist

    out = train_banlist(Path(args.out) if args.out else None, top=args.top,
                        min_count=args.min_count, min_ratio=args.min_ratio, max_rows=args.max_rows,
                        filter_scorer=None if args.filter_scorer == "none" else args.filter_scorer)
    print(out)
    return 0


def _vocab_shift(args) -> int:
    from ..methods.training import train_vocab_shift

    lm = _load(args)
    print(train_vocab_shift(lm.tokenizer, Path(args.out) if args.out else None, rows=args.rows,
                            c=args.c, model_name=lm.name))
    return 0


def _cfl(args) -> int:
    from ..methods.tables import export_effects
    from ..methods.training import train_cfl

    lm = _load(args)
    out = train_cfl(lm.tokenizer, Path(args.out) if args.out else None, scorer=args.scorer,
                    sentences=args.sentences, max_tokens=args.max_tokens, model_name=lm.name)
    print(out)
    if args.export_json:
        n = export_effects(lm.tokenizer, args.export_json, str(out))
        print(f"{n} token effects -> {args.export_json}")
    return 0


def _adapters(args) -> int:
    from ..methods.training import train_adapters

    lm = _load(args)
    out = train_adapters(lm, args.kind, Path(args.out) if args.out else None, rows=args.rows,
                         steps=args.steps, layers=args.layers, rank=args.rank, lr=args.lr,
                         batch=args.batch, max_len=args.max_len, seed=args.seed)
    print(out)
    return 0
